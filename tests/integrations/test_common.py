"""The trainer-free core of the integrations: schedules, their state, and gathering."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from dropkit.integrations import RateSchedule
from dropkit.integrations._common import ScheduledRates


def test_schedules_match_dropkit_compare() -> None:
    assert [RateSchedule("early", 3).factor(e) for e in range(5)] == [1, 1, 1, 0, 0]
    assert [RateSchedule("late", 3).factor(e) for e in range(5)] == [0, 0, 0, 1, 1]
    assert [RateSchedule().factor(e) for e in range(3)] == [1, 1, 1]
    with pytest.raises(ValueError, match="epochs applies to 'early' or 'late' only"):
        RateSchedule("constant", 2)
    with pytest.raises(ValueError, match="expected a finite factor >= 0"):
        RateSchedule(lambda epoch: -1.0).factor(0)


def test_each_layer_keeps_its_own_rate_and_state_restores_it() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 4), torch.nn.Dropout(0.1), torch.nn.LSTM(4, 4, 2, dropout=0.4)
    )
    rates = ScheduledRates(RateSchedule(lambda epoch: 0.5))
    rates.apply(model, 0)
    assert (model[1].p, model[2].dropout) == (0.05, 0.2)
    restored = ScheduledRates(RateSchedule(lambda epoch: 1.0))
    restored.load_state_dict(rates.state_dict())
    restored.apply(model, 1)  # from the saved rates, not from the model's halved ones
    assert (model[1].p, model[2].dropout) == (0.1, 0.4)
    with pytest.raises(ValueError, match=r"the dropout layers \['1', '2'\] of the saved schedule"):
        restored.apply(torch.nn.Sequential(torch.nn.Linear(4, 4)), 2)


def test_gathered_concatenates_every_process_in_rank_order(tmp_path) -> None:
    """Two CPU processes on gloo, holding different numbers of predictions."""
    script = tmp_path / "gather.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import torch
            import torch.distributed as dist
            import torch.multiprocessing as mp
            from dropkit.integrations._common import gathered

            def run(rank, init):
                dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
                probs, targets = gathered(torch.full((rank + 1, 2), float(rank)),
                                          torch.arange(rank + 1))
                assert probs.tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]], probs
                assert targets.tolist() == [0, 0, 1], targets
                dist.destroy_process_group()

            if __name__ == "__main__":
                mp.spawn(run, args=(f"file://{sys.argv[1]}",), nprocs=2)
                print("ok")
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "rendezvous")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
