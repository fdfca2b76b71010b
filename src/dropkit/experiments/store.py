"""Results on disk: one SQLite database per output directory, one row per finished run.

An output directory holds any number of *configurations* (a comparison's settings but its rates
and seed count), each in its own sub-folder named after what it changes from the defaults
(``default``, ``label-noise-0.3``, ...). A run is finished when its row is written, and its row
is written only after its checkpoint is on disk; the row names the checkpoint file. The
database is in WAL mode with a busy timeout, so several processes can write to it at once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dropkit.experiments.results import RunResult

__all__ = [
    "AUTO",
    "DB_NAME",
    "Configuration",
    "Store",
    "StoreError",
    "prepare_database",
    "utc_now",
]

DB_NAME = "results.sqlite"
#: Marks the key of a ``--fresh`` set of runs that is not finished yet.
STAGED = "+fresh"
#: Appended to a configuration's key for its learned-rate runs (``--rates auto``): kept apart
#: from the runs at fixed rates, and listed with their configuration, not as one of their own.
AUTO = "+auto"


def _own(key: str) -> bool:
    """A configuration of its own: not an unfinished ``--fresh`` set nor learned-rate runs."""
    return STAGED not in key and not key.endswith(AUTO)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    key TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created TEXT NOT NULL,
    folder TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    experiment TEXT NOT NULL REFERENCES experiments(key),
    rate REAL NOT NULL,
    seed INTEGER NOT NULL,
    result TEXT NOT NULL,
    finished TEXT NOT NULL,
    checkpoint TEXT,
    PRIMARY KEY (experiment, rate, seed)
);
"""
# Columns added since the first databases; added to those when they are opened.
_ADDED = (("experiments", "folder"), ("runs", "checkpoint"))


