"""The stub's state: its options, the request log and the file store, one StubState per app.

Views reach it through :func:`stub_state` only (it lives in ``app.extensions``), so no view
closes over it and two stubs in one process never share anything.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import flask

from stub_upstream.generators import CREATED, file_id

_EXTENSION_KEY = "stub_upstream"
FILES_MAX_BYTES = 256 * 1024 * 1024  # the store drops its oldest files beyond this total


class RequestLog:
    """Thread-safe, bounded record of the requests the stub received (oldest dropped first)."""

    def __init__(self, limit: int = 1000):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self._seq = 0

    def record(self, entry: dict[str, Any]) -> int:
        """Append ``entry`` (adding its ``seq`` number) and return that number."""
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._entries.append(entry)
            return self._seq

    def entries(self, path: str | None = None) -> list[dict[str, Any]]:
        """Deep copies of the entries, oldest first; only those for ``path`` if given."""
        with self._lock:
            items = [e for e in self._entries if path is None or e["path"] == path]
            return copy.deepcopy(items)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class FileStore:
    """Thread-safe in-memory files of ``/v1/files``: at most ``limit`` files and
    ``max_bytes`` of content, the oldest uploads dropped first."""

    def __init__(self, limit: int, max_bytes: int = FILES_MAX_BYTES):
        if limit < 1:
            raise ValueError("files_limit must be >= 1")
        self._lock = threading.Lock()
        self._files: OrderedDict[str, tuple[dict[str, Any], bytes]] = OrderedDict()
        self._limit = limit
        self._max_bytes = max_bytes
        self._bytes = 0
        self._uploads = 0

    def add(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        """Store an upload and return its file object; the id also hashes the upload number,
        so two uploads of the same file differ and a fresh stub repeats the same ids."""
        with self._lock:
            self._uploads += 1
            meta = {
                "id": file_id(self._uploads, purpose, filename, content),
                "object": "file",
                "bytes": len(content),
                "created_at": CREATED,
                "filename": filename,
                "purpose": purpose,
                "status": "processed",
                "status_details": None,
            }
            self._files[meta["id"]] = (meta, content)
            self._bytes += len(content)
            while len(self._files) > 1 and (
                len(self._files) > self._limit or self._bytes > self._max_bytes
            ):
                _, (_, dropped) = self._files.popitem(last=False)
                self._bytes -= len(dropped)
            return dict(meta)

    def get(self, file_id: str) -> dict[str, Any] | None:
        with self._lock:
            stored = self._files.get(file_id)
            return None if stored is None else dict(stored[0])

    def content(self, file_id: str) -> bytes | None:
        with self._lock:
            stored = self._files.get(file_id)
            return None if stored is None else stored[1]

    def delete(self, file_id: str) -> bool:
        with self._lock:
            stored = self._files.pop(file_id, None)
            if stored is not None:
                self._bytes -= len(stored[1])
            return stored is not None

    def filenames(self) -> list[str]:
        """The stored files' names, oldest upload first."""
        with self._lock:
            return [meta["filename"] for meta, _ in self._files.values()]


@dataclass
class StubOptions:
    """What create_stub_app() was given (see its docstring)."""

    slow_seconds: float = 2.0
    hang_seconds: float = 300.0
    stream_delay: float = 0.02
    stream_slow_delay: float = 0.5
    retry_after_ms: int | None = None
    models: tuple[str, ...] = ()
    owned_by: str = "stub"
    # A fault for every /v1 request whatever its model ("500", "429", "401"; None: off), set
    # through POST /_stub/fault or StubServer.set_fault(): one stub of a pool playing a
    # failing member while the others answer the same model.
    fault: str | None = None


@dataclass
class StubState:
    options: StubOptions
    log: RequestLog
    files: FileStore
    # Set by StubServer.stop(): wakes sleeping slow/hang handlers and ends streams early.
    stopping: threading.Event = field(default_factory=threading.Event)

    def init_app(self, app: flask.Flask) -> None:
        app.extensions[_EXTENSION_KEY] = self


def stub_state(app: flask.Flask | None = None) -> StubState:
    """The state of ``app``, or of the app handling the current request."""
    return (app or flask.current_app).extensions[_EXTENSION_KEY]
