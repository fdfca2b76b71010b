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
        assert row["rate"] in (0.05, 0.1)
        assert row["tau"] in (1.0, 10.0)
        for key in ("mc_rmse", "moments_rmse", "deterministic_rmse", "mc_ll", "moments_ll"):
            assert math.isfinite(row[key]), key
    summary = report["tiny"]["summary"]
    gap = [r["moments_ll"] - r["mc_ll"] for r in rows]
    assert summary["ll_gap"][0] == pytest.approx(sum(gap) / 2)
    assert json.loads((out / "uci.json").read_text())["tiny"]["splits"] == rows
    assert lines[2].startswith("| tiny | 2 |")


def test_a_missing_folder_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    bench = _script()
    with pytest.raises(SystemExit) as stop:
        bench.main(["--data-dir", str(tmp_path), "--datasets", "nothing"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "is missing" in err
