"""A zoo of stock models, built from small configurations with random weights (nothing is
downloaded), each with an example input in the form its users pass it.

Every :class:`Case` builds its model with torch's RNG seeded and makes its input from a seeded
generator, so two calls give equal models and equal inputs. The input is a tensor, a tuple of
positional inputs, or a dict of keyword inputs (Hugging Face models); :func:`call` runs a model
on it and :func:`main_output` picks the tensor to compare (``logits`` of a ``ModelOutput``, the
first element of a tuple).

The libraries are optional. Hugging Face models run in the test environment
(``requirements/test.txt``); timm and torchvision need a torchvision built for the installed torch,
which PyPI has only for CUDA builds, so they run in an environment of their own
(``requirements/vision.txt``, made by ``.ci/run``). A test that needs them carries
``@pytest.mark.vision`` and gets them from :func:`import_torchvision` or :func:`import_timm`: where
the library does not import the test skips with the reason, or fails under
``DROPKIT_REQUIRE_VISION=1`` (the vision environment of CI), and an unmarked caller fails, so
that no vision test can be skipped everywhere.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

__all__ = [
    "CASES",
    "Case",
    "call",
    "case_params",
    "current_test_is_vision",
    "import_timm",
    "import_torchvision",
    "import_transformers",
    "main_output",
]

BATCH = 4
VISION_LIBRARIES = frozenset({"timm", "torchvision"})


# Set by the suite's conftest before each test: whether it carries ``@pytest.mark.vision``.
current_test_is_vision: list[bool] = [False]


def _import_vision(name: str) -> ModuleType:
    """``import name`` for a vision test, or skip it (fail in CI's vision environment)."""
    if not current_test_is_vision[0]:
        pytest.fail(
            f"this test imports {name}: mark it @pytest.mark.vision, so that CI runs it in the "
            "vision environment (requirements/vision.txt)",
            pytrace=False,
        )
    try:
        return importlib.import_module(name)
    except (ImportError, RuntimeError) as error:  # RuntimeError: built for another torch
        reason = f"{name} does not import: {error}"
        if os.environ.get("DROPKIT_REQUIRE_VISION") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def import_torchvision() -> ModuleType:
    """``import torchvision`` in a ``vision`` test, or skip it with the reason."""
    return _import_vision("torchvision")


def import_timm() -> ModuleType:
    """``import timm`` in a ``vision`` test, or skip it with the reason."""
    return _import_vision("timm")


def import_transformers() -> ModuleType:
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return transformers


@dataclass(frozen=True)
class Case:
    """One stock model and how users call it.

    ``stochastic``: something random runs in training mode (dropout in any form).
    ``batchnorm``: the model holds BatchNorm layers (Monte Carlo must leave them in eval).
    ``slow``: building or running it takes more than a second or so on one core.
    ``findings``: the doctor's warnings that are right for the stock recipe (DenseNet drops
    convolutional maps element-wise, and the dropped features are concatenated into the next
    layer's BatchNorm); every other case must come out with no error and no warning.
    """

    name: str
    library: str  # "transformers", "timm", "torchvision" or "torch"
    make: Callable[[], nn.Module]
    make_input: Callable[[torch.Generator], Any]
    stochastic: bool = True
    batchnorm: bool = False
    slow: bool = False
    findings: frozenset[str] = frozenset()

    def build(self) -> nn.Module:
        """The model, in eval mode, with the same random weights on every call."""
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = self.make()
        return model.eval()

    def example(self, seed: int = 0) -> Any:
        """The example input (a tensor, a tuple or a dict), the same for the same seed."""
        return self.make_input(torch.Generator().manual_seed(seed))


def call(model: nn.Module, inputs: Any) -> Any:
    """Run ``model`` on an example input: keyword inputs for a dict, positional for a tuple."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def main_output(out: Any) -> torch.Tensor:
    """The tensor that the model's users read: ``logits`` of a mapping, else the first tensor."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        if "logits" in out:
            return out["logits"]  # type: ignore[no-any-return]
        return main_output(next(iter(out.values())))
    if isinstance(out, tuple | list):
        return main_output(out[0])
    raise TypeError(f"main_output: no tensor in a {type(out).__name__}")


# ---------------------------------------------------------------------------------------- inputs

VOCAB = 100
SEQ = 12


def _tokens(g: torch.Generator) -> torch.Tensor:
    return torch.randint(3, VOCAB, (BATCH, SEQ), generator=g)


def _text(g: torch.Generator) -> dict[str, torch.Tensor]:
    ids = _tokens(g)
    mask = torch.ones_like(ids)
    mask[-1, -3:] = 0  # one padded sequence, as a tokenizer gives for a batch
    return {"input_ids": ids, "attention_mask": mask}


def _seq2seq(g: torch.Generator) -> dict[str, torch.Tensor]:
    return {**_text(g), "decoder_input_ids": torch.randint(3, VOCAB, (BATCH, 6), generator=g)}


def _pixels(g: torch.Generator) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(BATCH, 3, 16, 16, generator=g)}


