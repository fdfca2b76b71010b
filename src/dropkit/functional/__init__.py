"""Dropout as functions: a drop-in for ``torch.nn.functional``'s dropouts, and every variant.

Positional arguments match :func:`torch.nn.functional.dropout` (``input, p=0.5, training=True,
inplace=False``); everything new is keyword-only. ``training`` defaults to True everywhere.
Every mask comes from the seeded Philox4x32-10 stream of :mod:`dropkit.kernels`, so
``seed=`` (or :func:`torch.manual_seed`) reproduces it on any device, and backward regenerates
it instead of storing it.
"""

from dropkit.functional._attention import scaled_dot_product_attention
from dropkit.functional._channel import (
    dropout1d,
    dropout2d,
    dropout3d,
    feature_alpha_dropout,
    locked_dropout,
)
from dropkit.functional._concrete import (
    concrete_dropout,
    concrete_dropout1d,
    concrete_dropout2d,
    concrete_dropout3d,
)
from dropkit.functional._drop_block import drop_block2d, drop_block3d
from dropkit.functional._drop_path import drop_path, drop_path_rates, stochastic_depth
from dropkit.functional._elementwise import alpha_dropout, dropout, dropout_mask, gaussian_dropout
from dropkit.functional._fused import bias_dropout, bias_dropout_add
from dropkit.functional._validation import InputError, InputTypeError
from dropkit.functional._weight import dropconnect, embedding_dropout

__all__ = [
    "InputError",
    "InputTypeError",
    "alpha_dropout",
    "bias_dropout",
    "bias_dropout_add",
    "concrete_dropout",
    "concrete_dropout1d",
    "concrete_dropout2d",
    "concrete_dropout3d",
    "drop_block2d",
    "drop_block3d",
    "drop_path",
    "drop_path_rates",
    "dropconnect",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "dropout_mask",
    "embedding_dropout",
    "feature_alpha_dropout",
    "gaussian_dropout",
    "locked_dropout",
    "scaled_dot_product_attention",
    "stochastic_depth",
]
