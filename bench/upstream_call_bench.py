"""What one upstream call costs the gateway, by the way it is made through the openai SDK:
paired rounds in one run (each round runs every way in turn), medians and ratios.

- resource method: `client.chat.completions.with_raw_response.create(...)`, as the gateway
  called every method before (the SDK builds and checks typed arguments);
- gateway now: `proxy.handlers.openai.create_chat_completion`, the SDK's `client.post(path,
  body=..., cast_to=httpx2.Response)` (same retries, timeouts, headers and errors);
- parsed model: `client.chat.completions.create(...).model_dump()` (pydantic both ways);
- bare httpx2: the SDK's own HTTP client without the SDK (the floor; no retries).

Then connection reuse: the gateway's calls against the stub app served with keep-alive (the
bundled stub's development server closes every connection), counting the TCP connections.

Run: `.venv/bin/python bench/upstream_call_bench.py [--profile]`. It asserts nothing.
"""

from __future__ import annotations

import cProfile
import json
import logging
import pstats
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import openai  # noqa: E402

from proxy.handlers import openai as handlers  # noqa: E402
from stub_upstream import StubServer  # noqa: E402

ARGS = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there 你好"}]}
ROUNDS, PER_ROUND = 15, 100


def resource_method(client):
    return handlers._call(client.chat.completions.with_raw_response.create, dict(ARGS))


def gateway_now(client):
    return handlers.create_chat_completion(client, dict(ARGS))


def parsed_model(client):
    return client.chat.completions.create(**ARGS).model_dump()


def bare_httpx2(client):
    url = f"{client.base_url}chat/completions"
    headers = {"Authorization": f"Bearer {client.api_key}"}
    return json.loads(client._client.post(url, json=ARGS, headers=headers).content)


WAYS = {
    "resource method (with_raw_response)": resource_method,
    "gateway now (client.post -> httpx2.Response)": gateway_now,
    "parsed model + model_dump": parsed_model,
    "bare httpx2 (no SDK)": bare_httpx2,
}
BASELINE = "resource method (with_raw_response)"


def paired(client) -> None:
    for way in WAYS.values():
        assert way(client)["object"] == "chat.completion"
    micros: dict[str, list[float]] = {name: [] for name in WAYS}
    for _ in range(ROUNDS):
        for name, way in WAYS.items():
            started = time.perf_counter()
            for _ in range(PER_ROUND):
                way(client)
            micros[name].append((time.perf_counter() - started) / PER_ROUND * 1e6)
    print(f"{ROUNDS} rounds x {PER_ROUND} chat calls per way, against the bundled stub")
    for name, samples in micros.items():
        ratio = statistics.median(s / b for s, b in zip(samples, micros[BASELINE], strict=True))
        print(
            f"  {name:<46} median {statistics.median(samples):6.0f} us/call"
            f"   ratio to the resource method {ratio:.3f}"
        )


def profile(client) -> None:
    for name in (BASELINE, "gateway now (client.post -> httpx2.Response)"):
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(500):
            WAYS[name](client)
        profiler.disable()
        print(f"== {name}: 500 calls, by own time")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def connections_to(port: int) -> dict[str, str]:
    """local address -> TCP state of the connections to `port` on loopback."""
    out = subprocess.run(
        ["ss", "-tan", f"( dport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[3]: line.split()[0] for line in out.splitlines()[1:]}


def connection_reuse(calls: int = 300) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "--worker-class=gthread",
            "--threads=4",
            "--keep-alive=30",
            f"--bind=127.0.0.1:{port}",
            "stub_upstream:create_stub_app()",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:  # not listening yet
                time.sleep(0.1)
        before = connections_to(port)  # the probes'
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-bench")
        for _ in range(calls):
            gateway_now(client)
        opened = {a: state for a, state in connections_to(port).items() if a not in before}
        print(
            f"connection reuse: {calls} gateway calls against a keep-alive server opened "
            f"{len(opened)} TCP connection(s) ({', '.join(opened.values())})"
        )
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    logging.getLogger("proxy").setLevel(logging.WARNING)
    with StubServer() as stub:
        client = openai.OpenAI(base_url=stub.base_url, api_key="sk-bench", max_retries=0)
        paired(client)
        if "--profile" in sys.argv:
            profile(client)
    connection_reuse()


if __name__ == "__main__":
    main()
