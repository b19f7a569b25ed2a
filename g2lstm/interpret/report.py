"""The interpretability report: every method on one or more models of one task, side by side.

:func:`write_report` is what ``experiments/interpret.py`` runs: for each section it computes the
numbers of every model on the same texts, writes the views (PNG, HTML) and returns the tables;
``report.md`` gathers them and ``report.json`` holds every number. The sections live in
:mod:`g2lstm.interpret.sections`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .. import config
from .sections import (AttributionConfig, InformationConfig, NeuronsConfig, RNNVisConfig, SectionConfig,
                       attribution_section, gate_token_section, information_section, neuron_section, rnnvis_section)
from .states import collect_states


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

    def __post_init__(self):
        config.positive(self, "max_texts", "threads", "batch_size")
        config.seed(self, "seed")


config.store(InterpretConfig, "interpret_schema")


def write_report(models: dict, texts: Sequence, out: Path, cfg, command: str) -> Path:
    """Run the enabled sections on ``models`` ({name: loaded}) and write ``out/report.md`` and
    ``out/report.json``."""
    out.mkdir(parents=True, exist_ok=True)
    tasks = {loaded.task for loaded in models.values()}
    if len(tasks) != 1:
        raise ValueError(f"the models of one report must be of one task; got {sorted(tasks)}")
    lines = [f"# Interpretability report: {', '.join(models)} ({tasks.pop()})", "",
             f"Command: `{command}`", "",
             "| model | checkpoint |", "| --- | --- |",
             *[f"| {name} | `{loaded.path}` |" for name, loaded in models.items()], ""]
    numbers: dict = {"command": command, "checkpoints": {n: str(m.path) for n, m in models.items()}}
    if cfg.attribution.enabled:
        section, numbers["attribution"] = attribution_section(models, texts, out, cfg.attribution)
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
