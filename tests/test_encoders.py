"""The baselines' and recipes' models: amortised encoders (autoencoder at the GON's decoder and
at the GON's parameter count), the anchors' exact parameter counts, the variant names.

$ python -m pytest tests/test_encoders.py -q
"""

from __future__ import annotations

import pytest
import torch
from helpers import compose_config

from gon import Autoencoder, ConvEncoder, MLPEncoder, TrainStep, make_grid
from gon.app.build import MATCH_TOLERANCE, build_model, count_params
from gon.app.config import ConfigError
from gon.app.variants import variant_name, variant_tags

SIZES = [(8, 8), (28, 28)]  # digits (an MLP encoder), MNIST (a conv encoder)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("overrides", [[], ["block=modulated"], ["experiment=gon_pytorch"]])
def test_autoencoder_sizes(size: tuple[int, int], overrides: list[str]) -> None:
    gon = build_model(compose_config(overrides), channels=1, image_size=size)
    same = build_model(compose_config([*overrides, "encoder=autoencoder"]), 1, image_size=size)
    matched = build_model(compose_config([*overrides, "encoder=autoencoder_matched"]), 1,
                          image_size=size)
    net = ConvEncoder if min(size) >= 28 else MLPEncoder
    for ae in (same, matched):
        assert isinstance(ae, Autoencoder) and isinstance(ae.encoder, net)
    # the same decoder as the GON's (so its parameters and more), or a total within 5 %
    assert count_params(same.decoder) == count_params(gon)
    assert count_params(same) == count_params(gon) + count_params(same.encoder)
    assert abs(count_params(matched) - count_params(gon)) <= MATCH_TOLERANCE * count_params(gon)
    assert matched.decoder.hidden_dim < gon.decoder.hidden_dim


def test_anchor_parameter_counts() -> None:
    """The recipes of the anchors, to the parameter (one channel)."""
    official = build_model(compose_config(["experiment=official_implicit"]), channels=1)
    assert count_params(official) == 206_593
    assert official.decoder.final_activation is None and official.pixel_reduction == "sum"
    assert official.latent_reduction == "mean" and official.loss_name == "mse"
    seed = build_model(compose_config(["experiment=gon_pytorch"]), channels=1)
    assert count_params(seed) == 74_369
    assert seed.decoder.dropout == 0.1 and seed.latent_reduction == "sum"
    mnist = compose_config(["experiment=mnist_best"])  # the recipe's stated count, on MNIST
    assert mnist.dataset.name == "mnist"
    assert count_params(build_model(mnist, channels=1, image_size=(28, 28))) == 17_025
    five = compose_config(["experiment=mnist_5epochs"])  # mnist_best, wider, for 5 epochs
    assert five.dataset.name == "mnist" and five.train.max_steps == 4685
    assert five.model.latent_updates == mnist.model.latent_updates == 3
    assert count_params(build_model(five, channels=1, image_size=(28, 28))) == 31_585


def test_autoencoder_latent_ignores_its_batch_and_trains_on_autograd_only() -> None:
    cfg = compose_config(["encoder=autoencoder"])
    model = build_model(cfg, channels=1, image_size=(8, 8))
    x, coords = torch.rand(10, 8, 8, 1), make_grid(8, 8)
    torch.testing.assert_close(model.encode(coords, x[:1]), model.encode(coords, x)[:1])
    step = TrainStep(model, coords)
    assert step.path == "autograd"
    step(x)
    assert model.encoder.net[0].weight.grad.abs().sum() > 0  # end to end: E gets gradients
    for path in ("affine", "functional"):
        with pytest.raises(ValueError, match="autograd"):
            TrainStep(model, coords, path=path)


def test_matched_autoencoder_that_cannot_match_is_one_clear_error() -> None:
    cfg = compose_config(["encoder=autoencoder_matched", "model.hidden_dim=2"])
    with pytest.raises(ConfigError, match="within 5%"):
        build_model(cfg, channels=1, image_size=(28, 28))


def test_encoder_in_variant_names_only_when_not_the_gon() -> None:
    assert variant_name(compose_config([])) == "none-siren-bce-sum"  # stable report keys
    assert variant_name(compose_config(["encoder=detached"])) == "none-siren-bce-sum-detached"
    assert "encoder=autoencoder" in variant_tags(compose_config(["encoder=autoencoder"]))
    old = {k: {"name": v} for k, v in [("encoding", "none"), ("block", "siren"),
                                       ("loss", "bce"), ("latent_reduction", "sum")]}
    assert variant_name(old) == "none-siren-bce-sum"  # a config from before the axis