def _image(size: int) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda g: torch.randn(BATCH, 3, size, size, generator=g)


def _sequence(g: torch.Generator) -> torch.Tensor:
    return torch.randn(BATCH, 10, 16, generator=g)


def _pair(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(BATCH, 10, 32, generator=g), torch.randn(BATCH, 7, 32, generator=g)


def _qkv(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.randn(BATCH, 10, 32, generator=g)
    return q, q, q


# ---------------------------------------------------------------------------------- transformers

_TINY = {"vocab_size": VOCAB, "num_hidden_layers": 2, "num_attention_heads": 2}
_BERT_LIKE = {**_TINY, "hidden_size": 32, "intermediate_size": 64, "max_position_embeddings": 64}


def _hf(config_name: str, model_name: str, **config: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        transformers = import_transformers()
        cfg = getattr(transformers, config_name)(**config)
        return getattr(transformers, model_name)(cfg)  # type: ignore[no-any-return]

    return make


def _t5() -> nn.Module:
    return _hf(
        "T5Config",
        "T5ForConditionalGeneration",
        vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
        decoder_start_token_id=0,
    )()  # fmt: skip


_LLAMA_LIKE = {
    "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64,
    "attention_dropout": 0.1, "pad_token_id": 0,
}  # fmt: skip

TRANSFORMERS = [
    Case("bert", "transformers",
         _hf("BertConfig", "BertForSequenceClassification", **_BERT_LIKE), _text),
    Case("bert-eager", "transformers",
         _hf("BertConfig", "BertForSequenceClassification", attn_implementation="eager",
             **_BERT_LIKE), _text),
    Case("roberta", "transformers",
         _hf("RobertaConfig", "RobertaForSequenceClassification", pad_token_id=1,
             **{**_BERT_LIKE, "max_position_embeddings": 66}), _text),
    Case("distilbert", "transformers",
         _hf("DistilBertConfig", "DistilBertForSequenceClassification", vocab_size=VOCAB,
             dim=32, hidden_dim=64, n_layers=2, n_heads=2, max_position_embeddings=64), _text),
    Case("albert", "transformers",
         _hf("AlbertConfig", "AlbertForSequenceClassification", embedding_size=16,
             hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, **_BERT_LIKE), _text),
    Case("electra", "transformers",
         _hf("ElectraConfig", "ElectraForSequenceClassification", embedding_size=16,
             **_BERT_LIKE), _text),
    Case("gpt2", "transformers",
         _hf("GPT2Config", "GPT2LMHeadModel", vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2,
             n_positions=64, bos_token_id=0, eos_token_id=0), _text),
    Case("t5", "transformers", _t5, _seq2seq),
    Case("bart", "transformers",
         _hf("BartConfig", "BartForConditionalGeneration", vocab_size=VOCAB, d_model=32,
             encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
             decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
             max_position_embeddings=64, attention_dropout=0.1, activation_dropout=0.1),
         _seq2seq),
    Case("llama", "transformers", _hf("LlamaConfig", "LlamaForCausalLM", **_LLAMA_LIKE), _text),
    Case("mistral", "transformers",
         _hf("MistralConfig", "MistralForCausalLM", sliding_window=8, **_LLAMA_LIKE), _text),
    Case("vit-hf", "transformers",
         _hf("ViTConfig", "ViTForImageClassification", image_size=16, patch_size=4,
             hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, num_labels=10),
         _pixels),
    Case("whisper", "transformers",
         _hf("WhisperConfig", "WhisperForConditionalGeneration", vocab_size=VOCAB,
             num_mel_bins=8, d_model=32, encoder_layers=1, decoder_layers=1,
             encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
             decoder_ffn_dim=64, max_source_positions=16, max_target_positions=32,
             dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
             pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1),
         lambda g: {"input_features": torch.randn(BATCH, 8, 32, generator=g),
                    "decoder_input_ids": torch.randint(3, VOCAB, (BATCH, 6), generator=g)}),
]  # fmt: skip


# ------------------------------------------------------------------------------------------ timm


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        timm = import_timm()
        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)  # type: ignore[no-any-return]

    return make


TIMM = [
    Case("timm-vit", "timm",
         _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=32,
               num_heads=2, drop_rate=0.1, proj_drop_rate=0.1, attn_drop_rate=0.1,
               drop_path_rate=0.1), _image(32)),
    Case("timm-resnet", "timm",
         _timm("resnet18", drop_rate=0.2, drop_path_rate=0.1, drop_block_rate=0.1),
         _image(64), batchnorm=True),
    Case("timm-convnext", "timm",
         _timm("convnext_atto", drop_rate=0.2, drop_path_rate=0.1), _image(32)),
    Case("timm-efficientnet", "timm",
         _timm("efficientnet_b0", drop_rate=0.2, drop_path_rate=0.1), _image(32),
         batchnorm=True, slow=True),
    Case("timm-densenet", "timm",
         _timm("densenet121", growth_rate=8, block_config=(2, 2, 2, 2), drop_rate=0.2),
         _image(32), batchnorm=True),
]  # fmt: skip


# ----------------------------------------------------------------------------------- torchvision


def _tv_resnet() -> nn.Module:
    return import_torchvision().models.resnet18(num_classes=10)  # type: ignore[no-any-return]


def _tv_vgg() -> nn.Module:
    return import_torchvision().models.vgg11_bn(num_classes=10)  # type: ignore[no-any-return]


def _tv_densenet() -> nn.Module:
    models = import_torchvision().models
    return models.DenseNet(  # type: ignore[no-any-return]
        growth_rate=8, block_config=(2, 2), num_init_features=16, drop_rate=0.1, num_classes=10
    )


def _tv_efficientnet() -> nn.Module:
    return import_torchvision().models.efficientnet_b0(num_classes=10)  # type: ignore[no-any-return]


def _tv_convnext() -> nn.Module:
    convnext = import_torchvision().models.convnext
    stages = [convnext.CNBlockConfig(16, 32, 2), convnext.CNBlockConfig(32, None, 2)]
    return convnext.ConvNeXt(stages, stochastic_depth_prob=0.2, num_classes=10)  # type: ignore[no-any-return]


def _tv_swin() -> nn.Module:
    swin = import_torchvision().models.swin_transformer
    return swin.SwinTransformer(  # type: ignore[no-any-return]
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 2],
        window_size=[4, 4],
        dropout=0.1,
        attention_dropout=0.1,
        stochastic_depth_prob=0.2,
        num_classes=10,
    )


