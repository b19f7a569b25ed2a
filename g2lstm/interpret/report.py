"""The interpretability report: every method on one or more models of one task, side by side.

:func:`write_report` is what ``experiments/interpret.py`` runs: for each section it computes the
numbers of every model on the same texts, writes the views (PNG, for papers) and returns the tables;
``report.md`` gathers them and links the explorer page of the same models and texts
(``explore.html``, :mod:`g2lstm.explore`), the interactive view; ``report.json`` holds every number.
The sections live in :mod:`g2lstm.interpret.sections`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .. import config
from ..explore import build
from ..explore.build import MAX_MODELS
from ..explore.config import RNNVisOptions
from .sections import (AttributionConfig, InformationConfig, NeuronsConfig, RNNVisConfig, SectionConfig, attribute,
                       attribution_section, gate_token_section, information_section, neuron_section, rnnvis_section)
from .states import FIELDS, collect_states

PAGE = "explore.html"  # the explorer page, next to report.md


@dataclass
class ExploreOptions(SectionConfig):
    """The explorer page of the report's models and texts (the keys of ``g2lstm/conf/explore``
    that the report does not set itself)."""

    budget_mb: float = 5.0
    tracked: Optional[int] = None
    bits16: list[str] = field(default_factory=list)
    rnnvis: RNNVisOptions = field(default_factory=RNNVisOptions)

    def __post_init__(self):
        config.finite_positive(self, "budget_mb")
        config.at_least(self, 0, "tracked", optional=True)
        config.require(self, "bits16", lambda names: set(names) <= set(FIELDS), f"fields among {list(FIELDS)}")


@dataclass
class InterpretConfig:
    """The schema of ``g2lstm/conf/interpret/config.yaml`` (the meaning of each key: the comments
    there); the sections' schemas are in :mod:`g2lstm.interpret.sections`."""

    checkpoints: list[str] = field(default_factory=list)
    names: Optional[list[str]] = None
    texts: Optional[str] = None
    max_texts: int = 200
    out_dir: str = "runs/interpret/report"
    threads: int = 1
    seed: int = 0
    batch_size: int = 16  # texts per forward when recording states
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    gates: SectionConfig = field(default_factory=SectionConfig)
    rnnvis: RNNVisConfig = field(default_factory=RNNVisConfig)
    neurons: NeuronsConfig = field(default_factory=NeuronsConfig)
    information: InformationConfig = field(default_factory=InformationConfig)
    explore: ExploreOptions = field(default_factory=ExploreOptions)

    def __post_init__(self):
        config.positive(self, "max_texts", "threads", "batch_size")
        config.seed(self, "seed")


config.store(InterpretConfig, "interpret_schema")


def write_report(models: dict, texts: Sequence, out: Path, cfg, command: str,
                 references: Optional[Sequence] = None) -> Path:
    """Run the enabled sections on ``models`` ({name: loaded}), build the explorer page and write
    ``out/report.md`` and ``out/report.json``. ``references``: per text, the gold label
    (classifier) or output symbols (transliterator), for the page's metrics."""
    tasks = {loaded.task for loaded in models.values()}
    if len(tasks) != 1:
        raise ValueError(f"the models of one report must be of one task; got {sorted(tasks)}")
    if cfg.explore.enabled and len(models) > MAX_MODELS:
        raise ValueError(f"explore.enabled=true: the explorer page shows 1 to {MAX_MODELS} models, the report has "
                         f"{len(models)}; pass explore.enabled=false or fewer checkpoints")
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Interpretability report: {', '.join(models)} ({tasks.pop()})", "",
             f"Command: `{command}`", "",
             "| model | checkpoint |", "| --- | --- |",
             *[f"| {name} | `{loaded.path}` |" for name, loaded in models.items()], ""]
    numbers: dict = {"command": command, "checkpoints": {n: str(m.path) for n, m in models.items()}}
    attributed = attribute(models, texts, cfg.attribution) if cfg.attribution.enabled else None
    if cfg.explore.enabled:
        # before the slower sections, so that a page over its budget stops the run early
        _explore_page(models, texts, references, attributed, out / PAGE, cfg)
        lines += [f"Explore these models on these texts, text by text and unit by unit: [{PAGE}]({PAGE}) "
                  "(one offline page, docs/explore.md: states and gates per token, "
                  + ("Integrated Gradients per token, " if attributed else "")
                  + "select and match, unit search, co-clusters).", ""]
        numbers["explore"] = PAGE
    if attributed is not None:
        section, numbers["attribution"] = attribution_section(models, texts, attributed, out, cfg.attribution)
        lines += section
    if cfg.rnnvis.enabled or cfg.gates.enabled or cfg.neurons.enabled or cfg.information.enabled:
        states = {name: collect_states(loaded, texts, cfg.batch_size, progress=True) for name, loaded in models.items()}
        for section_name, section in (("gates", gate_token_section), ("rnnvis", rnnvis_section),
                                      ("neurons", neuron_section)):
            if cfg[section_name].enabled:
                section_lines, numbers[section_name] = section(states, out, cfg[section_name])
                lines += section_lines
        if cfg.information.enabled:
            section_lines, numbers["information"] = information_section(models, texts, states, out, cfg.information)
            lines += section_lines
    (out / "report.json").write_text(json.dumps(numbers, indent=1) + "\n")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _explore_page(models: dict, texts: Sequence, references, attributed, path: Path, cfg) -> Path:
    """The explorer page of the report's models and texts; its Integrated Gradients are the
    attribution section's (none when that section is off)."""
    page = cfg.explore
    return build(models, texts, path, references=references, budget_mb=float(page.budget_mb), tracked=page.tracked,
                 bits={f: 16 for f in page.bits16}, batch_size=int(cfg.batch_size), attribution_texts=0,
                 information_texts=0,  # the report's own section learns it; twice would double the slowest part
                 ig_tolerance=float(cfg.attribution.tolerance), attributions=attributed,
                 response_states=tuple(page.rnnvis.states), top_words=int(page.rnnvis.top_words),
                 clusters=int(page.rnnvis.clusters), seed=int(cfg.seed), key_prefix="explore.")
