"""The gateway beside its peers, in one run: wrk -> each system -> an nginx stub upstream that
answers a chat completion at once.

    make bench-peers                       # or: .venv/bin/python bench/peers.py
    PEERS=litellm make bench-peers         # also the LiteLLM proxy, from its own venv
    BENCH_SECONDS=5 BENCH_CALLS=5000 make bench-peers     # a quick run

Systems, one after the other on the same machine and the same stub:
- direct to the stub (nginx, `return 200`): what the client and loopback cost;
- bare Flask (bench/peer_apps.py) under gunicorn with the gateway's worker and thread counts:
  the framework's ceiling;
- a minimal Flask + openai SDK pass-through (`with_raw_response`), same gunicorn settings;
- the LiteLLM proxy with as many workers, when PEERS names litellm;
- the gateway as `make run` serves it (gunicorn with config/gunicorn.conf.py, SQLite): `/api`
  as a legacy GET client calls it with cache=no, the same URL with cache=yes once warm (every
  answer checked to be a hit), and `/v1/chat/completions` as the OpenAI SDK calls it.

Each system gets a warm-up, then wrk at 20 connections (req/s) and at 1 connection (p50).
Every gateway answer is checked (HTTP 200 and X-Error-Code 0000; a hit also "cache":1), every
other one for a status below 400; a row with failed answers says so. Then BENCH_CALLS /api
cache=no calls at 20 connections, with each gunicorn worker's resident memory (VmRSS) read
before and at checkpoints. Prints the table, the ratios the targets of the hot-path work
need, and whether each is met. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
VENV_BIN = Path(sys.executable).parent
LITELLM_VENV = REPO / ".bench-venv-litellm"

CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
# The targets of the hot-path issue, each a ratio or difference of figures from one run.
TIMES_LITELLM = 6.0
SHARE_OF_MINIMAL = 0.8
SHARE_OF_BARE_FLASK = 0.5
P50_ABOVE_MINIMAL_MS = 2.0
RSS_MIB = 80.0
# "Flat": a worker grows by no more than this from after the warm-up to the last call.
RSS_GROWTH_MIB = 5.0


@dataclass
class Target:
    """One endpoint as wrk calls it, and how each answer is judged."""

    url: str
    method: str = "GET"
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # "status": below HTTP 400 (wrk's own count); "gateway": 200 with X-Error-Code 0000;
    # "gateway-hit": that and "cache":1 in the envelope.
    check: str = "status"


@dataclass
class Run:
    """What one wrk run measured."""

    connections: int
    requests: int
    seconds: float
    req_per_s: float
    p50_ms: float
    p99_ms: float
    failed: int  # socket errors, HTTP >= 400, timeouts, and answers the check refused


@dataclass
class Row:
    system: str
    c20: Run | None = None
    c1: Run | None = None


class Service:
    """A server the bench started: its own process group, stopped (the whole group) at the end."""

    def __init__(self, name: str, argv: list[str], *, env: dict, cwd: Path, log: Path):
        self.name, self.argv, self.env, self.cwd, self.log = name, argv, env, cwd, log
        self.process: subprocess.Popen | None = None

    def start(self, ready_url: str, timeout: float = 180.0) -> Service:
        with open(self.log, "ab") as log_file:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the bench, which stops this in order
            )
        deadline = time.monotonic() + timeout
        while not answers(ready_url):
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited at start; its log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)
        return self

    def worker_pids(self) -> list[int]:
        pid = self.process.pid
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        group = self.process.pid  # its own session: the group id is its pid
        try:
            os.killpg(group, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        try:  # workers that outlived their master
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass


def answers(url: str) -> bool:
    """True once something answers HTTP at `url` (any status: the server is up)."""
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- wrk ----------------------------------------------------------------------------------------

RESULT_MARK = "PEERS-RESULT"

LUA_TEMPLATE = """
wrk.method = {method}
{body}
{headers}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
failed = 0
{response}
function done(summary, latency, requests)
  local refused = 0
  for _, thread in ipairs(threads) do refused = refused + (thread:get("failed") or 0) end
  local e = summary.errors
  io.write(string.format("{mark} %d %d %d %.1f %.1f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout + refused,
    latency:percentile(50), latency:percentile(99)))
end
"""

LUA_CHECK = """
function response(status, headers, body)
  local code = headers["X-Error-Code"] or headers["x-error-code"]
  if status < 400 and ({refused}) then failed = failed + 1 end
