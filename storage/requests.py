"""LLM response cache: one SQLite file per store, a row per answered request, committed as each arrives.

key = sha256(canonical JSON of {model, messages, schema, generation parameters}); parsing is not part of the
key, so a changed validator re-reads old replies without paying for them again. A killed run loses at most
the requests in flight. See PROTOCOL.md, "Request cache".
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from storage.fingerprint import canonical_json, sha256_hex


def request_key(payload: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(payload))


class RequestCache:
    """Thread-safe get/put of reply texts by request key."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives the process being killed (only a power cut can lose the last ones),
        # without an fsync per reply blocking the event loop
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses ("
            " key TEXT PRIMARY KEY, model TEXT NOT NULL, content TEXT NOT NULL,"
            " prompt_tokens INTEGER, completion_tokens INTEGER, created REAL NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS capabilities ("
            " endpoint TEXT NOT NULL, model TEXT NOT NULL, mode TEXT NOT NULL, created REAL NOT NULL,"
            " PRIMARY KEY (endpoint, model))"
        )

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT content FROM responses WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, model: str, content: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                (key, model, content, prompt_tokens, completion_tokens, time.time()),
            )

    def get_mode(self, endpoint: str, model: str) -> str | None:
        """The structured-output mode last found to work for this endpoint and model (latentqa/llm.py)."""
        with self._lock:
            row = self._db.execute("SELECT mode FROM capabilities WHERE endpoint = ? AND model = ?",
                                   (endpoint, model)).fetchone()
        return row[0] if row else None

    def put_mode(self, endpoint: str, model: str, mode: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO capabilities VALUES (?, ?, ?, ?)",
                             (endpoint, model, mode, time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
