"""The variational GON: the KL term, the gradient origin of the negative ELBO, the bounds on
log p(x) (against an exact likelihood by quadrature, and IW >= ELBO after training), samples
from the prior, the KL warm-up and the training-step paths.

$ python -m pytest tests/test_variational.py -q
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import make_gon, make_vgon
from torch.distributions import Bernoulli, Normal, kl_divergence

from gon import VAE, MLPEncoder, TrainStep, VariationalGON, likelihood_bounds, make_grid
from gon.core.bounds import bits_per_dim
from gon.core.variational import gaussian_kl, kl_warmup


def test_kl_matches_closed_form():
    mu = torch.tensor([[1.0, 0.0], [0.5, -2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [-1.0, 0.3]])
    # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1 - log s^2) / 2 per dimension
    row0 = (1.0 + 1.0 - 1.0 - 0.0) / 2 + (0.0 + 4.0 - 1.0 - math.log(4.0)) / 2
    assert gaussian_kl(mu, logvar)[0].item() == pytest.approx(row0, rel=1e-6)
    q, p = Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros(2), torch.ones(2))
    torch.testing.assert_close(gaussian_kl(mu, logvar), kl_divergence(q, p).sum(-1))
    assert gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0  # q = prior


def reference_nelbo(model: VariationalGON, coords, x, z, eps):
    """An independent per-image negative ELBO: torch.distributions, naive decoder call."""
    mu, logvar = model.heads(z)
    q = Normal(mu, torch.exp(0.5 * logvar))
    code = mu + q.scale * eps
    probs = model.decoder(coords.expand(len(x), *coords.shape[1:]), code)
    log_px = Bernoulli(probs=probs).log_prob(x).flatten(1).sum(1)
    prior = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    return -log_px + kl_divergence(q, prior).sum(-1)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("block", ["siren", "relu", "modulated"])
def test_latent_is_negative_elbo_gradient_at_origin(block, reduction):
    model = make_vgon(block=block, reduction=reduction, seed=0, dtype=torch.float64)
    coords = make_grid(5, 4).double()
    x = (torch.rand(3, 5, 4, 1, dtype=torch.float64) > 0.5).double()
    torch.manual_seed(7)
    z, loss_inner = model.infer_latents(coords, x)  # draws eps (3, 8) once
    torch.manual_seed(7)
    eps = torch.randn(3, 8, dtype=torch.float64)
    z0 = torch.zeros(3, 8, dtype=torch.float64, requires_grad=True)
    per = reference_nelbo(model, coords, x, z0, eps)
    inner = per.sum() if reduction == "sum" else per.mean()
    (g,) = torch.autograd.grad(inner, z0)
    torch.testing.assert_close(z, -g, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(loss_inner, inner, rtol=1e-9, atol=1e-12)
    # the outer loss is the mean NELBO at z, second order: its gradient reaches the heads
    # through z as well as directly
    torch.manual_seed(8)
    outer = model.outer_objective(coords, z, x)
    torch.manual_seed(8)
    eps_outer = torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(outer, reference_nelbo(model, coords, x, z, eps_outer).mean())
    w = model.heads.mu.weight
    (full,) = torch.autograd.grad(outer, w, retain_graph=True)
    torch.manual_seed(8)
    (cut,) = torch.autograd.grad(model.outer_objective(coords, z.detach(), x), w)
    assert not torch.allclose(full, cut)


def test_eval_mode_is_deterministic_and_encode_gives_the_posterior_mean():
    model = make_vgon(seed=1).eval()
    coords, x = make_grid(6, 6), torch.rand(5, 6, 6, 1)
    z1, _ = model.infer_latents(coords, x)
    z2, _ = model.infer_latents(coords, x)
    torch.testing.assert_close(z1, z2)
    mu = model.encode(coords, x, batch_size=2)
    torch.testing.assert_close(mu, model.heads(z1)[0].detach())
    torch.testing.assert_close(model.render(mu, (6, 6)), model(coords, z1).detach())
    assert not torch.equal(*(model.train().infer_latents(coords, x)[0] for _ in range(2)))


def exact_log_px(model: VariationalGON, coords, images, half_width=7.0, n=301):
    """log p(x) = log sum_c p(x | c) N(c; 0, I) dc by quadrature on a grid (latent_dim 2)."""
    t = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    c = torch.cartesian_prod(t, t)  # (n^2, 2)
    log_prior = Normal(0.0, 1.0).log_prob(c).sum(-1) + 2 * math.log(t[1] - t[0])
    probs = model.decoder(coords, c)  # (n^2, H, W, 1)
    log_px_c = torch.stack([Bernoulli(probs=probs).log_prob(x).flatten(1).sum(1)
                            for x in images])  # (N, n^2)
    return torch.logsumexp(log_px_c + log_prior, 1)


def test_bounds_bracket_the_exact_log_likelihood_of_binary_images():
    """On 2x2 binary images the likelihood is a distribution over 16 images and quadrature
    gives log p(x) exactly: the ELBO is below it by KL(q || posterior) > 0 for this untrained
    encoder, and IW_4096 meets it (within its Monte Carlo error)."""
    model = make_vgon(latent_dim=2, hidden=16, seed=3, dtype=torch.float64).eval()
    with torch.no_grad():  # a decoder that depends strongly on the code; q broader than N(0, I)
        model.decoder.blocks[-1].linear.weight.mul_(3.0)
        model.heads.logvar.bias.fill_(0.5)
    coords = make_grid(2, 2).double()
    bits = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * 4)
    images = bits.view(16, 2, 2, 1)
    log_px = exact_log_px(model, coords, images)
    assert torch.logsumexp(log_px, 0).item() == pytest.approx(0.0, abs=1e-6)  # sums to one
    gen = torch.Generator().manual_seed(0)
    b = likelihood_bounds(model, coords, images, samples=4096, generator=gen)
    nll = -log_px
    assert (b["nelbo"] - nll).min() > 0.05  # a bound, and a loose one here
    assert (b["iw_nelbo"] - nll).abs().max() < 0.03
    assert (b["iw_nelbo"] - nll).mean().abs() < 0.01
    torch.testing.assert_close(b["nelbo"], b["recon"] + b["kl"])


def test_importance_weighted_bound_is_tighter_on_a_trained_model():
    torch.manual_seed(0)
    proto = (torch.rand(4, 6, 6, 1) > 0.5).float()
    flips = (torch.rand(256, 6, 6, 1) < 0.1).float()
    data = (proto.repeat(64, 1, 1, 1) - flips).abs()  # four noisy binary patterns
    model = make_vgon(latent_dim=2, hidden=32, w0=10.0, seed=0, kl_warmup_steps=100)
    coords = make_grid(6, 6)
    step, opt = TrainStep(model, coords), torch.optim.Adam(model.parameters(), lr=1e-2)
    model.eval()
    start = likelihood_bounds(model, coords, data[:64], samples=8)["nelbo"].mean()
    model.train()
    for i in range(1, 151):
        model.set_step(i)
        step(data[(i * 32) % 256 :][:32])
        opt.step()
    model.eval()
    gen = torch.Generator().manual_seed(1)
    b64 = likelihood_bounds(model, coords, data[:64], samples=64, generator=gen)
    b1 = likelihood_bounds(model, coords, data[:64], samples=1, generator=gen)
    assert b64["nelbo"].mean() < start - 1.0  # it trained
    assert b64["iw_nelbo"].mean() < b64["nelbo"].mean()
    # one sample: IW_1 is an unbiased estimate of the ELBO (within 4 standard errors)
    diff = b1["iw_nelbo"] - b64["nelbo"]
    assert diff.mean().abs() < 4 * diff.std() / math.sqrt(len(diff)) + 1e-3
    assert bits_per_dim(b64["nelbo"].mean().item(), 36) == pytest.approx(
        b64["nelbo"].mean().item() / (36 * math.log(2)))


def test_samples_from_the_prior_are_finite_images():
    model = make_vgon(encoding="nerf", block="modulated", seed=2).eval()
    gen = torch.Generator().manual_seed(5)
    codes = model.prior_sample(16, generator=gen)
    assert codes.shape == (16, 8)
    torch.testing.assert_close(codes, torch.randn(16, 8, generator=torch.Generator()
                                                  .manual_seed(5)))
    images = model.render(codes, (7, 5))
    assert images.shape == (16, 7, 5, 1) and torch.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0


def test_kl_warmup_is_linear_and_weights_both_losses():
    assert [kl_warmup(s, 0.5, 4) for s in (0, 1, 2, 4, 9)] == [0.0, 0.125, 0.25, 0.5, 0.5]
    assert kl_warmup(1, 1.0, 0) == 1.0
    model = make_vgon(seed=4, kl_warmup_steps=10).eval()
    coords, x = make_grid(4, 4), torch.rand(2, 4, 4, 1)
    z = torch.randn(2, 8)
    recon, kl = model.nelbo_parts(coords, z, x, torch.zeros(2, 8))
    assert model.beta == 0.0
    torch.testing.assert_close(model.outer_objective(coords, z, x), recon.mean())
    model.set_step(5)
    torch.testing.assert_close(model.outer_objective(coords, z, x), (recon + 0.5 * kl).mean())
    _, inner = model.infer_latents(coords, x)
    z0 = torch.zeros(2, 8)
    r0, k0 = model.nelbo_parts(coords, z0, x, torch.zeros(2, 8))
    torch.testing.assert_close(inner, (r0 + 0.5 * k0).sum())


def test_set_step_is_a_no_op_on_a_model_without_an_elbo():
    """Every model has set_step and has_elbo, so a training loop needs no type checks."""
    gon, vgon = make_gon(), make_vgon(kl_warmup_steps=10)
    before = copy.deepcopy(gon.state_dict())
    gon.set_step(7)
    assert not gon.has_elbo and vgon.has_elbo
    assert all(torch.equal(before[k], v) for k, v in gon.state_dict().items())
    vgon.set_step(5)
    assert vgon.beta == pytest.approx(0.5 * vgon.kl_weight)


def test_train_step_runs_autograd_only():
    model = make_vgon(seed=0)
    coords, x = make_grid(4, 4), torch.rand(8, 4, 4, 1)
    step = TrainStep(model, coords)
    assert step.path == "autograd"
    out = step(x)
    assert torch.isfinite(out["loss_outer"]) and model.heads.logvar.weight.grad is not None
    for kw in ({"path": "affine"}, {"path": "functional"}, {"compile": True}):
        with pytest.raises(ValueError, match="path='autograd' only"):
            TrainStep(model, coords, **kw)


@pytest.mark.parametrize("kw,match", [
    ({"kl_weight": -1.0}, "kl_weight must be"),
    ({"kl_warmup_steps": -2}, "kl_warmup_steps must be"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        make_vgon(**kw)


def test_needs_a_sigmoid_decoder():
    decoder = make_vgon().decoder
    decoder.final_activation = None
    with pytest.raises(ValueError, match="must end in a sigmoid"):
        VariationalGON(decoder)


def test_vae_is_the_autoencoder_with_the_same_heads_and_decoder():
    vgon = make_vgon(seed=0, dtype=torch.float64)
    encoder = MLPEncoder((6, 6, 1), latent_dim=8, hidden_dim=16).double()
    vae = VAE(copy.deepcopy(vgon.decoder), encoder).double()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(vae) == count(vgon) + count(encoder)  # the same decoder and heads, plus E
    coords = make_grid(6, 6).double()
    x = (torch.rand(5, 6, 6, 1, dtype=torch.float64) > 0.5).double()
    h, _ = vae.infer_latents(coords, x)
    torch.testing.assert_close(h, encoder(x))  # amortised: h = E(x), no gradient origin
    torch.manual_seed(3)
    outer = vae.outer_objective(coords, h, x)
    torch.manual_seed(3)
    eps = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(outer, reference_nelbo(vae, coords, x, h, eps).mean())
    vae.eval()
    torch.testing.assert_close(vae.encode(coords, x, batch_size=2), vae.heads(encoder(x))[0])
    assert torch.isfinite(vae.render(vae.prior_sample(4), (6, 6))).all()
    step = TrainStep(vae.train(), coords)
    assert step.path == "autograd"
    step(x)
    assert encoder.net[0].weight.grad.abs().sum() > 0 and vae.heads.mu.weight.grad is not None
    with pytest.raises(ValueError, match="path='autograd' only"):
        TrainStep(vae, coords, path="affine")
