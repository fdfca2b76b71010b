"""Dropout as functions: a drop-in for ``torch.nn.functional``'s dropouts, and every variant.

Positional arguments match :func:`torch.nn.functional.dropout` (``input, p=0.5, training=True,
inplace=False``); everything new is keyword-only. ``training`` defaults to True everywhere.
Every mask comes from the seeded Philox4x32-10 stream of :mod:`dropkit.kernels`, so
``seed=`` (or :func:`torch.manual_seed`) reproduces it on any device, and backward regenerates
it instead of storing it.

The building blocks the layers of :mod:`dropkit.nn` and the moment rules of :mod:`dropkit.mc`
share with these functions are public here too: :func:`check_p` (a rate checked and
normalized), :func:`small_dropout` (the small-tensor path of :func:`dropout`, with its one
entry check), :func:`inverted_scale` and :func:`alpha_constants` (the constants of inverted
and alpha dropout), :func:`relaxed_moments` (the moments of concrete dropout's factor),
:func:`check_block_options` and DropBlock's option types (``Gamma``, ``Placement``,
``BlockClip``, ``Rescale``).
"""

from dropkit.functional._attention import scaled_dot_product_attention
from dropkit.functional._autograd import alpha_constants, inverted_scale, small_dropout
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
    relaxed_moments,
)
from dropkit.functional._drop_block import (
    BlockClip,
    Gamma,
    Placement,
    Rescale,
    check_block_options,
    drop_block2d,
    drop_block3d,
)
from dropkit.functional._drop_path import drop_path, drop_path_rates, stochastic_depth
from dropkit.functional._elementwise import alpha_dropout, dropout, dropout_mask, gaussian_dropout
from dropkit.functional._fused import bias_dropout, bias_dropout_add
from dropkit.functional._validation import InputError, InputTypeError, check_p
from dropkit.functional._weight import dropconnect, embedding_dropout

__all__ = [
    "BlockClip",
    "Gamma",
    "InputError",
    "InputTypeError",
    "Placement",
    "Rescale",
    "alpha_constants",
    "alpha_dropout",
    "bias_dropout",
    "bias_dropout_add",
    "check_block_options",
    "check_p",
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
    "inverted_scale",
    "locked_dropout",
    "relaxed_moments",
    "scaled_dot_product_attention",
    "small_dropout",
    "stochastic_depth",
]