def _tv_vit() -> nn.Module:
    vit = import_torchvision().models.vision_transformer
    return vit.VisionTransformer(  # type: ignore[no-any-return]
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        dropout=0.1,
        attention_dropout=0.1,
        num_classes=10,
    )


def _tv_mobilenet() -> nn.Module:
    return import_torchvision().models.mobilenet_v3_small(num_classes=10)  # type: ignore[no-any-return]


TORCHVISION = [
    Case("tv-resnet", "torchvision", _tv_resnet, _image(32), stochastic=False, batchnorm=True),
    Case("tv-vgg", "torchvision", _tv_vgg, _image(32), batchnorm=True, slow=True),
    Case("tv-densenet", "torchvision", _tv_densenet, _image(32), batchnorm=True,
         findings=frozenset({"DK003", "DK005"})),
    Case("tv-efficientnet", "torchvision", _tv_efficientnet, _image(32), batchnorm=True,
         slow=True),
    Case("tv-convnext", "torchvision", _tv_convnext, _image(32)),
    Case("tv-swin", "torchvision", _tv_swin, _image(32)),
    Case("tv-vit", "torchvision", _tv_vit, _image(32)),
    Case("tv-mobilenet", "torchvision", _tv_mobilenet, _image(32), batchnorm=True),
]  # fmt: skip


# -------------------------------------------------------------------------------------- torch.nn


class _Classifier(nn.Module):
    """An RNN and a linear head on its last step, the way an RNN is usually wired."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])  # type: ignore[no-any-return]


TORCH = [
    Case("nn-transformer", "torch",
         lambda: nn.Transformer(32, 2, 1, 1, 64, dropout=0.1, batch_first=True), _pair),
    Case("nn-transformer-encoder", "torch",
         lambda: nn.TransformerEncoder(
             nn.TransformerEncoderLayer(32, 2, 64, dropout=0.1, batch_first=True), 2,
             enable_nested_tensor=False),
         lambda g: torch.randn(BATCH, 10, 32, generator=g)),
    Case("nn-lstm", "torch",
         lambda: _Classifier(nn.LSTM(16, 24, num_layers=2, dropout=0.2, batch_first=True)),
         _sequence),
    Case("nn-gru", "torch",
         lambda: _Classifier(nn.GRU(16, 24, num_layers=2, dropout=0.2, batch_first=True)),
         _sequence),
    Case("nn-mha", "torch",
         lambda: nn.MultiheadAttention(32, 2, dropout=0.1, batch_first=True), _qkv),
]  # fmt: skip

CASES: list[Case] = [*TRANSFORMERS, *TIMM, *TORCHVISION, *TORCH]


def case_params(cases: list[Case] | None = None) -> list[Any]:
    """``pytest.param`` per case, id'd by name, marked ``slow`` where it is and ``vision`` for
    timm's and torchvision's models."""
    return [
        pytest.param(
            case,
            id=case.name,
            marks=[
                *([pytest.mark.slow] if case.slow else []),
                *([pytest.mark.vision] if case.library in VISION_LIBRARIES else []),
            ],
        )
        for case in (CASES if cases is None else cases)
    ]
