"""The GON library: shapes, the gradient origin, reductions, init, fused layer, errors."""

from __future__ import annotations

import itertools
from math import sqrt

import pytest
import torch
from helpers import BLOCKS, ENCODINGS, make_gon

import gon
from gon import (
    GON,
    ImplicitDecoder,
    LinearBlockFactory,
    NeRFPositionalEncoding,
    SirenBlockFactory,
    make_grid,
)
from gon.app.build import count_params


@pytest.mark.parametrize(
    "encoding,block,loss,reduction",
    list(itertools.product(ENCODINGS, BLOCKS, ["bce", "mse"], ["sum", "mean"])),
)
@pytest.mark.parametrize("channels,size", [(1, (5, 7)), (3, (6, 4))])
def test_shapes_every_variant(encoding, block, loss, reduction, channels, size):
    torch.manual_seed(0)
    model = make_gon(encoding, block, loss, reduction, channels)
    coords = make_grid(*size)
    x = torch.rand(3, *size, channels)
    z, loss_inner = model.infer_latents(coords, x)
    assert z.shape == (3, 8) and loss_inner.dim() == 0
    out = model(coords, z)
    assert out.shape == (3, *size, channels)
    assert torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    loss_outer = model.outer_loss(model.decoder.logits(coords, z), x)
    loss_outer.backward()
    assert all(p.grad is not None for p in model.parameters())


def inner_reference(model: GON, coords, x, z):
    """Independent inner loss: naive concatenation decoder, plain torch losses."""
    out = model(coords.expand(x.shape[0], *coords.shape[1:]), z)
    if model.loss_name == "bce":
        per = torch.nn.functional.binary_cross_entropy(out, x, reduction="none")
    else:
        per = (out - x) ** 2
    per = per.flatten(1).mean(1)
    return per.sum() if model.latent_reduction == "sum" else per.mean()


