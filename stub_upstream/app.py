"""The stub's app factory: it only wires state, hooks and blueprints."""

from __future__ import annotations

import flask

from stub_upstream import faults, recording, replies
from stub_upstream.resources import (
    audio,
    chat,
    completions,
    control,
    embeddings,
    feishu,
    files,
    images,
    models,
    moderations,
    responses,
)
from stub_upstream.resources.models import MODEL_IDS
from stub_upstream.state import FileStore, RequestLog, StubOptions, StubState

MAX_CONTENT_LENGTH = 16 * 1024 * 1024
DEFAULT_OWNED_BY = "stub"

#: Every blueprint the stub serves, registered in this order.
RESOURCES = (
    models,
    chat,
    completions,
    responses,
    embeddings,
    moderations,
    images,
    audio,
    files,
    feishu,
    control,
)


def _model_ids(models: tuple[str, ...] | None) -> tuple[str, ...]:
    if models is None:
        return MODEL_IDS
    if isinstance(models, str):
        raise TypeError("models must be a tuple of model ids, not a string")
    if not all(isinstance(m, str) and m for m in models):
        raise ValueError("models must be non-empty strings")
    return tuple(models)


def create_stub_app(
    *,
    slow_seconds: float = 2.0,
    hang_seconds: float = 300.0,
    stream_delay: float = 0.02,
    stream_slow_delay: float = 0.5,
    retry_after_ms: int | None = None,
    log_limit: int = 1000,
    models: tuple[str, ...] | None = None,
    owned_by: str = DEFAULT_OWNED_BY,
    files_limit: int = 1000,
) -> flask.Flask:
    """Build the stub Flask app.

    slow_seconds: how long ``stub-slow`` sleeps before answering normally.
    hang_seconds: how long ``stub-hang`` sleeps (effectively never, for a client timeout).
    stream_delay: sleep between consecutive SSE events of a normal stream.
    stream_slow_delay: the same for ``stub-stream-slow``.
    retry_after_ms: if set, the 429 and 500 faults also send ``retry-after-ms: N``, which the
        openai SDK obeys instead of its own backoff. A test-speed knob.
    log_limit: how many requests the request log keeps (the oldest are dropped).
    models: the ids ``GET /v1/models`` lists instead of MODEL_IDS, e.g.
        ``("qwen-plus", "qwen-turbo")`` for a second stub playing another upstream.
    owned_by: the ``owned_by`` of the model objects.
    files_limit: how many uploaded files ``/v1/files`` keeps (the oldest are dropped).
    """
    options = StubOptions(
        slow_seconds=slow_seconds,
        hang_seconds=hang_seconds,
        stream_delay=stream_delay,
        stream_slow_delay=stream_slow_delay,
        retry_after_ms=retry_after_ms,
        models=_model_ids(models),
        owned_by=owned_by,
    )
    app = flask.Flask("stub_upstream", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    StubState(options, RequestLog(log_limit), FileStore(files_limit)).init_app(app)
    replies.init_app(app)
    recording.init_app(app)
    faults.init_app(app)  # after recording: a faulted request is logged and authenticated
    for resource in RESOURCES:
        app.register_blueprint(resource.bp)
    return app
