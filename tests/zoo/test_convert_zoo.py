"""convert on stock models: eval outputs bit for bit, finite gradients, and the swapped layers
drop what their rates say."""

from __future__ import annotations

import math
import warnings

import torch
import zoo_models

import dropkit
from dropkit import nn as dk_nn


def _convert(model: torch.nn.Module, x: object = None):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "convert: found no dropout layer")
        return dropkit.convert(model, x, return_report=True)


def _dropkit_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if type(m).__module__.startswith("dropkit.")]


def test_convert_keeps_eval_outputs_bit_for_bit_and_trains(zoo_case) -> None:
    model = zoo_case.build()
    x = zoo_case.example()
    converted, report = _convert(model, x)
    assert len(_dropkit_layers(converted)) == report.count + sum(report.never_ran.values())
    assert not _dropkit_layers(model)
    with torch.no_grad():
        expected = zoo_models.main_output(zoo_models.call(model, x))
        got = zoo_models.main_output(zoo_models.call(converted, x))
    assert torch.equal(got, expected)

    converted.train()
    torch.manual_seed(0)
    zoo_models.main_output(zoo_models.call(converted, x)).float().square().mean().backward()
    grads = [p.grad for p in converted.parameters() if p.grad is not None]
    assert grads
    assert all(torch.isfinite(g).all() for g in grads)


def test_swapped_layers_drop_at_their_rate(zoo_case) -> None:
    """Over every swapped layer that runs: the dropped count of elements (Dropout) or samples
    (DropPath) is binomial with the layer's rate; 5 standard deviations is a one-in-a-million
    false alarm. A DropBlock (timm's ResNet) scales what it keeps by the batch's kept fraction;
    its rate is compared with the stock layer's in ``tests/test_convert.py``."""
    converted, report = _convert(zoo_case.build(), zoo_case.example())
    tally = {"element": [0.0, 0.0, 0.0], "sample": [0.0, 0.0, 0.0]}  # dropped, mean, variance
    inputs: dict[int, torch.Tensor] = {}
    ran = []

    def before(module, args):
        if module.p > 0:  # inplace layers overwrite their input
            inputs[id(module)] = args[0].detach().clone()

    def after(module, args, out):
        ran.append(module)
        if module.p == 0:
            return
        x, p = inputs.pop(id(module)), module.p
        # what convert makes (from timm's layers, a subclass that only adds timm's names)
        assert isinstance(module, dk_nn.Dropout | dk_nn.DropPath | dk_nn.DropBlock2d), module
        assert type(module).forward in (dk_nn.Dropout.forward, dk_nn.DropPath.forward,
                                        dk_nn.DropBlock2d.forward), module  # fmt: skip
        if isinstance(module, dk_nn.DropBlock2d):
            _check_block(module, x, out.detach())
            return
        if isinstance(module, dk_nn.DropPath):
            kind, live = "sample", x.flatten(1).ne(0).any(1)
            gone = out.detach().flatten(1).eq(0).all(1) & live
        else:
            kind, live = "element", x.ne(0)
            gone = out.detach().eq(0) & live
        n = int(live.sum())
        tally[kind][0] += int(gone.sum())
        tally[kind][1] += n * p
        tally[kind][2] += n * p * (1 - p)

    for m in _dropkit_layers(converted):
        m.register_forward_pre_hook(before)
        m.register_forward_hook(after)
    converted.train()
    torch.manual_seed(1)
    with torch.no_grad():
        for seed in range(3):
            zoo_models.call(converted, zoo_case.example(seed))
    for kind, (dropped, mean, variance) in tally.items():
        assert abs(dropped - mean) <= 5 * math.sqrt(variance) + 1e-9, (kind, dropped, mean)
    # The report counts the layers that ran, and every one of them ran here (ResNet's
    # zero-initialized last BatchNorm of a block feeds its DropPath zeros: the tally cannot say).
    assert len({id(m) for m in ran}) == report.count


def _check_block(module: dk_nn.DropBlock2d, x: torch.Tensor, out: torch.Tensor) -> None:
    """What a DropBlock converted from timm's does: drop whole positions of a sample (all
    channels at once when coupled) and multiply the rest by ``numel / (eps + kept)``."""
    assert module.rescale == "batch"
    assert not module.with_noise
    kept = out.ne(0) | x.eq(0)
    if module.couple_channels:
        kept = kept.any(1, keepdim=True)
    scale = kept.numel() / (module.eps + int(kept.sum()))
    torch.testing.assert_close(out, torch.where(kept, x * scale, torch.zeros_like(x)))
