"""The gateway as operators run it: gunicorn with config/gunicorn.conf.py on a real socket, and
the `flask` admin commands run against the same database, as separate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.conftest import CHAT_ARGS, SEALING_KEY
from tests.servers import free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class ServedGateway:
    def __init__(self, workdir: Path, *, workers: int = 2, **settings: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"gunicorn-{self.port}.log"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "FLASK_APP": "wsgi",
            **settings,
        }
        self.process: subprocess.Popen | None = None

    @classmethod
    def on_stub(cls, workdir: Path, stub, *, workers: int = 2, **settings: str) -> ServedGateway:
        """A gateway with its own SQLite file in `workdir`, the test sealing key, and `stub`
        as its upstream; `settings` add to or override those."""
        return cls(
            workdir,
            workers=workers,
            **{
                "DATABASE_URL": f"sqlite:///{workdir / 'gateway.sqlite3'}",
                "OPENAI_BASE_URL": stub.base_url,
                "OPENAI_API_KEY": "sk-upstream-secret",
                "FEISHU_BASE_URL": stub.url,
                "FEISHU_APP_ID": "cli_stub_app",
                "FEISHU_APP_SECRET": "stub-app-secret",
                "ACCOUNT_SEALING_KEY": SEALING_KEY,
                **settings,
            },
        )

    def flask(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [str(BIN / "flask"), *args],
            cwd=REPO,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def flask_json(self, *args: str):
        return json.loads(self.flask(*args, "--json"))

    def start(self) -> ServedGateway:
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", "config/gunicorn.conf.py", "wsgi:app"],
                cwd=REPO,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        # A worker imports the SDK and builds the app: seconds on a quiet machine, and once
        # 55 s on a loaded CI machine.
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(self.base + "/health", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:  # not listening yet, or still booting
                pass
            assert self.process.poll() is None, self.log_text()
            assert time.monotonic() < deadline, self.log_text()
            time.sleep(0.2)

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def kill_workers(self) -> None:
        """SIGKILL every worker, as the OOM killer or a crash would; the master respawns them."""
        for pid in self.worker_pids():
            os.kill(pid, signal.SIGKILL)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@contextmanager
def two_hosts(workdir, **settings):
    """Two served gateways of 2 workers each on the same settings: two hosts sharing the
    database and Redis the settings name. Yields (first, second); stops both."""
    first = ServedGateway(workdir, workers=2, **settings).start()
    second = ServedGateway(workdir, workers=2, **settings).start()
    yield first, second
    first.stop()
    second.stop()


def bases(gateways) -> list[str]:
    return [gateway.base for gateway in gateways]


def fire_at_once(bases: list[str], account: dict, count: int, *, model: str | None = None):
    """`count` GET /api calls released together by a barrier, spread over `bases`; their codes."""
    o_args = dict(CHAT_ARGS, **({"model": model} if model else {}))
    barrier = threading.Barrier(count)
    results: list[str] = [""] * count

    def one(index: int) -> None:
        params = {
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/chat/completions",
            "_o_args": json.dumps(o_args),
            "cache": "no",
        }
        barrier.wait()
        try:
            response = requests.get(bases[index % len(bases)] + "/api", params=params, timeout=60)
        except requests.RequestException as exc:
            results[index] = f"no answer: {type(exc).__name__}"
            return
        if response.status_code != 200:
            results[index] = f"HTTP {response.status_code}"
            return
        results[index] = response.json()["error_code"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Counter(results)


def wait_until(condition, timeout: float = 10.0, message: str = "") -> None:
    """Poll `condition` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message or f"not true after {timeout} s"
        time.sleep(0.05)
