"""Dropout layers: a drop-in for ``torch.nn``'s dropouts, and every variant, over the functions."""

from dropkit.functional import drop_path_rates
from dropkit.nn._concrete import (
    ConcreteDropout,
    ConcreteDropout1d,
    ConcreteDropout2d,
    ConcreteDropout3d,
    concrete,
    regularization,
)
from dropkit.nn._dropout import (
    AlphaDropout,
    DropBlock2d,
    DropBlock3d,
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    DropPath,
    FeatureAlphaDropout,
    GaussianDropout,
    LockedDropout,
)
from dropkit.nn._fused import BiasDropoutAdd
from dropkit.nn._peers import with_peer_names
from dropkit.nn._weight import EmbeddingDropout, WeightDrop, add_dropconnect, remove_dropconnect

__all__ = [
    "AlphaDropout",
    "BiasDropoutAdd",
    "ConcreteDropout",
    "ConcreteDropout1d",
    "ConcreteDropout2d",
    "ConcreteDropout3d",
    "DropBlock2d",
    "DropBlock3d",
    "DropPath",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "EmbeddingDropout",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "LockedDropout",
    "WeightDrop",
    "add_dropconnect",
    "concrete",
    "drop_path_rates",
    "regularization",
    "remove_dropconnect",
    "with_peer_names",
]