@pytest.mark.parametrize("block", ["siren", "modulated", "relu"])
@pytest.mark.parametrize("loss,reduction", [("bce", "sum"), ("mse", "mean")])
def test_latent_is_negative_gradient_at_origin(block, loss, reduction):
    torch.manual_seed(1)
    model = make_gon("gaussian", block, loss, reduction).double()
    coords, x = make_grid(6, 6).double(), torch.rand(4, 6, 6, 1, dtype=torch.float64)
    z, _ = model.infer_latents(coords, x)
    z0 = torch.zeros(4, 8, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(inner_reference(model, coords, x, z0), z0)
    torch.testing.assert_close(z, -g, rtol=1e-9, atol=1e-12)


def test_sum_reduction_is_batch_independent_and_mean_scales_by_batch():
    torch.manual_seed(2)
    x = torch.rand(5, 6, 6, 1)
    coords = make_grid(6, 6)
    m_sum = make_gon(reduction="sum")
    m_mean = make_gon(reduction="mean")
    m_mean.load_state_dict(m_sum.state_dict())
    z_batch, _ = m_sum.infer_latents(coords, x)
    z_single, _ = m_sum.infer_latents(coords, x[2:3])
    torch.testing.assert_close(z_batch[2:3], z_single, rtol=1e-5, atol=1e-6)
    z_mean, _ = m_mean.infer_latents(coords, x)
    torch.testing.assert_close(z_mean, z_batch / 5, rtol=1e-5, atol=1e-7)


def test_outer_loss_reaches_weights_through_the_latent():
    torch.manual_seed(3)
    model = make_gon()
    coords, x = make_grid(6, 6), torch.rand(4, 6, 6, 1)
    w = model.decoder.blocks[1].linear.weight

    def weight_grad(detach: bool) -> torch.Tensor:
        z, _ = model.infer_latents(coords, x)
        z = z.detach() if detach else z
        (g,) = torch.autograd.grad(model.outer_loss(model.decoder.logits(coords, z), x), w)
        return g

    assert not torch.allclose(weight_grad(False), weight_grad(True), atol=1e-6)


def test_siren_init_bounds():
    torch.manual_seed(0)
    dec = ImplicitDecoder(16, 1, 64, 4, SirenBlockFactory(w0=30.0), NeRFPositionalEncoding(2))
    first = dec.blocks[0].linear
    assert first.weight.abs().max() <= 1 / first.in_features
    assert first.weight.abs().max() > 0.9 / first.in_features  # uniform fills the range
    for block in dec.blocks[1:]:
        bound = sqrt(6 / block.linear.in_features) / 30.0
        assert block.linear.weight.abs().max() <= bound
        assert block.linear.weight.abs().max() > 0.9 * bound


def test_modulated_first_layer_ignores_latent():
    model = make_gon(block="modulated", encoding="nerf")
    dec = model.decoder
    assert dec.blocks[0].linear.in_features == dec.pos_encoder.out_dim
    # the first pre-activation is the coordinate part alone, all of W on enc(c): (1, N, H)
    part = dec.coordinate_part(make_grid(4, 4).flatten(1, 2), dec.block_weights())
    e = dec.pos_encoder(make_grid(4, 4).flatten(1, 2))
    torch.testing.assert_close(part, dec.blocks[0].linear(e) * dec.blocks[0].scale)
    # ... but the output depends on z through the modulations
    assert not torch.allclose(
        model(make_grid(4, 4), torch.randn(2, 8)), model(make_grid(4, 4), torch.randn(2, 8))
    )


def test_linear_modulation_map_is_one_affine_map_of_the_latent():
    from gon.app.build import build_decoder
    from gon.app.config import compose

    cfg = compose(["block=modulated", "block.linear_map=true", "model.hidden_dim=16"])
    dec = build_decoder(cfg, channels=1)  # the config key reaches the library's option
    mod = dec.mod_network
    assert mod.linear and len(mod.layers) == 1 and mod.layers[0].out_features == 16 * 2
    z, w = torch.randn(3, cfg.model.latent_dim), torch.randn(3, cfg.model.latent_dim)
    mods = mod(z)  # affine: m(z) + m(w) = m(z + w) + m(0), with negative entries (no ReLU)
    assert [m.shape for m in mods] == [(3, 16)] * 2 and min(m.min() for m in mods) < 0
    for a, b, c, d in zip(mods, mod(w), mod(z + w), mod(torch.zeros_like(z)), strict=True):
        torch.testing.assert_close(a + b, c + d, rtol=1e-5, atol=1e-5)
    default = build_decoder(compose(["block=modulated", "model.hidden_dim=16"]), channels=1)
    assert not default.mod_network.linear and len(default.mod_network.layers) == 2
    assert count_params(dec) < count_params(default)  # no hidden (H+d) x H layer
    out = dec(make_grid(4, 4), z.requires_grad_())
    out.sum().backward()  # the latent's gradient flows through the linear map
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("block", ["siren", "relu"])
def test_fused_first_layer_equals_naive_concatenation(block):
    torch.manual_seed(4)
    model = make_gon("gaussian", block)
    dec = model.decoder
    coords, z = make_grid(5, 5), torch.randn(3, 8)
    out = dec.logits(coords, z)
    e = dec.pos_encoder(coords).expand(3, -1, -1, -1)
    h = torch.cat([z[:, None, None, :].expand(-1, 5, 5, -1), e], dim=-1)  # the seed's layout
    for block_ in dec.blocks:
        h = block_(h)
    torch.testing.assert_close(out, h, rtol=1e-5, atol=1e-5)


def test_coordinates_broadcast_or_per_sample():
    model = make_gon()
    x = torch.rand(3, 4, 4, 1)
    z1, _ = model.infer_latents(make_grid(4, 4), x)
    z3, _ = model.infer_latents(make_grid(4, 4).expand(3, -1, -1, -1), x)
    torch.testing.assert_close(z1, z3)


def test_overfits_sixteen_digits():
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    x = torch.tensor(load_digits().images[:16], dtype=torch.float32).unsqueeze(-1) / 16.0
    model = make_gon("none", "siren", "bce", "sum", latent_dim=16, hidden=64, layers=3)
    coords = make_grid(8, 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = gon.TrainStep(model, coords)
    mse = lambda: ((model.render(model.encode(coords, x), 8) - x) ** 2).mean().item()  # noqa: E731
    start = mse()
    for _ in range(200):
        step(x)
        opt.step()
    assert mse() < start / 5


def test_encode_with_any_number_of_steps():
    torch.manual_seed(6)
    coords, x = make_grid(5, 5), torch.rand(6, 5, 5, 1)
    model = make_gon(updates=2, step_size="per_dim", seed=6)
    with torch.no_grad():
        model.step_sizes.copy_(torch.rand(2, 8) + 0.5)
    torch.testing.assert_close(model.encode(coords, x, steps=2), model.encode(coords, x))
    z = model.get_init_latent(6).requires_grad_(True)  # by hand: 4 steps, the last size reused
    for alpha in (*model.step_sizes, model.step_sizes[-1], model.step_sizes[-1]):
        (g,) = torch.autograd.grad(model.inner_objective(coords, z, x), z)
        z = (z - alpha * g).detach().requires_grad_(True)
    torch.testing.assert_close(model.encode(coords, x, steps=4), z.detach())
    z0 = model.get_init_latent(6).requires_grad_(True)  # one step: the closed form
    (g,) = torch.autograd.grad(model.inner_objective(coords, z0, x), z0)
    one = model.encode(coords, x, steps=1)
    torch.testing.assert_close(one, z0.detach() - model.step_sizes[0].detach() * g,
                               rtol=1e-5, atol=1e-6)
    assert not torch.allclose(one, model.encode(coords, x, steps=3))
    fixed = make_gon(updates=1, seed=6)  # trained with one fixed step: two steps of size 1
    two = fixed.encode(coords, x, steps=2)
    z, _ = fixed.latent_steps(coords, x, fixed.encode(coords, x, steps=1), first=1, steps=2)
    torch.testing.assert_close(two, z.detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        model.encode(coords, x, steps=0)


def test_sampling_slerp_and_super_resolution():
    torch.manual_seed(5)
    model = make_gon(channels=3)
    x = torch.rand(20, 6, 6, 3)
    z = model.encode(make_grid(6, 6), x, batch_size=7)
    assert z.shape == (20, 8) and not z.requires_grad
    dist = gon.fit_gaussian(z)
    samples = model.render(dist.sample((4,)), (6, 6))
    assert samples.shape == (4, 6, 6, 3) and torch.isfinite(samples).all()
    big = model.render(z[:2], 24)  # 4x the training resolution
    assert big.shape == (2, 24, 24, 3)
    path = gon.slerp(z[0], z[1], torch.linspace(0, 1, 5))
    assert path.shape == (5, 8)
    torch.testing.assert_close(path[0], z[0])
    torch.testing.assert_close(path[-1], z[1])
    torch.testing.assert_close(path[2].norm(), (z[0].norm() + z[1].norm()) / 2, rtol=0.2, atol=0)
    torch.testing.assert_close(gon.slerp(z[0], z[0], 0.3), z[0])  # parallel: no NaN


def test_learned_origin_is_a_parameter_and_multiple_updates():
    model = make_gon(learn_origin=True, updates=3)
    assert any(p is model.init_latent for p in model.parameters())
    coords, x = make_grid(4, 4), torch.rand(2, 4, 4, 1)
    out = gon.TrainStep(model, coords)(x)
    assert torch.isfinite(out["loss_outer"]) and model.init_latent.grad is not None


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: make_gon(loss="l1"), "loss='l1'"),
        (lambda: make_gon(reduction="median"), "latent_reduction='median'"),
        (lambda: LinearBlockFactory(activation="tanhh"), "activation='tanhh'"),
        (lambda: make_gon(latent_dim=0), "latent_dim"),
        (lambda: make_gon(layers=0), "num_layers"),
        (lambda: make_gon(updates=0), "latent_updates"),
        (lambda: NeRFPositionalEncoding(2, n=0), "n must be"),
        (lambda: SirenBlockFactory(w0=0), "w0"),
    ],
)
def test_bad_arguments_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "coords,target",
    [
        (make_grid(4, 4), torch.rand(2, 4, 5, 1)),  # spatial mismatch
        (make_grid(4, 4), torch.rand(2, 4, 4, 3)),  # channel mismatch
        (make_grid(4, 4).expand(3, -1, -1, -1), torch.rand(2, 4, 4, 1)),  # batch mismatch
        (make_grid(4, 4, 4), torch.rand(2, 4, 4, 4, 1)),  # 3-d coords into a 2-d encoding
    ],
)
def test_bad_shapes_raise_value_error(coords, target):
    with pytest.raises(ValueError, match="coords"):
        make_gon().infer_latents(coords, target)


@pytest.mark.parametrize("updates", [1, 2])
def test_encode_mean_reduction_reproduces_training_batches(updates):
    """With "mean", encode(train_batch=B) gives the latents a training batch of B gave."""
    torch.manual_seed(6)
    model = make_gon(reduction="mean", updates=updates)
    coords, x = make_grid(5, 5), torch.rand(4, 5, 5, 1)
    z_train, _ = model.infer_latents(coords, x)  # a training batch of 4
    for chunk in (1, 3, 7):
        z = model.encode(coords, x, batch_size=chunk, train_batch=4)
        torch.testing.assert_close(z, z_train.detach(), rtol=1e-5, atol=1e-6)