class StoreError(RuntimeError):
    """The results database cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Configuration:
    """One configuration of an output directory, as listed by ``dropkit report`` and ``mc``."""

    key: str
    folder: str
    config: dict[str, Any]
    runs: int
    last: str  # when its last run finished (or it was registered), ISO 8601 UTC


class Store:
    """The results database of one output directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        read_only = self.path.is_file() and not os.access(self.directory, os.W_OK)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if read_only:  # a folder this user cannot write: read it (report, mc) as it is
                connection = sqlite3.connect(read_only_uri(self.path), uri=True, timeout=60.0)
            else:
                connection = sqlite3.connect(self.path, timeout=60.0)
            with closing(connection) as db:
                if not read_only:
                    _prepare(db)
                with db:  # one transaction, committed on success, rolled back on error
                    yield db
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"{self.path}: not a usable dropkit results database ({error}); move it away or "
                "choose another --output"
            ) from None

    def register(self, key: str, config: dict[str, object], folder: str | None = None) -> str:
        """Record a configuration (idempotent); return its folder: ``folder`` (default: the key)
        unless another configuration has it, then with part of the key appended."""
        folder = folder or key
        with self._connect() as db:
            row = db.execute("SELECT folder FROM experiments WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0]:
                return str(row[0])
            taken = {
                r[0] for r in db.execute("SELECT folder FROM experiments WHERE key != ?", (key,))
            }
            if folder in taken:
                folder = f"{folder}-{key[:8]}"
            db.execute(
                "INSERT INTO experiments VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET folder = excluded.folder",
                (key, json.dumps(config, sort_keys=True), _now(), folder),
            )
            return folder

    def config(self, key: str) -> dict[str, object]:
        with self._connect() as db:
            row = db.execute("SELECT config FROM experiments WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        config: dict[str, object] = json.loads(row[0])
        return config

    def experiments(self) -> list[str]:
        """Experiment keys, oldest first (unfinished ``--fresh`` sets and the learned-rate runs
        of a configuration, its key with ``+auto``, left out)."""
        with self._connect() as db:
            rows = db.execute("SELECT key FROM experiments ORDER BY created, key").fetchall()
        return [r[0] for r in rows if _own(r[0])]

    def configurations(self) -> list[Configuration]:
        """The configurations with finished runs, the one whose last run finished last, last."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT e.key, e.folder, e.config, COUNT(r.seed), MAX(r.finished), e.created "
                "FROM experiments e JOIN runs r ON r.experiment = e.key "
                "GROUP BY e.key ORDER BY MAX(r.finished), e.created, e.key"
            ).fetchall()
        found = []
        for key, folder, config, runs, last, created in rows:
            if not _own(key):
                continue
            try:
                parsed = json.loads(config)
            except json.JSONDecodeError:
                raise StoreError(f"{self.path}: the configuration of {key} is not JSON") from None
            if not isinstance(parsed, dict):
                raise StoreError(f"{self.path}: the configuration of {key} is not a mapping")
            found.append(Configuration(key, folder or key, parsed, int(runs), last or created))
        return found

    def choose(self, name: str | None = None) -> tuple[Configuration, list[Configuration]]:
        """The configuration called ``name`` (its folder, key, or a unique prefix of either),
        by default the only one or else the latest; and the others."""
        if not self.path.is_file():
            raise StoreError(f"{self.directory}: no {DB_NAME}; run dropkit compare there first")
        found = self.configurations()
        if not found:
            raise StoreError(f"{self.path} holds no finished runs; run dropkit compare first")
        if name is None:
            chosen = found[-1]
        else:
            exact = [c for c in found if name in (c.folder, c.key)]
            matches = exact or [
                c for c in found if c.folder.startswith(name) or c.key.startswith(name)
            ]
            if len(matches) != 1:
                names = ", ".join(c.folder for c in found)
                what = "matches several" if matches else "matches none"
                raise StoreError(
                    f"configuration {name!r} {what} of those in {self.directory}: {names}"
                )
            chosen = matches[0]
        return chosen, [c for c in found if c is not chosen]

    def done(self, key: str) -> dict[tuple[float, int], str | None]:
        """The finished (rate, seed) pairs of ``key``, each with its checkpoint file."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT rate, seed, checkpoint FROM runs WHERE experiment = ?", (key,)
            ).fetchall()
        return {(float(rate), int(seed)): checkpoint for rate, seed, checkpoint in rows}

    def save(self, key: str, result: RunResult, checkpoint: str | None = None) -> bool:
        """Record a finished run whose checkpoint is written; False if another writer was first."""
        with self._connect() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    result.rate,
                    result.seed,
                    json.dumps(result.to_json()),
                    _now(),
                    checkpoint,
                ),
            )
            return cursor.rowcount == 1

    def results(self, key: str) -> list[RunResult]:
        """Finished runs of ``key`` by rate, then seed."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT result FROM runs WHERE experiment = ? ORDER BY rate, seed", (key,)
            ).fetchall()
        try:
            return [RunResult.from_json(json.loads(r[0])) for r in rows]
        except (json.JSONDecodeError, TypeError, KeyError) as error:
            raise StoreError(
                f"{self.path}: a run of {key} is not a dropkit result ({error})"
            ) from None

    def drop(self, key: str, rate: float, seed: int) -> None:
        """Forget one run (its checkpoint is missing: it will be trained again)."""
        with self._connect() as db:
            db.execute(
                "DELETE FROM runs WHERE experiment = ? AND rate = ? AND seed = ?", (key, rate, seed)
            )

    def forget(self, key: str) -> list[str]:
        """Delete the runs of ``key``; return their checkpoint files (relative to the folder)."""
        with self._connect() as db:
            rows = db.execute("SELECT checkpoint FROM runs WHERE experiment = ?", (key,))
            files = [r[0] for r in rows if r[0]]
            db.execute("DELETE FROM runs WHERE experiment = ?", (key,))
        return files

    def promote(self, staged: str, key: str) -> list[str]:
        """Make the runs of ``staged`` those of ``key`` in one transaction (a finished
        ``--fresh``); return the checkpoint files no run uses any more.

        When another process has promoted the set already, the runs this one stored since
        are duplicates: they are dropped and the promoted set stays.
        """
        with self._connect() as db:
            live = db.execute("SELECT 1 FROM experiments WHERE key = ?", (staged,)).fetchone()
            replaced = key if live else staged
            old = db.execute("SELECT checkpoint FROM runs WHERE experiment = ?", (replaced,))
            files = [r[0] for r in old if r[0]]
            db.execute("DELETE FROM runs WHERE experiment = ?", (replaced,))
            if live:
                db.execute("UPDATE runs SET experiment = ? WHERE experiment = ?", (key, staged))
                db.execute("DELETE FROM experiments WHERE key = ?", (staged,))
        return files


def read_only_uri(path: Path) -> str:
    """The URI that reads the database at ``path`` without writing anything next to it.

    A database in WAL mode needs its ``-shm`` index to be read; in a folder the user cannot
    write, SQLite cannot create it. When it is absent no process has the database open (the
    last to close it removes it), so the file is read as immutable; when it is there, through it.
    """
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    shm = Path(f"{path}-shm")
    return uri if shm.exists() or os.access(Path(path).parent, os.W_OK) else f"{uri}&immutable=1"


def _prepare(db: sqlite3.Connection, patience: float = 60.0) -> None:
    """WAL mode, the schema and the added columns, retried while another process holds a lock.

    Two processes opening a new database together (two ``dropkit compare`` on one folder) can
    get "database is locked" at once from the switch to WAL or the schema, without SQLite
    waiting for the busy timeout; each step is idempotent, so it is tried again, backing off,
    for up to ``patience`` seconds.
    """
    prepare_database(db, _SCHEMA, patience, _add_columns)


def _add_columns(db: sqlite3.Connection) -> None:
    for table, column in _ADDED:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            try:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
            except sqlite3.OperationalError as error:  # another process added it first
                if "duplicate column" not in str(error):
                    raise


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def prepare_database(
    db: sqlite3.Connection,
    schema: str,
    patience: float = 60.0,
    migrate: Callable[[sqlite3.Connection], None] | None = None,
) -> None:
    """WAL mode, ``schema`` (``CREATE ... IF NOT EXISTS``) and ``migrate``, retried while
    another process holds a lock, for up to ``patience`` seconds: what :class:`Store` does on
    opening, for another results database of dropkit (``dropkit.active``'s)."""
    deadline = time.monotonic() + patience
    delay = 0.01
    while True:
        try:
            db.execute("PRAGMA busy_timeout=60000")
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(schema)
            if migrate is not None:
                migrate(db)
            return
        except sqlite3.OperationalError as error:
            transient = "locked" in str(error) or "busy" in str(error)
            if not transient or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.5)


def utc_now() -> str:
    """The time a row is written: ISO 8601 in UTC, to the microsecond."""
    return _now()