end
"""

# When an answer below HTTP 400 counts as failed, per Target.check (wrk counts those >= 400).
REFUSED = {
    "gateway": 'status ~= 200 or code ~= "0000"',
    "gateway-hit": 'status ~= 200 or code ~= "0000" or not body:find(\'"cache":1\', 1, true)',
}


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk_script(target: Target) -> str:
    """The Lua script of one run. Without a check it defines no `response`, so wrk parses no
    answer (the fastest client for the fastest systems)."""
    checked = target.check != "status"
    return LUA_TEMPLATE.format(
        method=lua_string(target.method),
        body=f"wrk.body = {lua_string(target.body)}" if target.body is not None else "",
        headers="\n".join(
            f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}" for k, v in target.headers.items()
        ),
        response=LUA_CHECK.format(refused=REFUSED[target.check]) if checked else "",
        mark=RESULT_MARK,
    )


def wrk(target: Target, connections: int, seconds: float, workdir: Path) -> Run:
    """One wrk run of `seconds` (wrk runs for a time; its scripts cannot end it sooner)."""
    threads = min(2, connections)
    script = workdir / "wrk.lua"
    script.write_text(wrk_script(target))
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    done = subprocess.run(
        [*argv, "--timeout", "10s", "--latency", "-s", str(script), target.url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            requests, micros, failed, p50, p99 = line.split()[1:]
            elapsed = int(micros) / 1e6
            return Run(
                connections=connections,
                requests=int(requests),
                seconds=round(elapsed, 2),
                req_per_s=round(int(requests) / elapsed, 1),
                p50_ms=round(float(p50) / 1000, 2),
                p99_ms=round(float(p99) / 1000, 2),
                failed=int(failed),
            )
    raise SystemExit(f"wrk gave no result:\n{done.stdout}\n{done.stderr}")


def measure(name: str, target: Target, settings, workdir: Path) -> Row:
    """Warm up at 20 connections, then 20 connections for req/s and 1 for the p50."""
    print(f"  {name}: warm-up, c=20, c=1 ...", end="", flush=True)
    wrk(target, 20, settings.warmup, workdir)
    row = Row(name, c20=wrk(target, 20, settings.seconds, workdir))
    row.c1 = wrk(target, 1, settings.seconds, workdir)
    failed = row.c20.failed + row.c1.failed
    print(
        f" {row.c20.req_per_s:,.0f} req/s, p50 {row.c1.p50_ms:.2f} ms"
        + (f"  ({failed} FAILED answers)" if failed else ""),
        flush=True,
    )
    return row


# -- the systems --------------------------------------------------------------------------------


def start_stub(workdir: Path) -> tuple[Service, str]:
    prefix = workdir / "nginx"
    prefix.mkdir()
    prefix.chmod(0o755)  # nginx's workers run as nobody when the bench runs as root
    port = free_port()
    conf = (BENCH / "nginx-stub.conf").read_text()
    (prefix / "nginx.conf").write_text(
        conf.replace("@PREFIX@", str(prefix)).replace("@PORT@", str(port))
    )
    argv = [
        "nginx",
        "-p",
        str(prefix),
        "-c",
        str(prefix / "nginx.conf"),
        "-e",
        str(prefix / "error.log"),
    ]
    stub = Service("nginx stub", argv, env=dict(os.environ), cwd=prefix, log=workdir / "nginx.log")
    base = f"http://127.0.0.1:{port}/v1"
    return stub.start(base + "/models"), base


def gunicorn_argv(app: str, port: int, settings) -> list[str]:
    """The reference apps under the gateway's gunicorn settings (workers, gthread, threads)."""
    return [
        str(VENV_BIN / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(settings.workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(settings.threads),
        "--keep-alive",
        "5",
        "--pythonpath",
        str(BENCH),
        f"peer_apps:{app}",
    ]


def run_reference(name, app, path, target_args, stub_base, settings, workdir) -> Row:
    port = free_port()
    env = {**os.environ, "OPENAI_BASE_URL": stub_base, "OPENAI_API_KEY": "sk-bench"}
    service = Service(
        name, gunicorn_argv(app, port, settings), env=env, cwd=REPO, log=workdir / f"{app}.log"
    )
    try:
        service.start(f"http://127.0.0.1:{port}/")
        return measure(
            name, Target(f"http://127.0.0.1:{port}{path}", **target_args), settings, workdir
        )
    finally:
        service.stop()


def run_litellm(stub_base: str, settings, workdir: Path) -> Row:
    litellm = LITELLM_VENV / "bin" / "litellm"
    if not litellm.exists():
        raise SystemExit(
            f"{litellm} is missing: run `PEERS=litellm make bench-peers`, which installs it"
        )
    home = workdir / "litellm"
    home.mkdir()
    master_key = "sk-bench-master"
    (home / "config.yaml").write_text(
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: {stub_base}\n"
        "      api_key: sk-bench\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n"
    )
    port = free_port()
    # Its own environment, none of ours: offline (the model cost map it ships, no .env files).
    env = {
        "PATH": f"{LITELLM_VENV / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MODE": "PRODUCTION",
        "LITELLM_LOG": "ERROR",
    }
    argv = [str(litellm), "--config", str(home / "config.yaml"), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--num_workers", str(settings.workers)]
    service = Service("LiteLLM", argv, env=env, cwd=home, log=workdir / "litellm.log")
    try:
        service.start(f"http://127.0.0.1:{port}/health/liveliness")
        target = Target(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            method="POST",
            body=json.dumps(CHAT_BODY),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {master_key}"},
        )
        return measure(
            f"LiteLLM proxy {litellm_version()} ({settings.workers} workers)",
            target,
            settings,
            workdir,
        )
    finally:
        service.stop()


def litellm_version() -> str:
    python = LITELLM_VENV / "bin" / "python"
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    return done.stdout.strip() or "?"


def gateway_service(stub_base: str, settings, workdir: Path) -> tuple[Service, str, dict]:
    """The gateway as `make run` serves it, with a SQLite file in `workdir` and an account."""
    from cryptography.fernet import Fernet

    port = free_port()
    env = {
        **os.environ,
        "FLASK_APP": "wsgi",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(settings.workers),
        "GUNICORN_THREADS": str(settings.threads),
        "DATABASE_URL": f"sqlite:///{workdir / 'gateway.sqlite3'}",
        "OPENAI_BASE_URL": stub_base,
        "OPENAI_API_KEY": "sk-bench",
        "ACCOUNT_SEALING_KEY": Fernet.generate_key().decode(),
    }
    flask = str(VENV_BIN / "flask")
    subprocess.run([flask, "init-db"], cwd=REPO, env=env, check=True, capture_output=True)
    created = subprocess.run(
        [flask, "accounts", "create", "bench", "--daily-quota", "1000000000", "--json"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    argv = [str(VENV_BIN / "gunicorn"), "-c", "config/gunicorn.conf.py", "wsgi:app"]
    service = Service("gateway", argv, env=env, cwd=REPO, log=workdir / "gateway.log")
    return service, f"http://127.0.0.1:{port}", json.loads(created.stdout)


def gateway_targets(base: str, account: dict) -> dict[str, Target]:
    def api(cache: str) -> str:
        query = {
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/chat/completions",
            "_o_args": json.dumps({"messages": CHAT_BODY["messages"]}, separators=(",", ":")),
            "cache": cache,
        }
        return f"{base}/api?{urlencode(query)}"

    return {
        "miss": Target(api("no"), check="gateway"),
        "hit": Target(api("yes"), check="gateway-hit"),
        "v1": Target(
            f"{base}/v1/chat/completions",
            method="POST",
            body=json.dumps(CHAT_BODY),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {account['key']}:{account['secret']}",
            },
            check="gateway",
        ),
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")


def rss_over_calls(gateway: Service, target: Target, rate: float, settings, workdir) -> dict:
    """Each worker's VmRSS after the warm-up and after each fifth of BENCH_CALLS /api calls.
    wrk runs for a time, so each fifth is a run as long as the last rate says it takes."""
    pids = gateway.worker_pids()
    checkpoints = [{"calls": 0, "mib": [round(rss_mib(pid), 1) for pid in pids]}]
    print(f"  RSS: {settings.calls:,} /api cache=no calls at c=20 ...", end="", flush=True)
    done, failed = 0, 0
    for checkpoint in range(1, settings.rss_checkpoints + 1):
        due = math.ceil(settings.calls * checkpoint / settings.rss_checkpoints) - done
        if due <= 0:
            continue
        run = wrk(target, 20, max(1.0, due / rate), workdir)
        done += run.requests
        failed += run.failed
        rate = run.req_per_s
        checkpoints.append({"calls": done, "mib": [round(rss_mib(pid), 1) for pid in pids]})
        print(f" {done:,}", end="", flush=True)
    print(flush=True)
    respawned = sorted(gateway.worker_pids()) != sorted(pids)
    return {"pids": pids, "checkpoints": checkpoints, "failed": failed, "respawned": respawned}


# -- the report ---------------------------------------------------------------------------------


def cpu_pressure() -> str:
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return "n/a"


def machine_line() -> str:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return f"{os.cpu_count()} cores, load {load}; cpu pressure: {cpu_pressure()}"


COLUMNS = f"{'system':<44} {'c=20 req/s':>10} {'c=20 p50':>9} {'c=1 p50':>9} {'c=1 req/s':>9}"


def table(rows: list[Row]) -> str:
    lines = [f"{COLUMNS} {'failed':>7}"]
    for row in rows:
        failed = row.c20.failed + row.c1.failed
        lines.append(
            f"{row.system:<44} {row.c20.req_per_s:>10,.0f} {row.c20.p50_ms:>6.2f} ms"
            f" {row.c1.p50_ms:>6.2f} ms {row.c1.req_per_s:>9,.0f} {failed:>7}"
        )
    return "\n".join(lines)


def verdicts(rows: dict[str, Row], rss: dict | None) -> list[tuple[str, str, str, bool | None]]:
    """(what, measured, target, met): each target of the hot-path issue, from this run's rows."""
    out = []
    litellm, minimal, bare = rows.get("litellm"), rows["minimal"], rows["bare"]
    for key, label in (("miss", "/api cache=no"), ("v1", "/v1")):
        gateway = rows[key].c20.req_per_s
        if litellm:
            ratio = gateway / litellm.c20.req_per_s
            out.append(
                (
                    f"{label} vs LiteLLM, c=20",
                    f"{ratio:.2f}x",
                    f">= {TIMES_LITELLM:g}x",
                    ratio >= TIMES_LITELLM,
                )
            )
        else:
            out.append(
                (f"{label} vs LiteLLM, c=20", "n/a", f">= {TIMES_LITELLM:g}x (PEERS=litellm)", None)
            )
        ratio = gateway / minimal.c20.req_per_s
        out.append(
            (
                f"{label} vs minimal pass-through, c=20",
                f"{ratio:.2f}x",
                f">= {SHARE_OF_MINIMAL:g}x",
                ratio >= SHARE_OF_MINIMAL,
            )
        )
    share = rows["hit"].c20.req_per_s / bare.c20.req_per_s
    out.append(
        (
            "/api cache hit vs bare Flask, c=20",
            f"{share:.0%}",
            f">= {SHARE_OF_BARE_FLASK:.0%}",
            share >= SHARE_OF_BARE_FLASK,
        )
    )
    for key, label in (("miss", "/api cache=no"), ("v1", "/v1")):
        above = rows[key].c1.p50_ms - minimal.c1.p50_ms
        out.append(
            (
                f"{label} c=1 p50 - minimal's",
                f"{above:+.2f} ms",
                f"<= {P50_ABOVE_MINIMAL_MS:g} ms",
                above <= P50_ABOVE_MINIMAL_MS,
            )
        )
    if rss:
        last = rss["checkpoints"][-1]
        first = rss["checkpoints"][0]
        worst = max(last["mib"])
        growth = max(b - a for a, b in zip(first["mib"], last["mib"], strict=True))
        calls = f"{last['calls']:,} calls"
        out.append(
            (
                f"worker RSS after {calls}",
                f"max {worst:.1f} MiB",
                f"<= {RSS_MIB:g} MiB",
                worst <= RSS_MIB,
            )
        )
        flat = growth <= RSS_GROWTH_MIB and not rss["respawned"]
        out.append(
            (
                f"worker RSS growth over {calls}",
                f"max {growth:+.1f} MiB",
                f"<= {RSS_GROWTH_MIB:g} MiB (flat)",
                flat,
            )
        )
    return out


def report(rows: dict[str, Row], rss: dict | None) -> list:
    print()
    print(table(list(rows.values())))
    if rss:
        print()
        print(f"gateway worker RSS (VmRSS, MiB), workers {rss['pids']}:")
        for point in rss["checkpoints"]:
            label = "after warm-up" if point["calls"] == 0 else f"after {point['calls']:,} calls"
            print(f"  {label:<24} " + "  ".join(f"{mib:6.1f}" for mib in point["mib"]))
        if rss["failed"]:
            print(f"  {rss['failed']} FAILED answers during the RSS calls")
        if rss["respawned"]:
            print("  a worker was replaced during the calls: RSS growth not judged")
    checks = verdicts(rows, rss)
    print()
    print(f"{'target':<44} {'measured':>16}  {'target':<24} met")
    for what, measured, target, met in checks:
        mark = "n/a" if met is None else ("yes" if met else "NO")
        print(f"{what:<44} {measured:>16}  {target:<24} {mark}")
    return checks


# -- main ---------------------------------------------------------------------------------------


def settings_from(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(env("BENCH_SECONDS", "10")))
    parser.add_argument("--warmup", type=float, default=float(env("BENCH_WARMUP", "2")))
    parser.add_argument("--calls", type=int, default=int(env("BENCH_CALLS", "50000")))
    parser.add_argument("--rss-checkpoints", type=int, default=5)
    parser.add_argument("--peers", default=env("PEERS", ""), help="comma list: litellm")
    parser.add_argument("--workers", type=int, default=int(env("WEB_CONCURRENCY", "2")))
    parser.add_argument("--threads", type=int, default=int(env("GUNICORN_THREADS", "8")))
    parser.add_argument(
        "--json", dest="json_out", default=env("BENCH_JSON", ""), help="also write results here"
    )
    return parser.parse_args(argv)


def check_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"{' and '.join(missing)} not found: `make bench-peers` installs them (apt-get)"
        )


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the run as Ctrl-C does: through the `finally` that stops all."""

    def leave(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)


def versions() -> str:
    from importlib.metadata import version

    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[:2]
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    packages = ", ".join(f"{name} {version(name)}" for name in ("flask", "gunicorn", "openai"))
    return (
        f"python {platform.python_version()}, {packages}, {' '.join(wrk_version)}, "
        f"{nginx.replace('nginx version: ', '')}"
    )


def main(argv: list[str] | None = None) -> None:
    settings = settings_from(argv)
    peers = {p.strip().lower() for p in settings.peers.split(",") if p.strip()}
    if peers - {"litellm"}:
        raise SystemExit(f"PEERS={settings.peers!r}: the only peer known is litellm")
    check_tools()
    stop_on_signals()
    print(f"bench-peers: {machine_line()}")
    print(f"  {versions()}")
    print(
        f"  {settings.workers} workers x {settings.threads} threads; {settings.warmup:g} s "
        f"warm-up, {settings.seconds:g} s per run; RSS over {settings.calls:,} calls",
        flush=True,
    )
    services: list[Service] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    rows: dict[str, Row] = {}
    rss = None
    started = time.monotonic()
    pressure_before = cpu_pressure()
    try:
        stub, stub_base = start_stub(workdir)
        services.append(stub)
        chat = {
            "method": "POST",
            "body": json.dumps(CHAT_BODY),
            "headers": {"Content-Type": "application/json"},
        }
        rows["stub"] = measure(
            "direct to the nginx stub",
            Target(stub_base + "/chat/completions", **chat),
            settings,
            workdir,
        )
        rows["bare"] = run_reference(
            f"bare Flask (gunicorn {settings.workers}x{settings.threads} gthread)",
            "bare_app",
            "/",
            {},
            stub_base,
            settings,
            workdir,
        )
        rows["minimal"] = run_reference(
            "minimal Flask + openai SDK pass-through",
            "passthrough_app",
            "/v1/chat/completions",
            chat,
            stub_base,
            settings,
            workdir,
        )
        if "litellm" in peers:
            rows["litellm"] = run_litellm(stub_base, settings, workdir)
        gateway, base, account = gateway_service(stub_base, settings, workdir)
        services.append(gateway)
        gateway.start(base + "/health")
        targets = gateway_targets(base, account)
        rows["miss"] = measure("gateway /api cache=no", targets["miss"], settings, workdir)
        rows["hit"] = measure("gateway /api cache hit", targets["hit"], settings, workdir)
        rows["v1"] = measure("gateway /v1/chat/completions", targets["v1"], settings, workdir)
        if settings.calls > 0:
            rate = rows["miss"].c20.req_per_s
            rss = rss_over_calls(gateway, targets["miss"], rate, settings, workdir)
    except BaseException:
        for service in services:
            if (
                service.process is not None
                and service.process.poll() is None
                and service.name == "gateway"
            ):
                print(f"\ngateway log (last lines):\n{service.log_tail()}", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the stops
        for service in reversed(services):
            service.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        shutil.rmtree(workdir, ignore_errors=True)
    checks = report(rows, rss)
    print()
    print(f"cpu pressure before: {pressure_before}")
    print(f"cpu pressure after:  {cpu_pressure()}   ({time.monotonic() - started:.0f} s in all)")
    if settings.json_out:
        Path(settings.json_out).write_text(
            json.dumps(
                {
                    "machine": machine_line(),
                    "versions": versions(),
                    "rows": {key: asdict(row) for key, row in rows.items()},
                    "rss": rss,
                    "targets": [
                        dict(zip(("what", "measured", "target", "met"), c, strict=True))
                        for c in checks
                    ],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
