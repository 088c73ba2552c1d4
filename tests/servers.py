"""Real PostgreSQL and redis-server processes on loopback, in temporary directories.

`make test` installs the Debian packages; these classes start private servers on free ports
so that the tests never touch a system service. Nothing here is a mock.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _postgres_bin_dir() -> str:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not candidates or not os.path.exists(os.path.join(candidates[-1], "initdb")):
        raise RuntimeError("PostgreSQL is not installed; `make test` installs it (apt postgresql)")
    return candidates[-1]


class PostgresServer:
    """A throwaway cluster: trust auth on 127.0.0.1, fsync off (test data only)."""

    user = "gateway"

    def __init__(self) -> None:
        self.bin_dir = _postgres_bin_dir()
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="gateway-pg-")
        self.data_dir = os.path.join(self.directory, "data")
        self.process: subprocess.Popen | None = None
        self._as_user: dict = {}
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.directory, "postgres")
            self._as_user = {"user": "postgres", "group": "postgres"}

    def start(self) -> PostgresServer:
        subprocess.run(
            [
                os.path.join(self.bin_dir, "initdb"),
                "-D",
                self.data_dir,
                "-U",
                self.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **self._as_user,
        )
        self.process = subprocess.Popen(
            [
                os.path.join(self.bin_dir, "postgres"),
                "-D",
                self.data_dir,
                "-p",
                str(self.port),
                "-k",
                self.directory,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "max_connections=300",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.directory, "postgres.log"), "wb"),  # noqa: SIM115
            **self._as_user,
        )
        wait_for_port(self.port, process=self.process)
        self._wait_accepting()
        return self

    def _wait_accepting(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self._dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _dsn(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty place for the gateway's tables; returns its SQLAlchemy URL.

        It is a schema of one shared database, selected by the connection's search_path: as
        isolated as a database for the gateway's unqualified tables, and far cheaper to make
        than CREATE DATABASE (which copies a template on every test)."""
        import psycopg

        schema = "gw_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        return (
            f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/postgres"
            f"?options=-csearch_path%3D{schema}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # immediate: test data needs no checkpoint
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisServer:
    """redis-server on a free loopback port. `stop()` + `start()` keep the port and, because
    it saves on shutdown into its own directory, the data: like a real restart."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it")
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="gateway-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.directory,
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                os.path.join(self.directory, "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)
        return self

    def command(self, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return done.stdout.strip()

    def stop(self, *, save: bool = True) -> None:
        """Shut the server down (saving its data first unless save=False)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.command("SHUTDOWN", "SAVE" if save else "NOSAVE")
        except subprocess.CalledProcessError:
            pass  # redis-cli reports the dropped connection of a successful shutdown
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.stop(save=False)
        shutil.rmtree(self.directory, ignore_errors=True)
