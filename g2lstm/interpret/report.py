"""The interpretability report: every method on one or more models of one task, side by side.

:func:`write_report` is what ``experiments/interpret.py`` runs: for each section it computes the
numbers of every model on the same texts, writes the views (PNG, HTML) and returns the tables;
``report.md`` gathers them and ``report.json`` holds every number. The sections live in
:mod:`g2lstm.interpret.sections`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .sections import attribution_section, gate_token_section, information_section, neuron_section, rnnvis_section
from .states import collect_states


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
