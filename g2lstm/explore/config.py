"""The schema of ``g2lstm/conf/explore/config.yaml`` (the meaning of each key: the comments there)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .. import config
from ..interpret.states import FIELDS
from .information import LAYER_CHOICES


@dataclass
class AttributionOptions:
    texts: int = 100
    n_steps: int = 50
    max_steps: int = 400
    tolerance: float = 0.05
    position: int = -1

    def __post_init__(self):
        config.at_least(self, 0, "texts")
        config.positive(self, "n_steps", "max_steps", "tolerance")
        config.require(self, "max_steps", lambda v: v >= self.n_steps, f"at least n_steps ({self.n_steps})")


@dataclass
class InformationOptions:
    texts: int = 8
    layers: str = "last"
    lam: float = 0.1
    scale: float = 0.5
    steps: int = 200
    draws: int = 4

    def __post_init__(self):
        config.at_least(self, 0, "texts")
        config.one_of(self, "layers", LAYER_CHOICES)
        config.finite_positive(self, "lam", "scale")
        config.positive(self, "steps", "draws")


@dataclass
class RNNVisOptions:
    states: list[str] = field(default_factory=lambda: ["h"])
    top_words: int = 200
    clusters: int = 6

    def __post_init__(self):
        config.all_of(self, "states", lambda s: s in FIELDS, f"recorded states among {list(FIELDS)}")
        config.positive(self, "top_words", "clusters")


@dataclass
class ExploreConfig:
    checkpoints: list[str] = field(default_factory=list)
    names: Optional[list[str]] = None
    texts: Optional[str] = None
    split: str = "test"
    max_texts: int = 1000
    out: str = "runs/explore/explore.html"
    budget_mb: float = 25.0
    tracked: Optional[int] = None
    bits16: list[str] = field(default_factory=list)
    batch_size: int = 16
    threads: int = 1
    seed: int = 0
    attribution: AttributionOptions = field(default_factory=AttributionOptions)
    information: InformationOptions = field(default_factory=InformationOptions)
    rnnvis: RNNVisOptions = field(default_factory=RNNVisOptions)

    def __post_init__(self):
        config.positive(self, "max_texts", "budget_mb", "batch_size", "threads")
        config.at_least(self, 0, "tracked", optional=True)
        config.require(self, "bits16", lambda names: set(names) <= set(FIELDS), f"fields among {list(FIELDS)}")


config.store(ExploreConfig, "explore_schema")
