"""Dropout under data-parallel training and activation checkpointing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.checkpoint import checkpoint

import dropkit.functional as F
from dropkit import nn

WORKER = textwrap.dedent(
    """
    import gc, hashlib, torch, torch.distributed as dist
    import dropkit.functional as F
    from dropkit import nn

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same on every rank, as data-parallel scripts do
    mask = (F.dropout(torch.ones(4096), 0.5) != 0).to(torch.uint8)
    explicit = (F.dropout(torch.ones(4096), 0.5, seed=7) != 0).to(torch.uint8)
    torch.manual_seed(0)  # the same draw again, on the small-tensor path this time
    recorded = (F.dropout(torch.ones(4096, requires_grad=True), 0.5) != 0).to(torch.uint8)
    torch.manual_seed(0)  # and once more, now that this thread's seed cell exists
    again = (F.dropout(torch.ones(4096, requires_grad=True), 0.5) != 0).to(torch.uint8)
    same_small = torch.tensor([int(torch.equal(recorded, mask) and torch.equal(again, mask))])
    dist.all_reduce(same_small)
    masks = [torch.empty_like(mask) for _ in range(dist.get_world_size())]
    dist.all_gather(masks, mask)
    explicit_masks = [torch.empty_like(explicit) for _ in range(dist.get_world_size())]
    dist.all_gather(explicit_masks, explicit)

    # A DDP training step with dropkit layers works and keeps replicas in sync.
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(8, 16), nn.Dropout(0.5), torch.nn.Linear(16, 1))
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    weights = [torch.empty_like(model.module[0].weight) for _ in range(dist.get_world_size())]
    dist.all_gather(weights, model.module[0].weight.detach())

    # mc.predict(seed=) gives every rank the same samples (ranks scoring one pool agree).
    from dropkit import mc
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Dropout(0.5), torch.nn.Linear(32, 3))
    probs = mc.predict(net.eval(), torch.randn(6, 8), 4, seed=3).sample_probs.contiguous()
    all_probs = [torch.empty_like(probs) for _ in range(dist.get_world_size())]
    dist.all_gather(all_probs, probs)
    if rank == 0:
        print("ranks differ", not torch.equal(masks[0], masks[1]))
        print("explicit seed same", torch.equal(explicit_masks[0], explicit_masks[1]))
        print("small path same mask", int(same_small) == dist.get_world_size())
        print("replicas in sync", torch.equal(weights[0], weights[1]))
        print("mc seed same", torch.equal(all_probs[0], all_probs[1]))
        print("digest", hashlib.sha256(torch.cat(masks).numpy().tobytes()).hexdigest(), flush=True)
    # Release DDP (its reducer holds the process group) and let both ranks finish before
    # either tears gloo down; otherwise a rank can abort at exit ("terminate called...").
    del model, opt
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_two_ranks() -> dict[str, str]:
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [proc.communicate(timeout=180) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
    # Rank 0 prints "<name> <value>" lines.
    return dict(line.rsplit(" ", 1) for line in outputs[0][0].splitlines())


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_data_parallel_ranks_draw_different_masks_reproducibly() -> None:
    first = _run_two_ranks()
    assert first["ranks differ"] == "True"
    assert first["explicit seed same"] == "True"
    assert first["small path same mask"] == "True"
    assert first["replicas in sync"] == "True"
    assert first["mc seed same"] == "True"
    second = _run_two_ranks()
    assert second["digest"] == first["digest"]


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_activation_checkpointing_recomputes_the_same_mask(use_reentrant) -> None:
    torch.manual_seed(0)
    block = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), nn.Dropout(0.5), torch.nn.Linear(64, 32)
    )
    x = torch.randn(16, 32, requires_grad=True)
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(1)
        out = checkpoint(block, x, use_reentrant=use_reentrant) if checkpointed else block(x)
        out.square().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in block.parameters()])
        x.grad = None
        block.zero_grad(set_to_none=True)
    for plain, recomputed in zip(*grads, strict=True):
        assert torch.equal(plain, recomputed)


def test_checkpointing_functional_dropout_and_drop_path() -> None:
    def branch(t: torch.Tensor) -> torch.Tensor:
        return F.drop_path(torch.tanh(F.dropout(t, 0.3)), 0.5)

    x = torch.randn(8, 12, requires_grad=True)
    torch.manual_seed(3)
    branch(x).sum().backward()
    plain = x.grad.clone()
    x.grad = None
    torch.manual_seed(3)
    checkpoint(branch, x, use_reentrant=False).sum().backward()
    assert torch.equal(plain, x.grad)


THREADED_RANKS = textwrap.dedent(
    """
    import threading, torch, torch.distributed as dist
    import dropkit.functional as F  # imported before the threaded group replaces c10d's world
    from torch.testing._internal.distributed import multi_threaded_pg

    multi_threaded_pg._install_threaded_pg()
    torch._C._distributed_c10d._set_thread_isolation_mode(True)
    store, results, barrier = dist.HashStore(), {}, threading.Barrier(2)

    def rank_fn(rank):
        dist.init_process_group("threaded", rank=rank, world_size=2, store=store)
        x = torch.ones(64, requires_grad=True)
        F.dropout(x, 0.5)  # this thread's seed cell exists now: the calls below are not its first
        for turn in range(2):
            barrier.wait()
            if turn == rank:  # one rank at a time on the shared default generator
                torch.manual_seed(0)
                small = F.dropout(x, 0.5) != 0
                torch.manual_seed(0)
                drawn = int(torch.randint(0, 2**62, ()))
                explicit = F.dropout(x, 0.5, seed=(drawn + rank * 0x9E3779B97F4A7C15) % 2**64)
                results[rank] = (small, torch.equal(small, explicit != 0))
        barrier.wait()

    threads = [threading.Thread(target=rank_fn, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(results[0][1], results[1][1], not torch.equal(results[0][0], results[1][0]))
    """
)


def test_a_process_group_installed_after_import_is_seen() -> None:
    # torch's threaded test groups replace distributed_c10d's world object; dropkit reads it at
    # every call, so ranks still fold their rank into the seed.
    pytest.importorskip("torch.testing._internal.distributed.multi_threaded_pg")
    done = subprocess.run(
        [sys.executable, "-c", THREADED_RANKS],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True", "True"]
