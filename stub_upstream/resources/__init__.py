"""One blueprint per OpenAI resource, plus the stub's own ``/_stub`` control routes."""
