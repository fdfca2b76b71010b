"""The pool-based loop: pairing, growth of the labelled set, storage, and resuming after a kill."""

import sqlite3

import pytest
import torch
from torch.utils.data import TensorDataset

from dropkit.active import (
    ActiveConfig,
    ActiveProgress,
    ActiveStore,
    active_learning,
    initial_labelled,
    run_active,
)
from dropkit.experiments.datasets import from_splits

TIMINGS = ("train_seconds", "score_seconds", "train_cpu", "score_cpu")


def net(p):
    return torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(p), torch.nn.Linear(32, 3)
    )


def splits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(260, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return TensorDataset(x[:200], y[:200]), TensorDataset(x[200:], y[200:])


@pytest.fixture(scope="module")
def data():
    return from_splits(splits, name="blobs")


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models: several threads only wait for each other on a shared machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(**changes):
    base = dict(
        dataset="blobs",
        model="net",
        strategies=("random", "bald", "batchbald"),
        seeds=2,
        rounds=3,
        initial=6,
        query=5,
        samples=6,
        steps=8,
        pool=40,
    )
    return ActiveConfig(**{**base, **changes})


def _curve(results):
    return [{k: v for k, v in vars(r).items() if k not in TIMINGS} for r in results]


class Killed(Exception):
    pass


def _killed_after(count):
    seen = []

    def on_round(result, skipped):
        seen.append((result.strategy, result.seed, result.round, skipped))
        if not skipped and sum(not s for *_, s in seen) == count:
            raise Killed

    return ActiveProgress(on_round), seen


@pytest.mark.parametrize("warm_start", [False, True])
def test_a_killed_run_resumes_to_the_same_curve_with_nothing_lost_or_repeated(
    tmp_path, data, warm_start
):
    config = _config(warm_start=warm_start)
    whole = run_active(config, tmp_path / "whole", data=data, model_fn=net)
    assert len(whole) == 3 * 2 * 4
    progress, _ = _killed_after(7)
    with pytest.raises(Killed):
        run_active(config, tmp_path / "killed", data=data, model_fn=net, progress=progress)
    again, seen_again = _killed_after(10**6)
    resumed = run_active(config, tmp_path / "killed", data=data, model_fn=net, progress=again)
    assert _curve(resumed) == _curve(whole)
    skipped = [s for *_, s in seen_again]
    assert sum(skipped) == 7  # the rounds stored before the kill are read back, not run again
    assert len(skipped) == len(whole)  # and every other round ran exactly once
    if warm_start:  # only the latest model of each (strategy, seed) is kept
        files = list((tmp_path / "killed").rglob("*.pt"))
        assert len(files) == 3 * 2


def test_strategies_are_paired_by_seed_and_the_labelled_set_grows_by_query(data):
    results = active_learning(
        net, splits, strategies=("random", "entropy", "power-bald"), seeds=2, rounds=3,
        initial=6, query=5, samples=6, steps=8, pool=40,
    )  # fmt: skip
    by = {(r.strategy, r.seed, r.round): r for r in results}
    for seed in range(2):
        firsts = [by[(s, seed, 0)] for s in ("random", "entropy", "power-bald")]
        assert len({(r.test_acc, r.test_nll) for r in firsts}) == 1  # same data, same first model
        for strategy in ("random", "entropy", "power-bald"):
            labelled = set(initial_labelled(len(data.y_train), 6, seed).tolist())
            for r in range(4):
                row = by[(strategy, seed, r)]
                assert row.labelled == 6 + 5 * r == len(labelled)
                assert 0 <= row.test_acc <= 1
                assert row.test_nll > 0
                assert 0 <= row.test_ece <= 1
                assert len(row.picked) == (5 if r < 3 else 0)
                assert not labelled & set(row.picked)  # never an example labelled already
                labelled |= set(row.picked)
    assert by[("entropy", 0, 1)].picked != by[("random", 0, 1)].picked


def test_more_rounds_later_reuse_the_stored_ones_and_match_a_longer_run(tmp_path, data):
    short = run_active(_config(rounds=2), tmp_path / "a", data=data, model_fn=net)
    assert max(r.round for r in short) == 2
    progress, seen = _killed_after(10**6)
    longer = run_active(
        _config(rounds=4), tmp_path / "a", data=data, model_fn=net, progress=progress
    )
    direct = run_active(_config(rounds=4), tmp_path / "b", data=data, model_fn=net)
    assert _curve(longer) == _curve(direct)
    # rounds 0 and 1 were reused; round 2 picked nothing as the last one, so it ran again
    assert sum(s for *_, s in seen) == 3 * 2 * 2


def test_the_pool_running_out_ends_the_curve(tmp_path):
    small = from_splits((TensorDataset(torch.randn(20, 8), torch.arange(20) % 3),) * 2, name="tiny")
    results = run_active(
        _config(strategies=("bald",), seeds=1, rounds=10, initial=6, query=5, pool=None),
        tmp_path,
        data=small,
        model_fn=net,
    )
    assert [r.labelled for r in results] == [6, 11, 16, len(small.y_train)]


def test_moments_method_runs_and_batchbald_with_it_is_refused(tmp_path, data):
    results = run_active(
        _config(method="moments", strategies=("bald", "power-entropy"), seeds=1, rounds=2),
        tmp_path,
        data=data,
        model_fn=net,
    )
    assert [r.labelled for r in results] == [6, 11, 16] * 2
    with pytest.raises(ValueError, match="batchbald needs method='sampling'"):
        run_active(_config(method="moments"), tmp_path, data=data, model_fn=net)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"p": 0.0}, "p must be in"),
        ({"query": 0}, "query must be a positive"),
        ({"strategies": ("bald", "bald")}, "listed twice"),
        ({"strategies": ("bold",)}, "unknown strategy 'bold'"),
        ({"method": "exact"}, "method must be one of"),
        ({"initial": 500}, "initial=500 is more than"),
    ],
)
def test_bad_settings_are_named(tmp_path, data, change, message):
    with pytest.raises(ValueError, match=message):
        run_active(_config(**change), tmp_path, data=data, model_fn=net)


def test_one_folder_and_database_rows_per_configuration(tmp_path, data):
    run_active(_config(seeds=1, rounds=1), tmp_path, data=data, model_fn=net)
    run_active(_config(seeds=1, rounds=1, query=3), tmp_path, data=data, model_fn=net)
    run_active(
        _config(seeds=2, rounds=1, strategies=("random",)), tmp_path, data=data, model_fn=net
    )
    with sqlite3.connect(tmp_path / "active.sqlite") as db:
        folders = sorted(f for (f,) in db.execute("SELECT folder FROM experiments"))
        count = db.execute("SELECT COUNT(*) FROM rounds").fetchone()[0]
    assert len(folders) == 2
    assert any("query-3" in f for f in folders)
    assert count == 3 * 2 + 3 * 2 + 2  # seed 1 of random added to the first configuration
    store = ActiveStore(tmp_path)
    key = _config().key()
    assert {r.seed for r, _ in store.rounds(key, "random")} == {0, 1}
