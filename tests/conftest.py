"""Fixtures: the app built through its factory, talking over real HTTP to the bundled stub."""

from __future__ import annotations

import functools
import json
import threading
import time

import pytest
from cryptography.fernet import Fernet

from proxy import create_app
from stub_upstream import StubServer

# Seconds: the `stub-hang` model outlasts it, `stub-slow` does not, and neither does a normal
# answer on a loaded CI machine (1 s was seen to time out a plain chat call there).
UPSTREAM_TIMEOUT = 5.0
# The tests' own sealing key, so that no test writes instance/sealing.key in the work tree.
SEALING_KEY = Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def stub():
    server = StubServer(slow_seconds=0.3, hang_seconds=8.0).start()
    yield server
    server.stop()


@pytest.fixture
def make_app(tmp_path, stub):
    """Build an app through the factory with config overrides; each gets its own database."""
    stub.reset()
    built = []

    def _make_app(**overrides):
        app = create_app(
            {
                "TESTING": True,
                "DATABASE_URL": f"sqlite:///{tmp_path / f'gateway{len(built)}.sqlite3'}",
                # The answer store of each app in the test's own folder, whatever its database
                # (the default puts a PostgreSQL database's in the instance folder).
                "CACHE_DIR": str(tmp_path / f"answers{len(built)}"),
                "OPENAI_BASE_URL": stub.base_url,
                "OPENAI_API_KEY": "sk-upstream-secret",
                "FEISHU_BASE_URL": stub.url,  # the stub's Feishu, with its app (stub_upstream)
                "FEISHU_APP_ID": "cli_stub_app",
                "FEISHU_APP_SECRET": "stub-app-secret",
                "UPSTREAM_TIMEOUT_SECONDS": UPSTREAM_TIMEOUT,
                "UPSTREAM_MAX_RETRIES": 0,
                "ACCOUNT_SEALING_KEY": SEALING_KEY,
                **overrides,
            }
        )
        built.append(app)
        return app

    yield _make_app
    for app in built:
        app.extensions["gateway"].engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def make_app_each_database(request, make_app):
    """make_app on SQLite, then on a real PostgreSQL server (a new database each time)."""
    if request.param == "sqlite":
        return make_app
    database_url = request.getfixturevalue("postgres_server").new_database()
    return functools.partial(make_app, DATABASE_URL=database_url)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def create_account(runner, name="acme", *extra) -> dict:
    result = runner.invoke(args=["accounts", "create", name, "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture
def account(runner):
    return create_account(runner)


@pytest.fixture
def call(client, account):
    """GET /api with the account's credentials; returns the decoded json envelope."""

    def _call(method="v1/chat/completions", o_args=None, **params):
        query = {"key": account["key"], "secret": account["secret"], "method": method, **params}
        if o_args is not None:
            query["_o_args"] = o_args if isinstance(o_args, str) else json.dumps(o_args)
        response = client.get("/api", query_string=query)
        assert response.status_code == 200
        return response.get_json()

    return _call


# A 1x1 PNG, base64: small enough to travel in a GET query string.
TINY_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAA"
    "AABJRU5ErkJggg=="
)

CHAT_ARGS = {"messages": [{"role": "user", "content": "你好 world"}]}
# A function tool (OpenAI's shape); the stub calls it when tool_choice obliges a call.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL cluster on loopback for the whole run (see tests/servers.py)."""
    from tests.servers import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A private redis-server on loopback for the whole run (see tests/servers.py)."""
    from tests.servers import RedisServer

    server = RedisServer().start()
    yield server
    server.close()


def concurrent_misses(caches, slow_seconds: float = 0.2):
    """Every cache in `caches` misses the same key at once; (compute calls, results)."""
    calls, results = [], []
    barrier = threading.Barrier(len(caches))

    def compute():
        calls.append(1)
        time.sleep(slow_seconds)
        return {"answer": len(calls)}, True

    def worker(cache):
        barrier.wait(timeout=10)
        results.append(cache.get_or_compute("same", compute))

    threads = [threading.Thread(target=worker, args=(c,)) for c in caches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(calls), results
