"""The results database's set-up under concurrent processes: transient locks are retried."""

from __future__ import annotations

import pytest

from dropkit.experiments.store import Store


def test_opening_retries_a_lock_another_process_holds_while_it_sets_up(
    tmp_path, monkeypatch
) -> None:
    # SQLite can answer "database is locked" at once (no busy wait) to two processes setting up
    # a new database together; the set-up is idempotent and is tried again.
    import sqlite3

    from dropkit.experiments import store as store_module

    real = store_module._add_columns
    failures = [2]

    def locked_twice(db: sqlite3.Connection) -> None:
        if failures[0]:
            failures[0] -= 1
            raise sqlite3.OperationalError("database is locked")
        real(db)

    monkeypatch.setattr(store_module, "_add_columns", locked_twice)
    folder = Store(tmp_path).register("key", {"a": 1})
    assert folder == "key"
    assert failures == [0]


def test_a_real_setup_error_is_not_retried(tmp_path, monkeypatch) -> None:
    import sqlite3

    from dropkit.experiments import store as store_module

    calls = [0]

    def broken(db: sqlite3.Connection) -> None:
        calls[0] += 1
        raise sqlite3.OperationalError("no such table: experiments")

    monkeypatch.setattr(store_module, "_add_columns", broken)
    with pytest.raises(store_module.StoreError, match="not a usable dropkit results database"):
        Store(tmp_path).register("key", {"a": 1})
    assert calls == [1]
