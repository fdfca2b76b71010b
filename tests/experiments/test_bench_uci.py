"""``benchmarks/bench_uci.py`` on a tiny data folder the test writes: loading, the stacked
networks, and a whole run end to end. The figures are the benchmark's."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_uci", BENCHMARKS / "bench_uci.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _write(root: Path, name: str = "tiny", rows: int = 40, splits: int = 2) -> np.ndarray:
    """A data folder laid out as the repository's: 3 features, the target last."""
    folder = root / "UCI_Datasets" / name / "data"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3))
    data = np.column_stack([x, x @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=rows)])
    np.savetxt(folder / "data.txt", data)
    np.savetxt(folder / "index_features.txt", [0, 1, 2], fmt="%d")
    np.savetxt(folder / "index_target.txt", [3], fmt="%d")
    np.savetxt(folder / "n_splits.txt", [splits], fmt="%d")
    for i in range(splits):
        order = rng.permutation(rows)
        np.savetxt(folder / f"index_train_{i}.txt", order[: rows - 8], fmt="%d")
        np.savetxt(folder / f"index_test_{i}.txt", order[rows - 8 :], fmt="%d")
    np.savetxt(folder / "dropout_rates.txt", [0.05, 0.1])
    np.savetxt(folder / "tau_values.txt", [1.0, 10.0])
    np.savetxt(folder / "n_hidden.txt", [4], fmt="%d")
    np.savetxt(folder / "n_epochs.txt", [2], fmt="%d")
    return data


def test_load_reads_the_protocols_files(tmp_path: Path) -> None:
    bench = _script()
    data = _write(tmp_path)
    uci = bench.load_uci(tmp_path, "tiny", splits=1)
    assert np.array_equal(uci.x, data[:, :3])
    assert np.array_equal(uci.y, data[:, 3])
    assert len(uci.splits) == 1
    train, test = uci.splits[0]
    assert len(train) == 32
    assert len(test) == 8
    expected = np.loadtxt(tmp_path / "UCI_Datasets/tiny/data/index_test_0.txt").astype(int)
    assert np.array_equal(test, expected)
    assert uci.dropout_rates == [0.05, 0.1]
    assert uci.tau_values == [1.0, 10.0]
    assert (uci.n_hidden, uci.n_epochs) == (4, 2)
    assert len(bench.load_uci(tmp_path, "tiny").splits) == 2  # all of them by default


def test_load_names_what_is_missing_or_wrong(tmp_path: Path) -> None:
    bench = _script()
    with pytest.raises(bench.UCIError, match=r"data\.txt is missing; pass --data-dir"):
        bench.load_uci(tmp_path, "absent")
    _write(tmp_path)
    with pytest.raises(bench.UCIError, match="has 2 splits; asked for 3"):
        bench.load_uci(tmp_path, "tiny", splits=3)
    folder = tmp_path / "UCI_Datasets/tiny/data"
    np.savetxt(folder / "index_test_0.txt", [0, 1], fmt="%d")
    np.savetxt(folder / "index_train_0.txt", [1, 2, 3], fmt="%d")
    with pytest.raises(bench.UCIError, match="overlaps"):
        bench.load_uci(tmp_path, "tiny", splits=1)


def test_each_stacked_member_is_the_plain_network() -> None:
    bench = _script()
    torch.manual_seed(0)
    net = bench.StackedNet([0.0, 0.0, 0.0], 3, 5)  # p = 0: the forward is deterministic
    x = torch.randn(7, 3)
    stacked = net(x)
    for i in range(3):
        assert torch.allclose(net.member(i)(x), stacked[i], atol=1e-6)
    assert [m.p for m in net.member(1) if isinstance(m, torch.nn.Dropout)] == [0.0, 0.0]


def test_tiny_run_end_to_end(tmp_path: Path) -> None:
    bench = _script()
    _write(tmp_path)
    lines: list[str] = []
    out = tmp_path / "results"
    argv = ["--data-dir", str(tmp_path), "--datasets", "tiny", "--splits", "2"]
    argv += ["--epochs-multiplier", "1", "--samples", "50", "--output", str(out)]
    report = bench.main(argv, print_=lines.append)
    rows = report["tiny"]["splits"]
    assert [r["split"] for r in rows] == [0, 1]
    for row in rows:
        for rate, tau in ((row["rate"], row["tau"]), (row["own_rate"], row["own_tau"])):
            assert rate in (0.05, 0.1)
            assert tau in (1.0, 10.0)
        for way in ("mc", "moments", "lowrank", "masks", "deterministic", "own"):
            assert math.isfinite(row[f"{way}_rmse"]), way
        for way in ("mc", "moments", "lowrank", "own", "mc_gaussian", "masks", "masks_gaussian"):
            assert math.isfinite(row[f"{way}_ll"]), way
    summary = report["tiny"]["summary"]
    gap = [r["moments_ll"] - r["mc_ll"] for r in rows]
    assert summary["ll_gap"][0] == pytest.approx(sum(gap) / 2)
    masks_gap = [r["masks_ll"] - r["mc_ll"] for r in rows]
    assert summary["masks_gap"][0] == pytest.approx(sum(masks_gap) / 2)
    assert json.loads((out / "uci.json").read_text())["tiny"]["splits"] == rows
    assert lines[2].startswith("| tiny | 2 |")
    assert "—" not in lines[2]  # every column was measured


