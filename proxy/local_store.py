"""The answer cache's shared store on one machine (no REDIS_URL): a SQLite file of its own
that every gunicorn worker of the gateway opens (docs/envelope.md, "Cache").

Its own file, not the gateway's database: a cache fill is then never queued behind a usage
row for SQLite's one writer (bench/answer_store_bench.py measures both). It holds bytes
only (the answers' JSON), so reading it never runs code; its directory is the owner's only.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time

from proxy.cache import Entry, SharedAnswerCache, StoreError

FILE_NAME = "answers.sqlite3"
MMAP_BYTES = 64 * 1024 * 1024
# A write waits this long for another worker's write; past it the fill is skipped (the
# answer is still served), never the call delayed further.
BUSY_TIMEOUT_MS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT NOT NULL UNIQUE,
    expires_at REAL NOT NULL,
    size INTEGER NOT NULL,
    value BLOB NOT NULL
);
-- Every entry lives the same TTL: the first to expire is also the oldest, evicted first.
CREATE INDEX IF NOT EXISTS answers_by_expiry ON answers (expires_at);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    entries INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals (id, entries, bytes) VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS answers_added AFTER INSERT ON answers BEGIN
    UPDATE totals SET entries = entries + 1, bytes = bytes + NEW.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS answers_replaced AFTER UPDATE ON answers BEGIN
    UPDATE totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS answers_removed AFTER DELETE ON answers BEGIN
    UPDATE totals SET entries = entries - 1, bytes = bytes - OLD.size WHERE id = 0;
END;
CREATE TABLE IF NOT EXISTS fill_locks (
    key TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
"""


class LocalStore:
    """Answers in `directory`/answers.sqlite3, at most `max_bytes` of them: writing past
    that removes the entries that expire first (expired ones among them). One connection
    per thread; WAL, so reads never wait for a write."""

    def __init__(self, directory: str, *, max_bytes: int):
        self.directory = directory
        self.path = os.path.join(directory, FILE_NAME)
        self.address = f"the answer store {self.path}"
        self.max_bytes = max_bytes
        self._local = threading.local()

    # -- the Store protocol (proxy/cache.py)

    def read(self, key: str) -> Entry | None:
        row = self._run(
            lambda db: db.execute(
                "SELECT value, expires_at FROM answers WHERE key = ? AND expires_at > ?",
                (key, time.time()),
            ).fetchone()
        )
        return None if row is None else Entry(row[0], row[1])

    def write(self, key: str, blob: bytes, ttl_seconds: int) -> None:
        def write(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(
                    "INSERT INTO answers (key, expires_at, size, value) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at, "
                    "size = excluded.size, value = excluded.value",
                    (key, time.time() + ttl_seconds, len(blob), blob),
                )
                self._evict(db)
                # Locks of fillers that died: only fills under way hold one, so this is short.
                db.execute("DELETE FROM fill_locks WHERE expires_at <= ?", (time.time(),))

        self._run(write)

    def take_fill_lock(self, key: str, token: str, seconds: float) -> bool:
        def take(db: sqlite3.Connection) -> bool:
            now = time.time()
            with _transaction(db):
                cursor = db.execute(
                    "INSERT INTO fill_locks (key, token, expires_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET token = excluded.token, "
                    "expires_at = excluded.expires_at WHERE fill_locks.expires_at <= ?",
                    (key, token, now + seconds, now),
                )
                return cursor.rowcount == 1

        return self._run(take)

    def release_fill_lock(self, key: str, token: str) -> None:
        def release(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute("DELETE FROM fill_locks WHERE key = ? AND token = ?", (key, token))

        self._run(release)

    # -- the rest

    def usage(self) -> dict:
        """Entries and bytes held (expired ones too, until a write removes them)."""
        entries, used = self._run(
            lambda db: db.execute("SELECT entries, bytes FROM totals WHERE id = 0").fetchone()
        )
        return {"entries": entries, "bytes": used, "max_bytes": self.max_bytes}

    def _evict(self, db: sqlite3.Connection) -> None:
        """Remove the entries that expire first until the store holds at most max_bytes."""
        excess = db.execute("SELECT bytes FROM totals WHERE id = 0").fetchone()[0] - self.max_bytes
        if excess <= 0:
            return
        victims, freed = [], 0
        for key, size in db.execute("SELECT key, size FROM answers ORDER BY expires_at"):
            victims.append((key,))
            freed += size
            if freed >= excess:
                break
        db.executemany("DELETE FROM answers WHERE key = ?", victims)

    def _run(self, work):
        """`work(connection)`; any SQLite or file error as StoreError naming the store."""
        try:
            return work(self._connection())
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"{self.address} failed ({type(error).__name__}: {error})") from None

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()  # a forked child opens its own: a connection never crosses a fork
        db = getattr(self._local, "db", None)
        if db is not None and self._local.pid == pid:
            return db
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        # Workers opening the file at once would meet SQLite's "database is locked" while one
        # of them switches it to WAL: they take turns at opening.
        with open(os.path.join(self.directory, "open.lock"), "a") as turn:
            fcntl.flock(turn, fcntl.LOCK_EX)
            db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                os.chmod(self.path, 0o600)
                db.execute("PRAGMA journal_mode=WAL")
                # A crash of the machine may lose the last answers stored: a cache can afford.
                db.execute("PRAGMA synchronous=NORMAL")
                # Reads map the file instead of copying pages through SQLite's cache.
                db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
                db.executescript(_SCHEMA)
            except BaseException:
                db.close()
                raise
        self._local.db, self._local.pid = db, pid
        return db


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an error): the write lock is taken at once, so
    two writers never deadlock upgrading a read."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
        return False


class LocalAnswerCache(SharedAnswerCache):
    """The answer cache shared by the workers of one machine (see LocalStore)."""

    def __init__(
        self, directory: str, *, ttl_seconds: int, max_bytes: int, fill_lock_seconds: float = 30.0
    ):
        self.local_store = LocalStore(directory, max_bytes=max_bytes)
        super().__init__(
            self.local_store,
            ttl_seconds=ttl_seconds,
            max_entry_bytes=max_bytes,
            fill_lock_seconds=fill_lock_seconds,
        )

    def describe(self) -> dict:
        try:
            usage = self.local_store.usage()
        except StoreError as error:
            self._outage.failed(error)
            return {"backend": "sqlite", "state": "failing", "ttl_seconds": self.ttl_seconds}
        state = "failing" if self._outage.down else "ok"
        return {"backend": "sqlite", "state": state, **usage, "ttl_seconds": self.ttl_seconds}
