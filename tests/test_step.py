"""The fast training-step paths against the plain autograd reference."""

from __future__ import annotations

import pytest
import torch
from helpers import make_gon

from gon import GON, TrainStep, make_grid
from gon.core.latents import affine_applies


def build(modulation: bool = False, loss: str = "bce", reduction: str = "sum", updates: int = 1,
          learn_origin: bool = False, dropout: float = 0.0, dtype: torch.dtype = torch.float64,
          step_size: str = "fixed", second_order: bool = True, pixels: str = "mean") -> GON:
    """The steps' test model: Gaussian features, SIREN (w0 10), 2 channels, seeded; learned
    step sizes are drawn away from their initial 1, so that each dimension's alpha matters."""
    model = make_gon("gaussian", "modulated" if modulation else "siren", loss, reduction,
                     channels=2, latent_dim=6, w0=10.0, dropout=dropout, updates=updates,
                     learn_origin=learn_origin, dtype=dtype, seed=0, step_size=step_size,
                     second_order=second_order, pixel_reduction=pixels)
    if step_size != "fixed":
        with torch.no_grad():
            model.step_sizes.uniform_(0.5, 1.5)
    return model


def grads_after_step(model: GON, path: str, x: torch.Tensor, compile: bool = False):
    """Losses and gradients of one step; path "affine-func": the torch.func affine form, eager."""
    coords = make_grid(*x.shape[1:3], dtype=x.dtype)
    if path == "affine-func":  # what compile=True runs, without compiling
        step = TrainStep(model, coords, path="affine")
        grads, loss_outer, loss_inner = step.functional_grads(x)
        out = {"loss_inner": loss_inner, "loss_outer": loss_outer}
        return out, [grads[n] for n, _ in model.named_parameters()]
    out = TrainStep(model, coords, compile=compile, path=path)(x)
    return out, [p.grad.clone() for p in model.parameters()]


VARIANTS = [
    dict(),
    dict(modulation=True),
    dict(loss="mse", reduction="mean"),
    dict(modulation=True, loss="mse", learn_origin=True),
    dict(updates=3),
    dict(step_size="per_dim"),
    dict(step_size="scalar", loss="mse", reduction="mean", pixels="sum"),
    dict(step_size="per_dim", updates=3, learn_origin=True),
    dict(step_size="scalar", updates=2, modulation=True),
    dict(second_order=False),
    dict(second_order=False, step_size="per_dim", updates=2, learn_origin=True),
]


@pytest.mark.parametrize(
    "kw", VARIANTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items())
)
@pytest.mark.parametrize("path", ["functional", "affine", "affine-func"])
def test_fast_paths_match_autograd(kw, path):
    x = torch.rand(5, 6, 7, 2, dtype=torch.float64)
    if path.startswith("affine") and not affine_applies(build(**kw), make_grid(6, 7)):
        with pytest.raises(ValueError, match="affine"):
            grads_after_step(build(**kw), path, x)
        return
    ref_out, ref = grads_after_step(build(**kw), "autograd", x)
    out, got = grads_after_step(build(**kw), path, x)
    for k in ("loss_inner", "loss_outer"):
        torch.testing.assert_close(out[k], ref_out[k], rtol=1e-12, atol=1e-12)
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_auto_path_choice():
    assert TrainStep(build(), make_grid(4, 4)).path == "affine"
    assert TrainStep(build(updates=2), make_grid(4, 4)).path == "affine"  # first step closed
    dropped = build(dropout=0.1)
    assert TrainStep(dropped, make_grid(4, 4)).path == "autograd"
    in_eval = TrainStep(dropped.eval(), make_grid(4, 4))
    assert in_eval.path == "affine"
    dropped.train()
    with pytest.raises(RuntimeError, match="dropout is now active"):
        in_eval(torch.rand(2, 4, 4, 2, dtype=torch.float64))
    shared = make_grid(4, 4).expand(3, -1, -1, -1)  # one grid per sample: J differs per sample
    assert TrainStep(build(), shared).path == "autograd"
    with pytest.raises(ValueError, match="path='fast'"):
        TrainStep(build(), make_grid(4, 4), path="fast")
    with pytest.raises(ValueError, match="compile_mode='fast'.*reduce-overhead"):
        TrainStep(build(), make_grid(4, 4), compile=True, compile_mode="fast")


