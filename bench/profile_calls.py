"""Where a /api chat call spends its time, cache miss and cache hit, against the nginx stub of
bench/peers.py (so the upstream costs next to nothing).

    .venv/bin/python bench/profile_calls.py              # cProfile, in-process (test client)
    .venv/bin/python bench/profile_calls.py --served     # py-spy on each gunicorn worker
                                                         # under wrk at 20 connections

In-process: the app built by create_app() (SQLite in a temporary directory) is called
--calls times with the Flask test client under cProfile; prints the --top functions by
cumulative time, then by own time. Served: the gateway as `make run` serves it, wrk at 20
connections for --seconds while `py-spy record --format raw` samples every worker (needs
`pip install py-spy` in .venv); prints the functions found in the most samples (inclusive:
a function counts once per sample it is anywhere on the stack), then by own samples. py-spy
samples threads that are not idle: a thread waiting for the GIL or for SQLite's lock counts.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402

MESSAGES = peers.CHAT_BODY["messages"]


def in_process(kind: str, calls: int, top: int, stub_base: str, workdir: Path) -> None:
    from proxy import create_app

    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{workdir / f'profile-{kind}.sqlite3'}",
            "OPENAI_BASE_URL": stub_base,
            "OPENAI_API_KEY": "sk-bench",
        }
    )
    runner = app.test_cli_runner()
    account = json.loads(runner.invoke(args=["accounts", "create", "p", "--json"]).output)
    client = app.test_client()
    query = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps({"messages": MESSAGES}, separators=(",", ":")),
        "cache": "yes" if kind == "hit" else "no",
    }

    def call() -> None:
        envelope = client.get("/api", query_string=query).get_json()
        assert envelope["error_code"] == "0000", envelope
        assert envelope["cache"] == (1 if kind == "hit" else 0), envelope["cache"]

    for _ in range(20):  # warm-up: SDK client, connection pool, the cached answer
        client.get("/api", query_string=query)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        call()
    profile.disable()
    stats = pstats.Stats(profile)
    per_call = stats.total_tt / calls
    print(f"\n== in-process /api cache {kind}: {calls} calls, {per_call * 1000:.2f} ms each")
    rows = [
        (cumulative, own, ncalls, short_path(filename), line, name)
        for (filename, line, name), (_, ncalls, own, cumulative, _) in stats.stats.items()
    ]
    # The request's call chain down to run_call (test client, WSGI middleware, Flask, the
    # view) holds each call's whole time: left out, so that the list shows where it splits.
    run_call = max(row[0] for row in rows if row[3] == "proxy/calls.py" and row[5] == "run_call")
    below_chain = [row for row in rows if row[0] <= run_call]
    ours = [row for row in below_chain if row[3].startswith("proxy/")]
    for title, chosen, key in (
        ("by cumulative time, below the request's call chain", below_chain, 0),
        ("of the gateway's own functions (proxy/) by cumulative time", ours, 0),
        ("by own time", rows, 1),
    ):
        print(f"-- top {top} {title} (ms per call, calls per call)")
        for cumulative, own, ncalls, where, line, name in sorted(chosen, key=lambda r: -r[key])[
            :top
        ]:
            print(
                f"  {cumulative / calls * 1000:7.3f} cum {own / calls * 1000:7.3f} own "
                f"{ncalls / calls:6.1f}x  {where}:{line}({name})"
            )


def short_path(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(peers.REPO) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def served(kind: str, seconds: float, top: int, stub_base: str, workdir: Path, services) -> None:
    py_spy = peers.VENV_BIN / "py-spy"
    if not py_spy.exists():
        raise SystemExit(f"{py_spy} is missing: .venv/bin/pip install py-spy")
    settings = peers.settings_from([])
    gateway, base, account = peers.start_gateway(stub_base, settings, workdir)
    services.append(gateway)
    target = peers.gateway_targets(base, account)[kind]
    meter = peers.CpuMeter(services)
    peers.wrk(target, 20, 2, workdir, meter)  # warm-up (and the cached answer)
    outputs = []
    recorders = []
    for pid in gateway.worker_pids():
        out = workdir / f"py-spy-{kind}-{pid}.txt"
        outputs.append(out)
        argv = [str(py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds))]
        argv += ["--rate", "200", "--format", "raw", "--nonblocking", "--output", str(out)]
        recorders.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    run: list = []
    load = threading.Thread(
        target=lambda: run.append(peers.wrk(target, 20, seconds + 2, workdir, meter))
    )
    load.start()
    for recorder in recorders:
        _, err = recorder.communicate(timeout=seconds + 60)
        if recorder.returncode != 0:
            raise SystemExit(f"py-spy failed: {err.decode(errors='replace')}")
    load.join()
    gateway.stop()
    inclusive, own, samples = Counter(), Counter(), 0
    for out in outputs:
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [frame_name(f) for f in stack.split(";") if f]
            samples += int(count)
            for frame in set(frames):
                inclusive[frame] += int(count)
            if frames:
                own[frames[-1]] += int(count)
    print(
        f"\n== served /api cache {kind}: {run[0].req_per_s:,.0f} req/s at c=20 "
        f"({run[0].failed} failed), {samples} samples of busy threads over the workers"
    )
    # As in-process: the chain down to run_call (threads, gunicorn, WSGI, Flask, the view) is
    # left out of the inclusive lists, so that they show where a call's time splits.
    run_call = inclusive["run_call (proxy/calls.py)"]
    below_chain = Counter({f: n for f, n in inclusive.items() if n <= run_call})
    ours = Counter({f: n for f, n in below_chain.items() if "(proxy/" in f})
    for title, counter in (
        ("in the most samples (inclusive), below the request's call chain", below_chain),
        ("of the gateway's own functions (proxy/), inclusive", ours),
        ("by own samples", own),
    ):
        print(f"-- top {top} {title}")
        for frame, count in counter.most_common(top):
            print(f"  {count / samples:6.1%}  {frame}")


def frame_name(frame: str) -> str:
    """py-spy's `function (path/file.py:line)` without the line (one entry per function)."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({short_path(path)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--served", action="store_true", help="py-spy on gunicorn workers")
    parser.add_argument("--kind", choices=("miss", "hit", "both"), default="both")
    parser.add_argument("--calls", type=int, default=2000, help="in-process calls per kind")
    parser.add_argument("--seconds", type=float, default=20, help="served: sampling time")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--raw-dir", help="served: keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="profile-calls-"))
    services: list = []
    try:
        stub, stub_base = peers.start_stub(workdir)
        services.append(stub)
        for kind in ("miss", "hit") if args.kind == "both" else (args.kind,):
            if args.served:
                served(kind, args.seconds, args.top, stub_base, workdir, services)
                if args.raw_dir:  # flame graphs: flamegraph.pl, speedscope, inferno
                    Path(args.raw_dir).mkdir(parents=True, exist_ok=True)
                    for raw in workdir.glob(f"py-spy-{kind}-*.txt"):
                        shutil.copy(raw, args.raw_dir)
            else:
                in_process(kind, args.calls, args.top, stub_base, workdir)
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
