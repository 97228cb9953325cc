"""From a composed config to checked values, a device, the images and a GON model.

Usage:
    validate_config(cfg)  # raises ConfigError listing every bad value
    device = resolve_device(cfg.device)
    train, val, test = load_images(cfg, device)  # prepares the dataset on first use
    model = build_model(cfg, channels=train.shape[-1]).to(device)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from gon import (
    GON,
    VAE,
    Autoencoder,
    ConvEncoder,
    GaussianFourierFeatureTransform,
    IdentityPositionalEncoding,
    ImplicitDecoder,
    LinearBlockFactory,
    MLPEncoder,
    NeRFPositionalEncoding,
    SirenBlockFactory,
    VariationalGON,
)
from gon.app.config import FINAL_ACTIVATIONS, ConfigError
from gon.app.data.datasets import binarize, load_prepared, validation_indices
from gon.app.variants import encoder_choice

AMORTISED = ("autoencoder", "autoencoder_matched", "vae")  # an encoder net: needs the image size


CONV_FROM_PX = 28  # encoder.net=auto: a conv encoder from this image side up, else an MLP


MATCH_TOLERANCE = 0.05  # autoencoder_matched: total parameters within 5 % of the GON's


def folder_args(cfg: DictConfig) -> dict[str, Any]:
    """The config's `source` and `size` for prepare/data_key: image_folder's, else none."""
    d = cfg.dataset
    return {"source": d.source, "size": d.image_size} if d.name == "image_folder" else {}


def load_images(cfg: DictConfig, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, val, test) images (N, H, W, C) on `device`, preparing the dataset on first use.
    val is the fixed eval.val_fraction of the train split held out of training (the learning
    curves, the objective, tuning); test is for final scores only (gon.evaluate, the claims).
    With dataset.binarize, val and test are fixed draws (train too, unless "dynamic")."""
    d, root = cfg.dataset, Path(cfg.paths.data_dir)
    (train, _), (test, _) = load_prepared(  # prepared and read under one lock
        d.name, root / "raw", root / "prepared", **folder_args(cfg), image_size=d.image_size,
        device=device)
    try:
        keep, held = validation_indices(len(train), cfg.eval.val_fraction)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    mode = d.get("binarize", False)
    drawn = binarize(train, "train") if mode else train  # one fixed draw of the whole split
    if mode:  # "dynamic" draws a binarisation of every training batch (gon.app.train)
        test = binarize(test, "test")
    val = drawn[held.to(train.device)]
    train = (drawn if mode == "fixed" else train)[keep.to(train.device)]
    return train, val, test


def build_encoding(cfg: DictConfig, in_dim: int, seed: int) -> torch.nn.Module:
    e = cfg.encoding
    if e.name == "none":
        return IdentityPositionalEncoding(in_dim)
    if e.name == "nerf":
        return NeRFPositionalEncoding(in_dim, n=e.n)
    if e.name == "gaussian":
        return GaussianFourierFeatureTransform(
            in_dim, mapping_size=e.mapping_size, sigma=e.sigma, seed=seed, trainable=e.trainable
        )
    raise ConfigError(f"encoding.name={e.name!r} (must be none, nerf or gaussian)")


def build_decoder(cfg: DictConfig, channels: int, in_dim: int = 2,
                  hidden_dim: int | None = None) -> ImplicitDecoder:
    """The implicit decoder of cfg.model, cfg.block and cfg.encoding (width hidden_dim if given).
    """
    b, m = cfg.block, cfg.model
    if b.name in ("siren", "modulated"):
        factory = SirenBlockFactory(w0=b.w0, w0_initial=b.w0_initial)
    else:
        factory = LinearBlockFactory(activation=b.activation)
    return ImplicitDecoder(
        latent_dim=m.latent_dim,
        out_dim=channels,
        hidden_dim=m.hidden_dim if hidden_dim is None else hidden_dim,
        num_layers=m.num_layers,
        block_factory=factory,
        pos_encoder=build_encoding(cfg, in_dim, cfg.seed),
        modulation=b.modulation,
        linear_modulation=b.get("linear_map", False),
        dropout=m.dropout,
        final_activation=FINAL_ACTIVATIONS[m.get("final_activation", "sigmoid")],
    )


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_encoder(cfg: DictConfig, image_shape: tuple[int, int, int],
                  hidden_dim: int) -> torch.nn.Module:
    """The amortised encoder E of cfg.encoder for images (H, W, C): an MLP or a conv net."""
    e, d = cfg.encoder, cfg.model.latent_dim
    net = e.net if e.net != "auto" else ("conv" if min(image_shape[:2]) >= CONV_FROM_PX
                                         else "mlp")
    if net == "conv":
        return ConvEncoder(image_shape, latent_dim=d, hidden_dim=hidden_dim)
    return MLPEncoder(image_shape, latent_dim=d, hidden_dim=hidden_dim, num_layers=e.num_layers)


