"""Models people train, built from small configurations with random weights, for the benchmarks.

Hugging Face BERT and GPT-2, timm and torchvision models, each returned with an input batch in
the form its users pass it: a dict of keyword inputs for Hugging Face models, a tensor
otherwise. Nothing is downloaded. Weights and inputs come from torch's global RNG, so seed it
first for repeatable models. The libraries are optional and imported only when a model is
built; one that is missing or does not import raises :class:`ModelUnavailable` with a one-line
reason, for the caller to skip that model.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from dropkit._output import OutputSelector, model_output

__all__ = [
    "Inputs",
    "ModelUnavailable",
    "bert",
    "call",
    "gpt2",
    "main_output",
    "timm_model",
    "torchvision_model",
]

Inputs = torch.Tensor | dict[str, torch.Tensor]


class ModelUnavailable(Exception):
    """A model's library is not installed or does not import here; the message says which and
    why, in one line."""


def _load(library: str, *names: str) -> list[Any]:
    """``library``'s attributes ``names``, or :class:`ModelUnavailable` naming the library."""
    try:
        module = importlib.import_module(library)
        return [getattr(module, name) for name in names]
    except ImportError as error:
        # transformers imports lazily: a model class whose module fails (it may import
        # torchvision) raises here, at the attribute, with the cause chained.
        cause = error.__cause__ or error
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise ModelUnavailable(f"{library} does not import: {reason}") from error
    except RuntimeError as error:
        # torchvision built for another torch: "operator torchvision::nms does not exist".
        reason = str(error).splitlines()[0]
        raise ModelUnavailable(
            f"{library} does not import with torch {torch.__version__}: {reason}"
        ) from error


def bert(
    *,
    batch: int = 8,
    seq: int = 128,
    hidden: int = 256,
    layers: int = 4,
    heads: int = 4,
    intermediate: int = 1024,
    dropout: float = 0.1,
    attention: str = "sdpa",
    vocab: int = 1000,
) -> tuple[nn.Module, Inputs]:
    """Hugging Face ``BertForSequenceClassification`` (3 labels) and ``input_ids`` of
    ``batch`` x ``seq`` tokens; ``dropout`` is both the hidden and the attention-probability
    rate, ``attention`` the attention implementation (``"sdpa"`` or ``"eager"``)."""
    config_cls, model_cls = _load("transformers", "BertConfig", "BertForSequenceClassification")
    config = config_cls(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate, num_labels=3,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        max_position_embeddings=max(512, seq), attn_implementation=attention,
    )  # fmt: skip
    model = model_cls(config)
    return model, {"input_ids": torch.randint(0, vocab, (batch, seq))}


def gpt2(
    *,
    batch: int = 8,
    seq: int = 128,
    hidden: int = 256,
    layers: int = 4,
    heads: int = 4,
    dropout: float = 0.1,
    attention: str = "sdpa",
    vocab: int = 1000,
) -> tuple[nn.Module, Inputs]:
    """Hugging Face ``GPT2LMHeadModel`` (feed-forward 4 x ``hidden``) and ``input_ids`` of
    ``batch`` x ``seq`` tokens; ``dropout`` is the embedding, residual and attention rate."""
    config_cls, model_cls = _load("transformers", "GPT2Config", "GPT2LMHeadModel")
    config = config_cls(
        vocab_size=vocab, n_positions=max(1024, seq), n_embd=hidden, n_layer=layers,
        n_head=heads, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=0, eos_token_id=0, attn_implementation=attention,
    )  # fmt: skip
    model = model_cls(config)
    return model, {"input_ids": torch.randint(0, vocab, (batch, seq))}


def timm_model(
    name: str, *, batch: int = 8, size: int = 64, **kwargs: Any
) -> tuple[nn.Module, Inputs]:
    """``timm.create_model(name, pretrained=False, num_classes=10, **kwargs)`` and ``batch``
    random RGB images of ``size`` x ``size`` (a ViT also needs ``img_size=size``)."""
    (create_model,) = _load("timm", "create_model")
    model = create_model(name, pretrained=False, num_classes=10, **kwargs)
    return model, torch.randn(batch, 3, size, size)


def torchvision_model(
    name: str, *, batch: int = 8, size: int = 64, **kwargs: Any
) -> tuple[nn.Module, Inputs]:
    """``torchvision.models.<name>(num_classes=10, **kwargs)`` and ``batch`` random RGB
    images of ``size`` x ``size``."""
    (models,) = _load("torchvision", "models")
    model = getattr(models, name)(num_classes=10, **kwargs)
    return model, torch.randn(batch, 3, size, size)


def call(model: nn.Module, inputs: Inputs) -> Any:
    """Run ``model`` on ``inputs``: keyword inputs for a dict, one positional input otherwise."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def main_output(out: Any, output: OutputSelector = None) -> torch.Tensor:
    """The tensor a model's users read (:func:`dropkit._output.model_output`): ``logits`` of a
    Hugging Face output, else the output itself, or the first tensor of a tuple; ``output``
    names another part. Raises ``TypeError`` where there is no such tensor."""
    try:
        return model_output(out, output, where="main_output")
    except ValueError as error:
        raise TypeError(str(error)) from None