def test_runs_over_split_ranges_merge_into_the_whole_run(tmp_path: Path) -> None:
    bench = _script()
    _write(tmp_path, splits=3)
    common = ["--data-dir", str(tmp_path), "--datasets", "tiny", "--epochs-multiplier", "1"]
    common += ["--samples", "20"]
    whole = bench.main([*common, "--splits", "3", "--output", str(tmp_path / "a")], print)
    first = bench.main([*common, "--splits", "1", "--output", str(tmp_path / "b")], print)
    rest = ["--first-split", "1", "--splits", "2", "--output", str(tmp_path / "c")]
    later = bench.main([*common, *rest], print)
    assert [r["split"] for r in later["tiny"]["splits"]] == [1, 2]
    lines: list[str] = []
    files = [str(tmp_path / d / "uci.json") for d in ("c", "b")]  # any order
    target = tmp_path / "m" / "all.json"
    merged = bench.main(["--merge", *files, "--output", str(target)], lines.append)
    assert json.loads(target.read_text())["settings"]["splits"] == 3

    def scores(report: dict) -> list[dict]:  # timings aside
        return [{k: v for k, v in r.items() if not k.endswith("_seconds")}
                for r in report["tiny"]["splits"]]  # fmt: skip

    assert scores(merged) == scores(whole)  # each split is seeded by its index
    assert merged["tiny"]["summary"] == whole["tiny"]["summary"]
    assert merged["settings"]["splits"] == 3
    assert lines[2].startswith("| tiny | 3 |")
    assert scores(first) == scores(whole)[:1]
    with pytest.raises(SystemExit) as stop:  # the same split twice
        bench.main(["--merge", files[1], files[1], "--output", str(tmp_path / "m")], print)
    assert stop.value.code == 2
    other = json.loads(Path(files[0]).read_text())
    other["settings"]["epochs_multiplier"] = 2
    with pytest.raises(bench.UCIError, match="same settings"):
        bench.merge([json.loads(Path(files[1]).read_text()), other])
    older = json.loads(Path(files[0]).read_text())
    del older["settings"]["tau_values"]  # a report from before --tau-values: the protocol's grid
    both = bench.merge([json.loads(Path(files[1]).read_text()), older])
    assert [r["split"] for r in both["tiny"]["splits"]] == [0, 1, 2]


def test_tau_values_replace_the_grid_and_are_recorded(tmp_path: Path) -> None:
    bench = _script()
    _write(tmp_path)
    argv = ["--data-dir", str(tmp_path), "--datasets", "tiny", "--splits", "1"]
    argv += ["--epochs-multiplier", "1", "--samples", "20", "--output", str(tmp_path / "r")]
    report = bench.main([*argv, "--tau-values", "3.0", "30.0"], print)
    assert report["settings"]["tau_values"] == [3.0, 30.0]
    row = report["tiny"]["splits"][0]
    assert row["tau"] in (3.0, 30.0)
    assert row["own_tau"] in (3.0, 30.0)
    with pytest.raises(SystemExit) as stop:
        bench.main([*argv, "--tau-values", "0"], print)
    assert stop.value.code == 2


def test_input_masks_give_the_exact_predictive_moments() -> None:
    # Dropout -> Linear -> ReLU -> Dropout -> Linear: given the input mask the hidden units are
    # fixed, so the moments of the rest are exact and the weighted mixture's mean and variance
    # are the network's under dropout. Against 400,000 MC passes.
    bench = _script()
    torch.manual_seed(0)
    net = bench.StackedNet([0.2], 3, 6)
    model = net.member(0)
    x = torch.randn(4, 3)
    means, variances, weights = bench.input_masks(model, x)
    assert means.shape == variances.shape == (8, 4)
    assert weights.dtype == torch.float64
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(weights.max()) == pytest.approx(0.8**3)  # nothing dropped
    mean = weights @ means.double()
    variance = weights @ (variances.double() + means.double() ** 2) - mean**2
    s = 400_000
    model.train()
    draws = torch.cat([model(x.repeat(4_000, 1)).view(4_000, 4).double() for _ in range(100)])
    assert len(draws) == s
    mc_mean, mc_var = draws.mean(0), draws.var(0)
    assert torch.all((mean - mc_mean).abs() < 4 * (mc_var / s).sqrt())
    fourth = ((draws - mc_mean) ** 4).mean(0)
    assert torch.all((variance - mc_var).abs() < 4 * ((fourth - mc_var**2) / s).sqrt())


def test_input_masks_skip_too_many_inputs_and_need_input_dropout() -> None:
    bench = _script()
    wide = bench.StackedNet([0.1], 14, 2).member(0)  # 2**14 masks
    assert bench.input_masks(wide, torch.randn(2, 14)) is None
    no_input_dropout = torch.nn.Sequential(torch.nn.Linear(3, 1))
    with pytest.raises(TypeError, match=r"model\[0\] to be nn\.Dropout"):
        bench.input_masks(no_input_dropout, torch.randn(2, 3))


def test_a_missing_folder_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    bench = _script()
    with pytest.raises(SystemExit) as stop:
        bench.main(["--data-dir", str(tmp_path), "--datasets", "nothing"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "is missing" in err
