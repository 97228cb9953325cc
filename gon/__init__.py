"""gon: Gradient Origin Networks in PyTorch (API-compatible with gon-pytorch).

>>> from gon import GON, ImplicitDecoder, SirenBlockFactory, NeRFPositionalEncoding
"""

from gon.core.blocks import (
    BaseBlockFactory,
    LinearBlock,
    LinearBlockFactory,
    Sine,
    SirenBlockFactory,
    SirenLinear,
    Swish,
)
from gon.core.bounds import likelihood_bounds
from gon.core.coords import get_xy_grid, make_grid
from gon.core.decoder import ImplicitDecoder, Modulator
from gon.core.encoders import Autoencoder, ConvEncoder, MLPEncoder
from gon.core.encoding import (
    CoordinateEncoding,
    GaussianFourierFeatureTransform,
    IdentityPositionalEncoding,
    NeRFPositionalEncoding,
)
from gon.core.model import GON
from gon.core.sampling import fit_gaussian, slerp
from gon.core.step import TrainStep, gon_step
from gon.core.variational import VAE, GaussianHeads, VariationalGON

__all__ = [
    "Autoencoder",
    "BaseBlockFactory",
    "ConvEncoder",
    "CoordinateEncoding",
    "GON",
    "GaussianHeads",
    "GaussianFourierFeatureTransform",
    "IdentityPositionalEncoding",
    "ImplicitDecoder",
    "LinearBlock",
    "LinearBlockFactory",
    "MLPEncoder",
    "Modulator",
    "NeRFPositionalEncoding",
    "Sine",
    "SirenBlockFactory",
    "SirenLinear",
    "Swish",
    "TrainStep",
    "VAE",
    "VariationalGON",
    "fit_gaussian",
    "get_xy_grid",
    "gon_step",
    "likelihood_bounds",
    "make_grid",
    "slerp",
]
