"""``predict``: Monte Carlo dropout predictions, by sampling or by moment propagation.

The arguments are checked here; :mod:`dropkit.mc._sampling` runs the S stochastic passes
(sharing the deterministic prefix) and :mod:`dropkit.mc._moments` the one pass of moment
propagation.
"""

from __future__ import annotations

import torch
from torch import nn

from dropkit._output import OutputSelector
from dropkit.mc._consistent import ConsistentMasks
from dropkit.mc._inputs import Inputs
from dropkit.mc._result import MCResult
from dropkit.mc._sampling import predict_sampling

__all__ = ["MCResult", "predict"]


def predict(
    model: nn.Module,
    inputs: Inputs,
    samples: int | None = None,
    *,
    batch_size: int | None = None,
    share_prefix: bool = True,
    seed: int | None = None,
    output: OutputSelector = None,
    method: str = "sampling",
    last_layer: bool = False,
    masks: ConsistentMasks | None = None,
    covariance: str | None = None,
) -> MCResult:
    """Monte Carlo dropout predictions of ``model`` on ``inputs``: ``samples`` stochastic passes.

    The model runs inside :func:`mc_mode` (eval mode, every stochastic op of train mode on)
    under ``torch.no_grad``. From Gal & Ghahramani, "Dropout as a Bayesian Approximation"
    (ICML 2016, https://arxiv.org/abs/1506.02142).

    Args:
        model: any model with dropout, as a module or a function call (a Hugging Face
            transformer, a timm or torchvision model, ``nn.Transformer``, an LSTM...).
        inputs: how the model is called: a tensor ``model(x)``, a tuple of positional inputs
            ``model(*inputs)``, or a dict of keyword inputs ``model(**inputs)`` (e.g. a
            tokenizer's output). The batch is dim 0 of every tensor in it.
        samples: the number of passes S. Default: 30, or the networks of ``masks``.
        batch_size: run at most this many inputs at once (memory grows with S * batch_size;
            on the CPU, samples are also split into passes of at most
            :data:`~dropkit.mc._sampler.REPLICATED_ELEMENTS` replicated elements, see the notes
            of :mod:`dropkit.mc._sampling`).
        share_prefix: compute the part before the first stochastic op once (see the notes of
            :mod:`dropkit.mc._sampling`); otherwise replicate the input S times.
        seed: makes the result reproducible: torch's global RNG is seeded with it for the
            call and put back as it was afterwards. Without a seed (the default) they are
            drawn from torch's global RNG, which they advance, as torch's random ops do: every
            call gives fresh samples, and ``torch.manual_seed`` makes a sequence of calls
            repeat.
        output: what to sample when the model returns more than a tensor: a key (mapping or
            ``ModelOutput``), an index (tuple), or a function of the output. Default: the
            tensor itself, ``"logits"`` of a mapping, the first element of a tuple.
        method: ``"sampling"`` (S stochastic passes) or ``"moments"``: one pass that carries
            each activation's mean and variance through the network (Wang & Manning, "Fast
            dropout training", ICML 2013; Brach, Sick & Duerr, "Single Shot MC Dropout
            Approximation", https://arxiv.org/abs/2007.03293), then ``samples`` draws from the
            resulting Gaussian over the outputs, from which the scores are computed; the result
            is a :class:`MomentResult` whose ``mean`` and ``variance`` are the propagated ones.
            Ops without a rule raise ``NotImplementedError``. See docs/uncertainty.md.
        covariance: for ``method="moments"``: ``"diagonal"`` (the default) treats every unit
            as independent; ``"lowrank"`` also carries the covariance between units as a
            low-rank factor through dense layers, dropout, activations, sums and LayerNorm, so
            that a layer summing units that share upstream masks gets their cross terms (about
            MC's logit variance on the benchmark MLPs, where the diagonal gets 0.5-0.75 of it),
            at a cost that grows with width x sources (slower than ``samples=30`` sampling on
            a 256-128 MLP); convolution maps, layers whose factor would be too big and ops
            without a covariance rule stay diagonal, and are named in ``result.covariance``.
        last_layer: Monte Carlo with only the last stochastic module that runs switched on,
            every other dropout off (torch-uncertainty's ``last_layer=True``; see
            :func:`enable_mc`). Default: False.
        masks: a :class:`ConsistentMasks`: the S networks it holds, drawn once and kept, so
            that sample s of every input in every call comes from one network s (strategy
            ``"consistent"``: one pass on the input replicated S times, or one pass per
            network where a mask is on a weight). Default: fresh masks for every call.

    Returns:
        An :class:`MCResult` with ``samples`` of shape ``[S, N, ...]`` and the strategy used.

    Raises:
        ValueError: nothing stochastic runs in the model's train-mode forward (naming the
            model), or bad arguments.

    Example:
        >>> import torch
        >>> from dropkit import mc
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(),
        ...                             torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))
        >>> result = mc.predict(model, torch.randn(5, 4), samples=8, seed=0)
        >>> result.samples.shape, result.probs.shape, result.strategy
        (torch.Size([8, 5, 3]), torch.Size([5, 3]), 'shared-prefix')
    """
    if masks is not None:
        if not isinstance(masks, ConsistentMasks):
            raise TypeError(
                f"predict: expected masks to be a ConsistentMasks, got {type(masks).__name__}"
            )
        if samples is not None and samples != masks.samples:
            raise ValueError(
                f"predict: samples={samples!r} but masks holds {masks.samples} networks; leave "
                f"samples out or pass samples={masks.samples}"
            )
        samples = masks.samples
    samples = 30 if samples is None else samples
    if method == "moments":
        from dropkit.mc._moments import predict_moments

        if not isinstance(inputs, torch.Tensor) or output is not None:
            raise ValueError(
                "predict: method='moments' takes a single tensor input and the model's tensor "
                "output; use method='sampling' for tuple or keyword inputs and output="
            )
        if last_layer or masks is not None:
            raise ValueError(
                "predict: last_layer= and masks= are options of method='sampling'; "
                "method='moments' propagates every dropout's moments"
            )
        return predict_moments(
            model,
            inputs,
            samples,
            batch_size=batch_size,
            seed=seed,
            covariance="diagonal" if covariance is None else covariance,
        )
    if covariance is not None:
        raise ValueError(
            "predict: covariance= is an option of method='moments'; sampling's samples carry "
            "the covariance already"
        )
    if method != "sampling":
        raise ValueError(f"predict: expected method 'sampling' or 'moments', got {method!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"predict: expected samples to be a positive int, got {samples!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"predict: expected batch_size >= 1 or None, got {batch_size!r}")
    return predict_sampling(
        model,
        inputs,
        samples,
        batch_size=batch_size,
        share_prefix=share_prefix,
        seed=seed,
        output=output,
        last_layer=last_layer,
        masks=masks,
    )
