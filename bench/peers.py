"""The gateway beside its peers, in one run: wrk -> each system -> an nginx stub upstream that
answers a chat completion at once.

    make bench-peers                       # or: .venv/bin/python bench/peers.py
    PEERS=litellm make bench-peers         # also the LiteLLM proxy, from its own venv
    BENCH_SECONDS=2 BENCH_ROUNDS=1 BENCH_CALLS=2000 make bench-peers     # a quick run

Systems, all served at once on the same machine and the same stub:
- direct to the stub (nginx, `return 200`): what the client and loopback cost;
- bare Flask (bench/peer_apps.py) under gunicorn with the gateway's worker and thread counts:
  the framework's ceiling;
- a minimal Flask + openai SDK pass-through (`with_raw_response`), same gunicorn settings;
- the LiteLLM proxy with as many workers, when PEERS names litellm;
- the gateway as `make run` serves it (gunicorn with config/gunicorn.conf.py, SQLite): `/api`
  as a legacy GET client calls it with cache=no, the same URL with cache=yes once warm (every
  answer checked to be a hit), and `/v1/chat/completions` as the OpenAI SDK calls it.

Each system is warmed up, then measured in BENCH_ROUNDS rounds that take the systems in turn
(so a burst of load from elsewhere on the machine does not fall on one system alone): wrk at
20 connections (req/s) and at 1 connection (p50); a row shows the median round. Every gateway
answer is checked (HTTP 200 and X-Error-Code 0000; a hit also "cache":1), every other one for
a status below 400; a row with failed answers says so. Each run also measures the CPU that
processes other than the bench's used meanwhile (column "others", in cores). Then BENCH_CALLS
/api cache=no calls at 20 connections, with each gunicorn worker's resident memory (VmRSS)
read before and at checkpoints. Prints the table, the ratios the targets of the hot-path work
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
import socket
import statistics
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
JSON_POST = {"Content-Type": "application/json"}
# The targets of the hot-path issue, each a ratio or difference of figures from one run.
TIMES_LITELLM = 6.0
SHARE_OF_MINIMAL = 0.8
SHARE_OF_BARE_FLASK = 0.5
P50_ABOVE_MINIMAL_MS = 2.0
RSS_MIB = 80.0
# "Flat": no worker grows by more than this from after the warm-up to the last call.
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
    others_cores: float  # CPU used meanwhile by processes that are not the bench's
    # The server's own CPU (master and workers) per answered request, in microseconds: less
    # sensitive to other load on the machine than req/s (0 for the stub row).
    cpu_us_per_call: float = 0.0


@dataclass
class Row:
    key: str
    system: str
    target: Target
    session: int = 0  # the server's session id (its pid), for its CPU per call
    c20_runs: list[Run] = field(default_factory=list)
    c1_runs: list[Run] = field(default_factory=list)

    @property
    def c20(self) -> Run:
        return median_run(self.c20_runs, lambda run: run.req_per_s)

    @property
    def c1(self) -> Run:
        return median_run(self.c1_runs, lambda run: run.p50_ms)

    @property
    def cpu_us_per_call(self) -> float:
        """The median over the c=20 runs of the server's CPU per answered request."""
        return statistics.median(run.cpu_us_per_call for run in self.c20_runs)

    @property
    def failed(self) -> int:
        return sum(run.failed for run in self.c20_runs + self.c1_runs)


