"""Passwords out of files, logs and W&B: a storage URL with its password masked, a command line
masked before a tool records it, and the one warning for a password typed on a command line.

The recipe that leaves no password on disk or on a command line (docs/experiments.md, Storage):
    export GON_STORAGE_URL=postgresql://user@host:5432/gon   # + PGPASSWORD or ~/.pgpass (libpq)
    python -m gon.train hparams_search=variants 'hydra.sweeper.storage=${oc.env:GON_STORAGE_URL}'
    python -m gon.evaluate outputs/sweep reports             # reads GON_STORAGE_URL
    python -m gon.sweep outputs/sweep                        # reads GON_STORAGE_URL

Usage:
    mask_url("postgresql://u:pw@h/db")   # 'postgresql://u:***@h/db'
    mask_argv(sys.argv)                  # every URL-valued argument masked
    with masked_argv(): wandb.init(...)  # W&B records the masked command line
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STORAGE_ENV = "GON_STORAGE_URL"  # the storage URL the CLIs read when none is given
HIDDEN = "***"
UNPARSED = "<URL hidden: gon could not parse it>"  # fail closed: never echo what we cannot mask
_SECRET_KEYS = {"password", "passwd", "pwd", "pass", "sslpassword", "token", "secret"}


def _parse(url: str):  # noqa: ANN202 (sqlalchemy.engine.URL, imported lazily)
    from sqlalchemy.engine import make_url

    return make_url(url)


def mask_url(url: str) -> str:
    """`url` with its password (user:pw@ and ?password=...) shown as ***, safe to log and to
    write to disk; a URL it cannot parse comes back as a placeholder (fail closed)."""
    try:
        parsed = _parse(url)
        query = {k: (HIDDEN if k.lower() in _SECRET_KEYS else v) for k, v in parsed.query.items()}
        masked = parsed.set(query=query).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads (a bad port, a stray character, ...)
        return UNPARSED
    return masked.replace("%2A%2A%2A", HIDDEN)  # the query's *** comes back percent-encoded


def has_password(url: str) -> bool:
    """Whether `url` carries a password (user:pw@ or ?password=...)."""
    try:
        parsed = _parse(url)
    except Exception:  # unparsed: assume the worst when it has a user-info part
        return "@" in url
    return bool(parsed.password) or any(k.lower() in _SECRET_KEYS for k in parsed.query)


def literal_password_warning(where: str) -> str:
    """The one line for a password typed into `where` (a command line)."""
    return (f"{where} holds a password in plain text (visible in ps, shell history, SLURM and "
            f"Hydra records): export {STORAGE_ENV}=<URL> and pass "
            f"'hydra.sweeper.storage=${{oc.env:{STORAGE_ENV}}}' (the CLIs read {STORAGE_ENV} "
            "themselves), or leave the password out of the URL and set PGPASSWORD or ~/.pgpass")


def storage_from_env(storage: str | None) -> str | None:
    """`storage`, or the URL in $GON_STORAGE_URL when none is given."""
    return storage or os.environ.get(STORAGE_ENV) or None


def mask_argv(argv: list[str]) -> list[str]:
    """`argv` with every URL (a `key=URL` value or a bare URL argument) masked."""
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=") if "=" in arg.split("://", 1)[0] else ("", "", arg)
        out.append(f"{key}{eq}{mask_url(value)}" if "://" in value else arg)
    return out


def mask_hydra_storage(cfg: Any) -> bool:
    """Mask a literal password in a sweeper's config (hydra.sweeper.storage and its override in
    hydra.overrides.hydra), in place, so that no job's .hydra/hydra.yaml, multirun.yaml or
    submitit pickle holds it; an ${oc.env:...} interpolation is left as it is (it holds no
    password). True if there was one to mask (the caller warns)."""
    from omegaconf import OmegaConf, read_write

    raw = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False).get("storage")
    if not isinstance(raw, str) or "${" in raw or not has_password(raw):
        return False
    with read_write(cfg.hydra):
        cfg.hydra.sweeper.storage = mask_url(raw)
        overrides = cfg.hydra.overrides.hydra
        for i, o in enumerate(overrides):
            key, _, value = o.partition("=")
            if "://" in value:
                overrides[i] = f"{key}='{mask_url(value.strip(chr(39) + chr(34)))}'"
    return True


@contextmanager
def masked_argv() -> Iterator[None]:
    """sys.argv masked for the block (for a tool that records the command line, as W&B does)."""
    saved = sys.argv
    sys.argv = mask_argv(list(saved))
    try:
        yield
    finally:
        sys.argv = saved
