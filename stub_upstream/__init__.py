"""A bundled, deterministic, OpenAI-compatible upstream server (the "stub").

The gateway runs and demos offline against it, and its tests and benchmarks talk to a real
HTTP server instead of mocks: the official ``openai`` SDK pointed at
``http://127.0.0.1:PORT/v1`` works unchanged. Every answer is a pure function of the request
(stub_upstream.generators); the state (options, request log, files) sits behind
stub_upstream.state.stub_state(); fault modes are chosen by the ``model`` name
(stub_upstream.faults). It imports nothing of ``proxy``. The contract: docs/stub-upstream.md.

Run it: ``python -m stub_upstream --host 127.0.0.1 --port 8001``.
"""

from stub_upstream.app import MAX_CONTENT_LENGTH, create_stub_app
from stub_upstream.faults import FAULT_MODELS
from stub_upstream.generators import CREATED
from stub_upstream.resources.models import MODEL_IDS
from stub_upstream.serving import StubServer, main
from stub_upstream.state import RequestLog

__all__ = [
    "CREATED",
    "FAULT_MODELS",
    "MAX_CONTENT_LENGTH",
    "MODEL_IDS",
    "RequestLog",
    "StubServer",
    "create_stub_app",
    "main",
]