def median_run(runs: list[Run], key) -> Run:
    """The run whose figure is the median (the lower middle one of an even count)."""
    ordered = sorted(runs, key=key)
    return ordered[(len(ordered) - 1) // 2]


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
        try:
            self._wait_until_ready(ready_url, timeout)
        except BaseException:  # not ready, or Ctrl-C meanwhile: nothing is left running
            self.stop()
            raise
        return self

    def _wait_until_ready(self, ready_url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not answers(ready_url):
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited at start; its log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- CPU used by others (the machine is shared) -------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Reading:
    at: float  # monotonic seconds
    busy: float  # CPU seconds the machine has been busy
    ours: float  # CPU seconds of the bench, wrk and the servers it started
    by_session: dict[int, float]  # CPU seconds of each server's session (master and workers)


class CpuMeter:
    """Cores used by processes other than the bench's (its services' sessions, wrk and itself)
    between two readings, from /proc/stat and each process's /proc/PID/stat; and the CPU each
    server used meanwhile."""

    def __init__(self, services: list[Service]):
        self.services = services

    def reading(self) -> Reading:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / TICKS  # all but idle and iowait
        sessions = {s.process.pid for s in self.services if s.process and s.process.poll() is None}
        by_session = dict.fromkeys(sessions, 0.0)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                after_name = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(after_name[3]) in sessions:
                cpu = (int(after_name[11]) + int(after_name[12])) / TICKS
                by_session[int(after_name[3])] += cpu
        ours = sum(os.times()[:4]) + sum(by_session.values())  # with each wrk it reaped
        return Reading(time.monotonic(), busy, ours, by_session)

    @staticmethod
    def others_cores(before: Reading, after: Reading) -> float:
        wall = after.at - before.at
        return max(0.0, ((after.busy - before.busy) - (after.ours - before.ours)) / wall)

    @staticmethod
    def session_seconds(before: Reading, after: Reading, session: int) -> float:
        """CPU seconds one server's session used between the readings (0 when unknown)."""
        return after.by_session.get(session, 0.0) - before.by_session.get(session, 0.0)


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


def wrk(
    target: Target,
    connections: int,
    seconds: float,
    workdir: Path,
    meter: CpuMeter,
    session: int = 0,
) -> Run:
    """One wrk run of `seconds` (wrk runs for a time; its scripts cannot end it sooner)."""
    threads = min(2, connections)
    script = workdir / "wrk.lua"
    script.write_text(wrk_script(target))
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    before = meter.reading()
    done = subprocess.run(
        [*argv, "--timeout", "10s", "--latency", "-s", str(script), target.url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    after = meter.reading()
    others = CpuMeter.others_cores(before, after)
    server_cpu = CpuMeter.session_seconds(before, after, session)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            requests, micros, failed, p50, p99 = line.split()[1:]
            elapsed = int(micros) / 1e6
            return Run(
                connections=connections,
                requests=int(requests),
                seconds=round(elapsed, 2),
                req_per_s=round(int(requests) / elapsed, 1),
                p50_ms=round(float(p50) / 1000, 3),
                p99_ms=round(float(p99) / 1000, 3),
                failed=int(failed),
                others_cores=round(others, 2),
                cpu_us_per_call=round(server_cpu * 1e6 / max(1, int(requests)), 1),
            )
    raise SystemExit(f"wrk gave no result:\n{done.stdout}\n{done.stderr}")


# -- the systems --------------------------------------------------------------------------------


def start_stub(workdir: Path) -> tuple[Service, str]:
    prefix = workdir / "nginx"
    prefix.mkdir()
    prefix.chmod(0o755)  # nginx's workers run as nobody when the bench runs as root
    port = free_port()
    conf = (BENCH / "nginx-stub.conf").read_text()
    conf = conf.replace("@PREFIX@", str(prefix)).replace("@PORT@", str(port))
    (prefix / "nginx.conf").write_text(conf)
    argv = ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
    argv += ["-e", str(prefix / "error.log")]  # not the system's log, even at start-up
    stub = Service("nginx stub", argv, env=dict(os.environ), cwd=prefix, log=workdir / "nginx.log")
    base = f"http://127.0.0.1:{port}/v1"
    return stub.start(base + "/models"), base


def start_reference(app: str, stub_base: str, settings, workdir: Path) -> tuple[Service, str]:
    """A reference app of bench/peer_apps.py under the gateway's gunicorn settings (workers,
    gthread, threads, keep-alive)."""
    port = free_port()
    argv = [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}"]
    argv += ["--workers", str(settings.workers), "--worker-class", "gthread"]
    argv += ["--threads", str(settings.threads), "--keep-alive", "5"]
    argv += ["--pythonpath", str(BENCH), f"peer_apps:{app}"]
    env = {**os.environ, "OPENAI_BASE_URL": stub_base, "OPENAI_API_KEY": "sk-bench"}
    service = Service(app, argv, env=env, cwd=REPO, log=workdir / f"{app}.log")
    base = f"http://127.0.0.1:{port}"
    return service.start(base + "/"), base


def start_litellm(stub_base: str, settings, workdir: Path) -> tuple[Service, Target]:
    litellm = LITELLM_VENV / "bin" / "litellm"
    if not litellm.exists():
        raise SystemExit(f"{litellm} is missing: `PEERS=litellm make bench-peers` installs it")
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
    service.start(f"http://127.0.0.1:{port}/health/liveliness")
    headers = {**JSON_POST, "Authorization": f"Bearer {master_key}"}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    return service, Target(url, method="POST", body=json.dumps(CHAT_BODY), headers=headers)


def litellm_version() -> str:
    python = LITELLM_VENV / "bin" / "python"
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    return done.stdout.strip() or "?"


def start_gateway(stub_base: str, settings, workdir: Path) -> tuple[Service, str, dict]:
    """The gateway as `make run` serves it, with a SQLite file in `workdir` and an account
    whose quota the bench cannot exhaust."""
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
    base = f"http://127.0.0.1:{port}"
    return service.start(base + "/health"), base, json.loads(created.stdout)


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

    bearer = {**JSON_POST, "Authorization": f"Bearer {account['key']}:{account['secret']}"}
    return {
        "miss": Target(api("no"), check="gateway"),
        "hit": Target(api("yes"), check="gateway-hit"),
        "v1": Target(
            f"{base}/v1/chat/completions",
            method="POST",
            body=json.dumps(CHAT_BODY),
            headers=bearer,
            check="gateway",
        ),
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")


def rss_over_calls(gateway: Service, row: Row, settings, workdir: Path, meter) -> dict:
    """Each worker's VmRSS after the warm-up and after each fifth of BENCH_CALLS /api calls.
    wrk runs for a time, so each fifth takes runs as long as the last rate says it needs."""
    pids = gateway.worker_pids()
    checkpoints = [{"calls": 0, "mib": [round(rss_mib(pid), 1) for pid in pids]}]
    print(f"  RSS: {settings.calls:,} /api cache=no calls at c=20 ...", end="", flush=True)
    done, failed, rate = 0, 0, row.c20.req_per_s
    for checkpoint in range(1, settings.rss_checkpoints + 1):
        due = math.ceil(settings.calls * checkpoint / settings.rss_checkpoints)
        if done >= due:  # the runs of the last checkpoint made these calls too
            continue
        while done < due:
            # 90% of the time the rate says: the loop makes up the rest, seldom overshoots
            run = wrk(row.target, 20, max(1.0, 0.9 * (due - done) / rate), workdir, meter)
            done, failed, rate = done + run.requests, failed + run.failed, max(run.req_per_s, 1)
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


def table(rows: list[Row]) -> str:
    head = f"{'system':<42} {'c=20 req/s':>10} {'spread':>7} {'c=20 p50':>9} {'c=1 p50':>9}"
    lines = [f"{head} {'c=1 req/s':>9} {'cpu/call':>9} {'others':>6} {'failed':>6}"]
    for row in rows:
        rates = [run.req_per_s for run in row.c20_runs]
        spread = (max(rates) - min(rates)) / row.c20.req_per_s
        others = statistics.mean(run.others_cores for run in row.c20_runs + row.c1_runs)
        lines.append(
            f"{row.system:<42} {row.c20.req_per_s:>10,.0f} {spread:>7.0%}"
            f" {row.c20.p50_ms:>6.2f} ms {row.c1.p50_ms:>6.2f} ms {row.c1.req_per_s:>9,.0f}"
            f" {row.cpu_us_per_call:>6,.0f} us {others:>6.2f} {row.failed:>6}"
        )
    return "\n".join(lines)


@dataclass
class Verdict:
    what: str
    measured: str
    target: str
    met: bool | None  # None: not measured in this run


def verdicts(rows: dict[str, Row], rss: dict | None) -> list[Verdict]:
    """Each target of the hot-path issue, judged from this run's rows."""
    out = []
    litellm, minimal = rows.get("litellm"), rows["minimal"]
    doors = (("miss", "/api cache=no"), ("v1", "/v1"))
    for key, label in doors:
        rate = rows[key].c20.req_per_s
        if litellm:
            times = rate / litellm.c20.req_per_s
            met = times >= TIMES_LITELLM
            out.append(
                Verdict(f"{label} / LiteLLM, c=20", f"{times:.2f}x", f">= {TIMES_LITELLM:g}x", met)
            )
        else:
            out.append(Verdict(f"{label} / LiteLLM, c=20", "n/a", "PEERS=litellm", None))
        share = rate / minimal.c20.req_per_s
        met = share >= SHARE_OF_MINIMAL
        out.append(
            Verdict(f"{label} / minimal, c=20", f"{share:.2f}x", f">= {SHARE_OF_MINIMAL:g}x", met)
        )
    share = rows["hit"].c20.req_per_s / rows["bare"].c20.req_per_s
    met = share >= SHARE_OF_BARE_FLASK
    out.append(
        Verdict(
            "/api cache hit / bare Flask, c=20",
            f"{share:.0%}",
            f">= {SHARE_OF_BARE_FLASK:.0%}",
            met,
        )
    )
    for key, label in doors:
        above = rows[key].c1.p50_ms - minimal.c1.p50_ms
        met = above <= P50_ABOVE_MINIMAL_MS
        out.append(
            Verdict(
                f"{label} c=1 p50 - minimal's",
                f"{above:+.2f} ms",
                f"<= {P50_ABOVE_MINIMAL_MS:g} ms",
                met,
            )
        )
    if rss:
        first, last = rss["checkpoints"][0], rss["checkpoints"][-1]
        calls = f"{last['calls']:,} calls"
        worst = max(last["mib"])
        out.append(
            Verdict(
                f"worker RSS after {calls}",
                f"max {worst:.1f} MiB",
                f"<= {RSS_MIB:g} MiB",
                worst <= RSS_MIB,
            )
        )
        growth = max(b - a for a, b in zip(first["mib"], last["mib"], strict=True))
        flat = growth <= RSS_GROWTH_MIB and not rss["respawned"]
        out.append(
            Verdict(
                f"worker RSS growth over {calls}",
                f"max {growth:+.1f} MiB",
                f"<= {RSS_GROWTH_MIB:g} MiB",
                flat,
            )
        )
    return out


def cpu_ratios(rows: dict[str, Row]) -> str:
    """CPU per call against the references: what req/s would be if CPU were the only bound
    and the machine were the bench's alone (less sensitive to other load than req/s)."""
    bare, minimal = rows["bare"].cpu_us_per_call, rows["minimal"].cpu_us_per_call
    parts = [f"hit {bare / max(rows['hit'].cpu_us_per_call, 1e-9):.0%} of bare Flask's"]
    for key in ("miss", "v1"):
        parts.append(f"{key} {minimal / max(rows[key].cpu_us_per_call, 1e-9):.2f}x minimal's")
    return "calls per CPU second against the references: " + ", ".join(parts)


def report(rows: dict[str, Row], rss: dict | None) -> list[Verdict]:
    print()
    print(table(list(rows.values())))
    print("(median of the rounds; spread: (max - min) / median of c=20 req/s; others: cores used")
    print(" meanwhile by processes that are not the bench's, mean of its runs; cpu/call: the")
    print(" server's own CPU (master and workers) per answered request, median of the c=20 runs)")
    print(cpu_ratios(rows))
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
    print(f"{'target':<40} {'measured':>16}  {'target':<14} met")
    for check in checks:
        met = "n/a" if check.met is None else ("yes" if check.met else "NO")
        print(f"{check.what:<40} {check.measured:>16}  {check.target:<14} {met}")
    return checks


# -- main ---------------------------------------------------------------------------------------


def settings_from(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(env("BENCH_SECONDS", "5")))
    parser.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", "3")))
    parser.add_argument("--warmup", type=float, default=float(env("BENCH_WARMUP", "2")))
    parser.add_argument("--calls", type=int, default=int(env("BENCH_CALLS", "50000")))
    parser.add_argument("--rss-checkpoints", type=int, default=5)
    parser.add_argument("--peers", default=env("PEERS", ""), help="comma list: litellm")
    parser.add_argument("--workers", type=int, default=int(env("WEB_CONCURRENCY", "2")))
    parser.add_argument("--threads", type=int, default=int(env("GUNICORN_THREADS", "8")))
    parser.add_argument("--json", dest="json_out", default=env("BENCH_JSON", ""))
    return parser.parse_args(argv)


def check_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} not found: `make bench-peers` installs them")


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the run as Ctrl-C does: through the `finally` that stops all
    (a signal ignored when the bench started, as under nohup, stays ignored)."""

    def leave(signum, frame):
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, leave)


def versions(peers: set[str]) -> str:
    from importlib.metadata import version

    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[:2]
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    packages = ", ".join(f"{name} {version(name)}" for name in ("flask", "gunicorn", "openai"))
    litellm = f", litellm {litellm_version()}" if "litellm" in peers else ""
    return (
        f"python {platform.python_version()}, {packages}{litellm}, {' '.join(wrk_version)}, "
        f"{nginx.replace('nginx version: ', '')}"
    )


def start_systems(peers, settings, workdir: Path, services: list[Service]) -> dict[str, Row]:
    """Every system, started (each appended to `services` at once, so it is stopped whatever
    happens next), with its row."""
    stub, stub_base = start_stub(workdir)
    services.append(stub)
    rows = {}
    chat = Target(stub_base + "/chat/completions", "POST", json.dumps(CHAT_BODY), JSON_POST)
    rows["stub"] = Row("stub", "direct to the nginx stub", chat, stub.process.pid)
    bare, bare_base = start_reference("bare_app", stub_base, settings, workdir)
    services.append(bare)
    gunicorn = f"gunicorn {settings.workers}x{settings.threads} gthread"
    rows["bare"] = Row(
        "bare", f"bare Flask ({gunicorn})", Target(bare_base + "/"), bare.process.pid
    )
    minimal, minimal_base = start_reference("passthrough_app", stub_base, settings, workdir)
    services.append(minimal)
    minimal_chat = Target(minimal_base + "/v1/chat/completions", "POST", chat.body, JSON_POST)
    rows["minimal"] = Row(
        "minimal", "minimal Flask + openai SDK pass-through", minimal_chat, minimal.process.pid
    )
    if "litellm" in peers:
        litellm, target = start_litellm(stub_base, settings, workdir)
        services.append(litellm)
        name = f"LiteLLM proxy ({settings.workers} workers)"
        rows["litellm"] = Row("litellm", name, target, litellm.process.pid)
    gateway, base, account = start_gateway(stub_base, settings, workdir)
    services.append(gateway)
    targets = gateway_targets(base, account)
    session = gateway.process.pid
    rows["miss"] = Row("miss", "gateway /api cache=no", targets["miss"], session)
    rows["hit"] = Row("hit", "gateway /api cache hit", targets["hit"], session)
    rows["v1"] = Row("v1", "gateway /v1/chat/completions", targets["v1"], session)
    return rows


def measure_rounds(rows: dict[str, Row], settings, workdir: Path, meter: CpuMeter) -> None:
    """Warm every system up at 20 connections, then take them in turn, round after round."""
    print("  warm-up:", end="", flush=True)
    for row in rows.values():
        wrk(row.target, 20, settings.warmup, workdir, meter)
        print(f" {row.key}", end="", flush=True)
    print(flush=True)
    for number in range(1, settings.rounds + 1):
        print(f"  round {number}:", end="", flush=True)
        for row in rows.values():
            row.c20_runs.append(wrk(row.target, 20, settings.seconds, workdir, meter, row.session))
            row.c1_runs.append(wrk(row.target, 1, settings.seconds, workdir, meter))
            failed = row.c20_runs[-1].failed + row.c1_runs[-1].failed
            alarm = f" ({failed} FAILED)" if failed else ""
            print(f" {row.key} {row.c20_runs[-1].req_per_s:,.0f}/s{alarm}", end="", flush=True)
        print(flush=True)


def main(argv: list[str] | None = None) -> None:
    settings = settings_from(argv)
    peers = {p.strip().lower() for p in settings.peers.split(",") if p.strip()}
    if peers - {"litellm"}:
        raise SystemExit(f"PEERS={settings.peers!r}: the only peer known is litellm")
    check_tools()
    stop_on_signals()
    print(f"bench-peers: {machine_line()}")
    print(f"  {versions(peers)}")
    print(
        f"  {settings.workers} workers x {settings.threads} threads; {settings.warmup:g} s "
        f"warm-up, {settings.rounds} rounds of {settings.seconds:g} s per run; "
        f"RSS over {settings.calls:,} calls",
        flush=True,
    )
    services: list[Service] = []
    meter = CpuMeter(services)
    workdir = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    rss = None
    started = time.monotonic()
    pressure_before = cpu_pressure()
    try:
        rows = start_systems(peers, settings, workdir, services)
        measure_rounds(rows, settings, workdir, meter)
        if settings.calls > 0:
            rss = rss_over_calls(services[-1], rows["miss"], settings, workdir, meter)
    except Exception:
        for service in services:
            print(f"\n{service.name} log (last lines):\n{service.log_tail(10)}", file=sys.stderr)
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
        results = {
            "machine": machine_line(),
            "versions": versions(peers),
            "settings": vars(settings),
            "rows": {
                key: {"system": row.system, "c20": asdict(row.c20), "c1": asdict(row.c1)}
                | {"c20_runs": [asdict(r) for r in row.c20_runs]}
                | {"c1_runs": [asdict(r) for r in row.c1_runs]}
                for key, row in rows.items()
            },
            "rss": rss,
            "targets": [asdict(check) for check in checks],
        }
        Path(settings.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("\ninterrupted; everything the bench started is stopped")
