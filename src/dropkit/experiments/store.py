"""Results on disk: one SQLite database per output directory, one row per finished run.

A run is written in a single transaction when it finishes, so an interruption loses at most
the run in progress, and re-running the same experiment skips what is done. The database is in
WAL mode with a busy timeout, so several processes can write to it at once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from dropkit.experiments.train import RunResult

__all__ = ["DB_NAME", "Store"]

DB_NAME = "results.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    key TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    experiment TEXT NOT NULL REFERENCES experiments(key),
    rate REAL NOT NULL,
    seed INTEGER NOT NULL,
    result TEXT NOT NULL,
    finished TEXT NOT NULL,
    PRIMARY KEY (experiment, rate, seed)
);
"""


class Store:
    """The results database of one output directory."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / DB_NAME

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=60.0)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=60000")
            db.executescript(_SCHEMA)
            with db:  # one transaction, committed on success, rolled back on error
                yield db

    def register(self, key: str, config: dict[str, object]) -> None:
        """Record an experiment's configuration (idempotent)."""
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO experiments VALUES (?, ?, ?)",
                (key, json.dumps(config, sort_keys=True), _now()),
            )

    def config(self, key: str) -> dict[str, object]:
        with self._connect() as db:
            row = db.execute("SELECT config FROM experiments WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        config: dict[str, object] = json.loads(row[0])
        return config

    def experiments(self) -> list[str]:
        """Experiment keys, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT key FROM experiments ORDER BY created, key").fetchall()
        return [r[0] for r in rows]

    def done(self, key: str) -> set[tuple[float, int]]:
        """The (rate, seed) pairs of ``key`` that have finished."""
        with self._connect() as db:
            rows = db.execute("SELECT rate, seed FROM runs WHERE experiment = ?", (key,))
            return {(float(rate), int(seed)) for rate, seed in rows}

    def save(self, key: str, result: RunResult) -> None:
        """Record a finished run; a second writer of the same run keeps the first result."""
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?)",
                (key, result.rate, result.seed, json.dumps(result.to_json()), _now()),
            )

    def results(self, key: str) -> list[RunResult]:
        """Finished runs of ``key`` by rate, then seed."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT result FROM runs WHERE experiment = ? ORDER BY rate, seed", (key,)
            ).fetchall()
        return [RunResult.from_json(json.loads(r[0])) for r in rows]

    def forget(self, key: str) -> None:
        """Delete the runs of ``key`` (``--fresh``)."""
        with self._connect() as db:
            db.execute("DELETE FROM runs WHERE experiment = ?", (key,))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
