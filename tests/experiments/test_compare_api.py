"""``dropkit.experiments.compare`` and ``run_compare``: your own model and data from Python."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from dropkit.experiments import CompareConfig, Progress, Store, TrainConfig, compare, run_compare


def net(p: float) -> torch.nn.Module:
    layers = [torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(p)]
    return torch.nn.Sequential(*layers, torch.nn.Linear(16, 3))


def blobs() -> tuple[TensorDataset, TensorDataset]:
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(150) % 3
    x = torch.randn(150, 6, generator=generator) + torch.nn.functional.one_hot(y, 6).float() * 2
    return TensorDataset(x[:100], y[:100]), TensorDataset(x[100:], y[100:])


def test_compare_own_model_and_data(tmp_path) -> None:
    done: list[tuple[float, int, bool]] = []
    progress = Progress(on_run_done=lambda r, skipped: done.append((r.rate, r.seed, skipped)))
    kwargs = {"rates": (0.0, 0.5), "seeds": 2, "epochs": 2, "output": tmp_path}
    results = compare(net, blobs, progress=progress, **kwargs)
    assert [(r.rate, r.seed) for r in results] == [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)]
    assert all(len(r.history) == 2 for r in results)
    assert {skipped for *_, skipped in done} == {False}
    done.clear()
    again = compare(net, blobs, progress=progress, **kwargs)  # stored: nothing trained
    assert {skipped for *_, skipped in done} == {True}
    assert [r.test_acc for r in again] == [r.test_acc for r in results]
    (configuration,) = Store(tmp_path).configurations()
    assert configuration.config["train"]["model"].endswith(":net")
    assert len(list((tmp_path / configuration.folder / "checkpoints").glob("*.pt"))) == 4


def test_compare_without_output_leaves_no_files(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    results = compare(net, blobs, rates=(0.0,), seeds=1, epochs=1)
    assert len(results) == 1
    assert list(tmp_path.iterdir()) == []


class _Stop(Exception):
    """Stands for Ctrl-C."""


@pytest.mark.parametrize("batched", [True, False])
def test_interrupted_comparison_resumes_with_the_numbers_of_an_uninterrupted_one(
    tmp_path, batched
) -> None:
    config = CompareConfig(
        dataset="synthetic",
        train=TrainConfig(epochs=3, hidden=(16,)),
        rates=(0.0, 0.5),
        seeds=2,
        batched=batched,
    )
    whole = run_compare(config, tmp_path / "whole")
    epochs = [0]

    def stop(metrics) -> None:
        epochs[0] += 1
        if epochs[0] == 5:  # in the middle of rate 0.5's first run (or its batched runs)
            raise _Stop

    with pytest.raises(_Stop):
        run_compare(config, tmp_path / "cut", progress=Progress(on_epoch=stop))
    trained: list[int] = []
    resumed = run_compare(
        config, tmp_path / "cut", progress=Progress(on_epoch=lambda m: trained.append(m.epoch))
    )
    assert trained[0] == 3  # the run went on from its last finished epoch
    curve = lambda r: [(e.train_loss, e.val_loss, e.val_acc) for e in r.history]  # noqa: E731
    assert [curve(r) for r in resumed] == [curve(r) for r in whole]
    assert [r.test_acc for r in resumed] == [r.test_acc for r in whole]


def test_concurrent_writers_of_one_checkpoint_never_collide(tmp_path) -> None:
    # Two writers of the same checkpoint used to share one temporary name, so one's rename
    # found the file gone (FileNotFoundError in about 1 save in 5 with two threads).
    import threading

    from dropkit.experiments.compare import save_checkpoint
    from dropkit.experiments.mc_eval import load_checkpoint
    from dropkit.experiments.train import RunResult

    weights = {"w": torch.randn(64, 64, generator=torch.Generator().manual_seed(0))}
    result = RunResult(0.5, 0, 0.9, 0.8, 0.5, 0.05, 0.8, 1, 0.1, [], model_state=weights)
    path = tmp_path / "checkpoints" / "run.pt"
    errors: list[BaseException] = []

    def write() -> None:
        for _ in range(50):
            try:
                save_checkpoint(path, CompareConfig(), result)
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], weights["w"])
    assert [p.name for p in path.parent.iterdir()] == ["run.pt"]  # no temporary file left


def test_saving_a_training_state_survives_its_folder_being_removed(tmp_path) -> None:
    # A process that finishes a configuration removes its folder of training states while
    # another may be saving one there: that must not stop the other's run.
    import shutil
    import threading

    from dropkit.experiments.train import save_state

    path = tmp_path / "progress" / "state.pt"
    errors: list[BaseException] = []
    done = threading.Event()

    def save() -> None:
        for _ in range(200):
            try:
                save_state(path, "run", {"w": torch.zeros(100, 100)})
            except BaseException as error:
                errors.append(error)
        done.set()

    def remove() -> None:
        while not done.is_set():
            shutil.rmtree(path.parent, ignore_errors=True)

    threads = [threading.Thread(target=save), threading.Thread(target=remove)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_configuration_stored_without_a_thread_count_keeps_the_key_it_had() -> None:
    # Stored before the count was fixed: read back as "not fixed", under the same key, so its
    # runs are neither lost nor mixed with runs at a fixed count (other bits, another key).
    stored = CompareConfig(threads=None).to_json()
    assert "threads" not in stored
    old = CompareConfig.from_json(stored)
    assert old.threads is None
    assert old.key() == "49d27f770516085b"  # the default configuration's key before the option
    keys = {CompareConfig(threads=n).key() for n in (None, 1, 2)}
    assert len(keys) == 3
    assert CompareConfig.from_json(CompareConfig(threads=2).to_json()).threads == 2


@pytest.mark.parametrize("bad", [0, 1.5])
def test_a_bad_thread_count_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="threads: must be"):
        CompareConfig(threads=bad).check()
