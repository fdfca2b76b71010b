"""The model's output: which part of what a model returns its users read.

Models return a tensor, a tuple (``nn.LSTM``'s ``(output, (h, c))``, ``nn.MultiheadAttention``'s
``(output, weights)``, a ``(logits, aux)`` pair), a mapping or a Hugging Face ``ModelOutput``
(a mapping too). :func:`model_output` is the one rule every part of dropkit applies (Monte Carlo
sampling, the doctor, the experiments); a caller can also name the part with ``output=``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, overload

import torch

__all__ = ["OutputSelector", "model_output"]

#: How a caller names the output: a key (mapping or ``ModelOutput``), an index (tuple), a
#: function of the output, or None for the rule of :func:`model_output`.
OutputSelector = int | str | Callable[[Any], torch.Tensor] | None


@overload
def model_output(
    out: object,
    output: OutputSelector = None,
    *,
    where: str = "model_output",
    strict: Literal[True] = True,
) -> torch.Tensor: ...


@overload
def model_output(
    out: object,
    output: OutputSelector = None,
    *,
    where: str = "model_output",
    strict: Literal[False],
) -> Any: ...


def model_output(
    out: object,
    output: OutputSelector = None,
    *,
    where: str = "model_output",
    strict: bool = True,
) -> Any:
    """The part of a model's output that its users read.

    With ``output`` given: ``output(out)`` for a function, else ``out[output]`` (a key of a
    mapping or ``ModelOutput``, an index of a tuple). Otherwise: a tensor itself; ``"logits"`` of
    a mapping; the first element of a tuple or list, read by the same rule.

    Args:
        out: what the model returned.
        output: the part to read (see above); None for the rule.
        where: the caller, named in error messages (``"predict"``).
        strict: the result must be a tensor: raise ``ValueError`` (naming ``output=``) for a
            mapping without ``"logits"`` or a part that is not a tensor. With ``strict=False``
            nothing raises: a mapping without ``"logits"`` gives its first value that is not
            None (None if there is none), and anything else is returned as it is.

    Returns:
        The tensor (``strict``), or the part found.

    Raises:
        ValueError: ``output`` is not in ``out``, or (``strict``) no tensor was found.

    Example:
        >>> import torch
        >>> from dropkit._output import model_output
        >>> logits = torch.zeros(2, 3)
        >>> model_output((logits, torch.ones(2))) is logits
        True
        >>> model_output({"loss": torch.tensor(0.5), "logits": logits}) is logits
        True
        >>> model_output({"hidden": logits}, "hidden") is logits
        True
        >>> model_output({"hidden": logits}, strict=False) is logits
        True
    """
    if output is None:
        picked = out if isinstance(out, torch.Tensor) else _by_rule(out, where, strict)
    elif callable(output):
        picked = output(out)
    else:
        try:
            picked = out[output]  # type: ignore[index]
        except (KeyError, IndexError, TypeError) as error:
            raise ValueError(
                f"{where}: output={output!r} is not in the model's output "
                f"({type(out).__name__}): {error}"
            ) from None
    if strict and not isinstance(picked, torch.Tensor):
        raise ValueError(
            f"{where}: the selected output is a {type(picked).__name__}, not a tensor; "
            "pass output= (a key, an index or a function) to choose a tensor"
        )
    return picked


def _by_rule(out: object, where: str, strict: bool) -> Any:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        if "logits" in out:
            return out["logits"]
        if strict:
            raise ValueError(
                f"{where}: the model returned a {type(out).__name__} without 'logits' (keys: "
                f"{list(out)}); choose the tensor to read with output=, e.g. "
                f"output={next(iter(out), 'key')!r}"
            )
        values = [v for v in out.values() if v is not None]
        return _by_rule(values[0], where, strict) if values else None
    if isinstance(out, list | tuple) and out:
        first = out[0]
        return (
            _by_rule(first, where, strict) if isinstance(first, Mapping | list | tuple) else first
        )
    if strict:
        raise ValueError(
            f"{where}: cannot read a tensor from a {type(out).__name__} output; pass output= "
            "(a key, an index or a function) to choose one"
        )
    return out
