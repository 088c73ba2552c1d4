"""The two reference apps of bench/peers.py, served by gunicorn with the gateway's settings.

- `bare_app`: a Flask endpoint answering a small JSON: what Flask under gunicorn can do at
  all on this machine (the framework's ceiling).
- `passthrough_app`: the least a Flask app can do to forward a chat completion through the
  official openai SDK (`with_raw_response`, the upstream's bytes returned as they came): the
  floor of any SDK-based gateway, before accounts, metering, caching or the envelope.

    gunicorn --pythonpath bench peer_apps:bare_app
    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 gunicorn --pythonpath bench peer_apps:passthrough_app
"""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify, request
from openai import OpenAI

bare_app = Flask("bare")


@bare_app.get("/")
def bare_answer():
    return jsonify(ok=True, answer="pong")


passthrough_app = Flask("passthrough")
# One client per worker process, as the gateway keeps one per upstream; same timeout and
# retries as the gateway's defaults.
_client = OpenAI(
    base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8001/v1"),
    api_key=os.environ.get("OPENAI_API_KEY", "sk-bench"),
    timeout=30.0,
    max_retries=1,
)


@passthrough_app.post("/v1/chat/completions")
def passthrough_chat():
    raw = _client.chat.completions.with_raw_response.create(**request.get_json())
    return Response(raw.content, status=raw.status_code, mimetype="application/json")