def trajectory(xs: torch.Tensor, **step_kw) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(loss_outer of each Adam step, final parameters) of a float32 model on batches xs. The
    losses are kept until the end, as training keeps them."""
    model = build(dtype=torch.float32).to(xs.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = TrainStep(model, make_grid(*xs.shape[2:4], device=xs.device), **step_kw)
    losses = []
    for x in xs:
        losses.append(step(x)["loss_outer"])
        opt.step()
    return torch.stack(losses), [p.detach().clone() for p in model.parameters()]


def test_loss_trajectory_matches_autograd_in_float32():
    """20 Adam steps from the same initialisation: fast path and reference agree."""
    torch.manual_seed(1)
    xs = torch.rand(20, 8, 6, 6, 2)
    affine, _ = trajectory(xs, path="affine")
    reference, _ = trajectory(xs, path="autograd")
    torch.testing.assert_close(affine, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_step_matches_autograd():
    x = torch.rand(4, 5, 5, 2)
    ref_out, ref = grads_after_step(build(dtype=torch.float32), "autograd", x)
    out, got = grads_after_step(build(dtype=torch.float32), "affine", x, compile=True)
    torch.testing.assert_close(out["loss_outer"], ref_out["loss_outer"], rtol=1e-5, atol=1e-6)
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kw", [dict(), dict(modulation=True, reduction="mean", loss="mse"), dict(learn_origin=True)]
)
def test_encode_closed_form_matches_infer_latents(kw):
    model = build(**kw)
    coords, x = make_grid(6, 7, dtype=torch.float64), torch.rand(9, 6, 7, 2, dtype=torch.float64)
    with torch.no_grad():
        fast = model.encode(coords, x, batch_size=9)
    ref, _ = model.infer_latents(coords, x)
    torch.testing.assert_close(fast, ref.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    ("compile", "mode"), [(False, "default"), (True, "default"), (True, "reduce-overhead")]
)
def test_cuda_trajectory_matches_autograd(compile, mode):
    """6 Adam steps on the GPU; the losses are kept until the end, as training keeps them, so a
    CUDA-graph replay that overwrote an earlier step's outputs would show here."""
    xs = torch.rand(6, 8, 6, 6, 2, device="cuda")
    losses, params = trajectory(xs, compile=compile, compile_mode=mode)
    ref_losses, ref_params = trajectory(xs, path="autograd")
    torch.testing.assert_close(losses, ref_losses, rtol=1e-4, atol=1e-5)
    for p, r in zip(params, ref_params, strict=True):
        torch.testing.assert_close(p, r, rtol=1e-3, atol=1e-5)


def test_detached_lacks_the_second_order_term():
    """detached: the gradient of the outer loss at a constant latent (only the decoder's direct
    path); the GON's differs from it by the second-order term through grad_z."""
    x = torch.rand(5, 6, 7, 2, dtype=torch.float64)
    coords = make_grid(6, 7, dtype=torch.float64)
    _, detached = grads_after_step(build(second_order=False), "affine", x)
    _, full = grads_after_step(build(), "affine", x)
    model = build()
    z, _ = model.infer_latents(coords, x)
    outer = model.outer_loss(model.decoder.logits(coords, z.detach()), x)
    first_order = torch.autograd.grad(outer, list(model.parameters()))
    for g, r in zip(detached, first_order, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    second = sum((f - r).abs().sum() for f, r in zip(full, first_order, strict=True))
    assert second > 1e-6  # far above float64 rounding (~1e-15): the term the GON keeps


@pytest.mark.parametrize("step_size", ["scalar", "per_dim"])
@pytest.mark.parametrize("updates", [1, 3])
def test_learned_steps_start_as_the_fixed_step(step_size, updates):
    """Learned step sizes start at 1: the same losses and weight gradients as the fixed step,
    plus a nonzero gradient for alpha (k, 1) or (k, d)."""
    x = torch.rand(4, 5, 5, 2, dtype=torch.float64)
    ref_out, ref = grads_after_step(build(updates=updates), "autograd", x)
    model = make_gon("gaussian", "siren", channels=2, latent_dim=6, w0=10.0, updates=updates,
                     dtype=torch.float64, seed=0, step_size=step_size)
    assert model.step_sizes.shape == (updates, 1 if step_size == "scalar" else 6)
    out, got = grads_after_step(model, "auto", x)
    torch.testing.assert_close(out["loss_outer"], ref_out["loss_outer"], rtol=1e-12, atol=0)
    names = [n for n, _ in model.named_parameters()]
    alpha = got[names.index("step_sizes")]
    del got[names.index("step_sizes")]
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    assert alpha.abs().sum() > 0


def test_auto_picks_affine_for_learned_and_detached_steps():
    assert TrainStep(build(step_size="per_dim"), make_grid(4, 4)).path == "affine"
    assert TrainStep(build(second_order=False), make_grid(4, 4)).path == "affine"
    assert TrainStep(build(step_size="scalar", updates=2), make_grid(4, 4)).path == "affine"
    assert TrainStep(build(updates=2, dropout=0.1), make_grid(4, 4)).path == "autograd"
