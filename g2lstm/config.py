"""Hydra configs of the package's tasks, composed from Python as the entry points compose them."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

CONF_ROOT = Path(__file__).resolve().parents[1] / "conf"


def config_dir(root: str) -> Path:
    """The folder of one config root (``lm``, ``mt``, ``paper``, ...)."""
    path = CONF_ROOT / root
    if not (path / "config.yaml").is_file():
        known = sorted(p.name for p in CONF_ROOT.iterdir() if (p / "config.yaml").is_file())
        raise ValueError(f"no config root {root!r} under {CONF_ROOT}; expected one of {known}")
    return path


def compose_config(root: str, overrides: list[str] | None = None) -> DictConfig:
    """The composed ``conf/<root>/config.yaml`` with Hydra-style ``overrides``."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir(root)), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))