def match_width(params: Callable[[int], int], target: int, widest: int) -> tuple[int, int]:
    """The parameter matcher: (width, params(width)) of the width in 1..widest whose parameter
    count is nearest `target` (the count grows with the width; a tie goes to the narrower)."""
    lo, hi = 1, widest
    while lo < hi:  # bisect for the first width at or above the target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if params(mid) < target else (lo, mid)
    near = [(h, params(h)) for h in sorted({max(1, lo - 1), lo})]
    return min(near, key=lambda hp: abs(hp[1] - target))


def build_autoencoder(cfg: DictConfig, channels: int, image_size: tuple[int, int],
                      in_dim: int = 2) -> Autoencoder:
    """encoder=autoencoder: E (width encoder.hidden_dim, null = model.hidden_dim) in front of
    the GON's decoder (so more parameters than the GON). encoder=autoencoder_matched: the
    decoder narrowed to about half the GON's parameters and the encoder's width chosen so the
    total is within MATCH_TOLERANCE of the GON's (the decoder width nearest half first, then
    its neighbours; none fits: a ConfigError)."""
    shape = (*image_size, channels)
    width = cfg.encoder.hidden_dim or cfg.model.hidden_dim
    loss, pixels = cfg.loss.name, cfg.loss.get("pixel_reduction", "mean")

    def make(enc_width: int, dec_width: int | None) -> Autoencoder:
        decoder = build_decoder(cfg, channels, in_dim, hidden_dim=dec_width)
        return Autoencoder(decoder, build_encoder(cfg, shape, enc_width), loss=loss,
                           pixel_reduction=pixels)

    if cfg.encoder.name == "autoencoder":
        return make(width, None)
    target = count_params(build_decoder(cfg, channels, in_dim))  # the GON's parameters
    widths = range(1, cfg.model.hidden_dim + 1)
    decoders = {h: count_params(build_decoder(cfg, channels, in_dim, h)) for h in widths}

    def encoder(h: int) -> int:
        return count_params(build_encoder(cfg, shape, h))

    # the decoder nearest half the budget first (a balanced split), then its neighbours
    for dec in sorted(widths, key=lambda h: abs(decoders[h] - target / 2)):
        enc, n_enc = match_width(encoder, target - decoders[dec], 8 * cfg.model.hidden_dim)
        if abs(decoders[dec] + n_enc - target) <= MATCH_TOLERANCE * target:
            return make(enc, dec)
    raise ConfigError(
        f"encoder=autoencoder_matched: no encoder and decoder widths match the GON's {target} "
        f"parameters within {MATCH_TOLERANCE:.0%}; use encoder=autoencoder or another model size"
    )


def build_model(cfg: DictConfig, channels: int, in_dim: int = 2,
                image_size: tuple[int, int] | None = None) -> GON:
    """The GON described by cfg.model and the block, encoding, loss, reduction and encoder
    groups; an amortised encoder (encoder=autoencoder*, vae) needs the image_size (H, W).
    encoder=variational and vae: the variational GON and its VAE (the autoencoder's encoder, the
    same decoder), both with the loss of the ELBO (BCE)."""
    m, encoder = cfg.model, encoder_choice(cfg)
    if encoder in AMORTISED and image_size is None:
        raise ConfigError(f"encoder={encoder} needs the image size to build its encoder")
    if encoder == "vae":
        width = cfg.encoder.hidden_dim or m.hidden_dim
        return VAE(build_decoder(cfg, channels, in_dim),
                   build_encoder(cfg, (*image_size, channels), width),
                   kl_weight=m.kl_weight, kl_warmup_steps=m.kl_warmup_steps)
    if encoder in AMORTISED:
        return build_autoencoder(cfg, channels, tuple(image_size), in_dim)
    if encoder == "variational":
        return VariationalGON(
            build_decoder(cfg, channels, in_dim),
            latent_updates=m.latent_updates,
            learn_origin=m.learn_origin,
            latent_reduction=cfg.latent_reduction.name,
            kl_weight=m.kl_weight,
            kl_warmup_steps=m.kl_warmup_steps,
        )
    return GON(
        build_decoder(cfg, channels, in_dim),
        latent_updates=m.latent_updates,
        learn_origin=m.learn_origin,
        loss=cfg.loss.name,
        latent_reduction=cfg.latent_reduction.name,
        pixel_reduction=cfg.loss.get("pixel_reduction", "mean"),
        step_size=m.get("step_size", "fixed"),
        second_order=encoder != "detached",
    )


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Adam:
    """Adam (train.lr, train.weight_decay); learned step sizes at train.step_size_lr if set
    (meta-SGD's alphas start at 1 and move about lr per step: 1e-3 leaves them near 1)."""
    t = cfg.train
    alpha_lr = t.get("step_size_lr")
    steps = [p for n, p in model.named_parameters() if n == "step_sizes"]
    rest = [p for n, p in model.named_parameters() if n != "step_sizes"]
    groups = [{"params": rest}] + ([{"params": steps, "lr": alpha_lr}] if steps and alpha_lr
                                   else [{"params": steps}] if steps else [])
    return torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay)
