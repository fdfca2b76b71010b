"""Active-learning results on disk: one SQLite database per output folder, one row per round.

Laid out as ``dropkit compare`` lays out its results, and opened the same way
(:func:`dropkit.experiments.store.prepare_database`): the database (``active.sqlite``, WAL mode
with a busy timeout, so several processes can write to it) holds any number of
*configurations*, each with its own sub-folder named after what it changes from the defaults.
A round is finished when its row is written; with warm starts the row is written only after
the round's model is on disk, and names the file.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropkit.experiments.store import prepare_database, utc_now

__all__ = ["DB_NAME", "ActiveStore", "ActiveStoreError", "RoundResult"]

DB_NAME = "active.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    key TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created TEXT NOT NULL,
    folder TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    experiment TEXT NOT NULL REFERENCES experiments(key),
    strategy TEXT NOT NULL,
    seed INTEGER NOT NULL,
    round INTEGER NOT NULL,
    result TEXT NOT NULL,
    finished TEXT NOT NULL,
    checkpoint TEXT,
    PRIMARY KEY (experiment, strategy, seed, round)
);
"""


class ActiveStoreError(RuntimeError):
    """The results database cannot be used; the message names the file and why."""


@dataclass
class RoundResult:
    """One round of one (strategy, seed): the model trained on ``labelled`` examples, evaluated
    on the test split, then (except in the last round) the pool examples it picked."""

    strategy: str
    seed: int
    round: int
    labelled: int
    test_acc: float
    test_nll: float
    test_ece: float
    train_seconds: float
    score_seconds: float  # scoring the pool and choosing (0 in the last round)
    train_cpu: float  # process CPU seconds, all threads
    score_cpu: float
    picked: list[int] = field(default_factory=list)  # indices into the pool (training split)

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundResult:
        return cls(**data)


class ActiveStore:
    """The active-learning database of one output folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with closing(sqlite3.connect(self.path, timeout=60.0)) as db:
                prepare_database(db, _SCHEMA)
                with db:  # one transaction, committed on success, rolled back on error
                    yield db
        except sqlite3.DatabaseError as error:
            raise ActiveStoreError(
                f"{self.path}: not a usable dropkit active-learning database ({error}); move it "
                "away or choose another --output"
            ) from None

    def register(self, key: str, config: dict[str, object], folder: str) -> str:
        """Record a configuration (idempotent); return its folder: ``folder`` unless another
        configuration has it, then with part of the key appended."""
        with self._connect() as db:
            row = db.execute("SELECT folder FROM experiments WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return str(row[0])
            taken = {r[0] for r in db.execute("SELECT folder FROM experiments")}
            if folder in taken:
                folder = f"{folder}-{key[:8]}"
            db.execute(
                "INSERT INTO experiments VALUES (?, ?, ?, ?)",
                (key, json.dumps(config, sort_keys=True), utc_now(), folder),
            )
            return folder

    def config(self, key: str) -> dict[str, object]:
        with self._connect() as db:
            row = db.execute("SELECT config FROM experiments WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        config: dict[str, object] = json.loads(row[0])
        return config

    def rounds(
        self, key: str, strategy: str | None = None, seed: int | None = None
    ) -> list[tuple[RoundResult, str | None]]:
        """Finished rounds of ``key`` (optionally of one strategy and seed), each with its
        checkpoint file; by strategy, seed, round."""
        query = "SELECT result, checkpoint FROM rounds WHERE experiment = ?"
        args: list[object] = [key]
        if strategy is not None:
            query += " AND strategy = ?"
            args.append(strategy)
        if seed is not None:
            query += " AND seed = ?"
            args.append(seed)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY strategy, seed, round", args).fetchall()
        try:
            return [(RoundResult.from_json(json.loads(r)), c) for r, c in rows]
        except (json.JSONDecodeError, TypeError, KeyError) as error:
            raise ActiveStoreError(
                f"{self.path}: a round of {key} is not a dropkit result ({error})"
            ) from None

    def save(self, key: str, result: RoundResult, checkpoint: str | None = None) -> bool:
        """Record a finished round; False if another writer stored it first."""
        with self._connect() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    result.strategy,
                    result.seed,
                    result.round,
                    json.dumps(result.to_json()),
                    utc_now(),
                    checkpoint,
                ),
            )
            return cursor.rowcount == 1

    def drop_from(self, key: str, strategy: str, seed: int, first: int) -> None:
        """Forget the rounds from ``first`` on (a checkpoint they need is missing)."""
        with self._connect() as db:
            db.execute(
                "DELETE FROM rounds WHERE experiment = ? AND strategy = ? AND seed = ? "
                "AND round >= ?",
                (key, strategy, seed, first),
            )
