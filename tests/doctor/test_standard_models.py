"""Standard architectures come out clean; a mistake planted in one is found.

BERT and GPT-2 are built from configurations with the transformers library (no downloads).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dropkit import nn as dk_nn
from dropkit.doctor import check

transformers = pytest.importorskip("transformers")

SMALL = {"vocab_size": 100, "num_hidden_layers": 2, "num_attention_heads": 2}


def _bert() -> nn.Module:
    config = transformers.BertConfig(
        hidden_size=32, intermediate_size=64, max_position_embeddings=64, **SMALL
    )
    return transformers.BertModel(config)


def _gpt2(**overrides: float) -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64,
        bos_token_id=0, eos_token_id=0, **overrides,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


class ViTBlock(nn.Module):
    def __init__(self, dim: int, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, dropout=0.1, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(0.1), nn.Linear(2 * dim, dim)
        )
        self.drop_path = dk_nn.DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 32, 4, stride=4)
        self.blocks = nn.Sequential(*(ViTBlock(32, p) for p in dk_nn.drop_path_rates(0.1, 3)))
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.blocks(tokens).mean(1))


@pytest.mark.parametrize(
    ("make", "x"),
    [
        (_bert, torch.randint(0, 100, (2, 10))),
        (_gpt2, torch.randint(0, 100, (2, 10))),
        (ViT, torch.randn(2, 3, 16, 16)),
    ],
    ids=["bert", "gpt2", "vit-droppath"],
)
def test_standard_models_have_no_errors_or_warnings(make, x) -> None:
    report = check(make(), x)
    assert report.ok, report.findings


def test_a_planted_mistake_in_gpt2_is_found() -> None:
    report = check(_gpt2(resid_pdrop=0.7), torch.randint(0, 100, (2, 10)))
    assert "DK004" in report.codes()
    assert any(f.where.endswith("resid_dropout") for f in report.findings)
