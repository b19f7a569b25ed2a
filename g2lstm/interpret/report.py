"""The interpretability report: every method on one or more models of one task, side by side.

:func:`write_report` is what ``experiments/interpret.py`` runs: for each section it computes the
numbers of every model on the same texts, writes the views (PNG, HTML) and returns the tables;
``report.md`` gathers them and ``report.json`` holds every number.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from .attribution import TokenAttribution, token_attributions
from .sections import gate_token_section, information_section, neuron_section, rnnvis_section
from .states import collect_states
from .views import ColoredText, activation_html, activation_png


def target_string(loaded, target_id: int) -> str:
    """The token (or class) whose logit was attributed, as text."""
    if hasattr(loaded, "vocab"):
        return loaded.vocab.decode([target_id])[0]
    if hasattr(loaded, "tokenizers"):
        return loaded.tokenizers.tgt.sp.id_to_piece(target_id)
    return str(target_id)


def concentration(scores: np.ndarray) -> tuple[float, float]:
    """``(top-1 share, normalised entropy)`` of ``|scores|``: how much of the attribution mass the
    largest token holds, and the entropy of the mass over tokens divided by ``log n`` (0: one
    token holds everything, 1: spread evenly)."""
    mass = np.abs(scores)
    if mass.sum() == 0 or mass.size < 2:
        return 1.0, 0.0
    p = mass / mass.sum()
    nonzero = p[p > 0]
    return float(p.max()), float(-(nonzero * np.log(nonzero)).sum() / np.log(p.size))


def _flat_scores(a: TokenAttribution) -> np.ndarray:
    return np.concatenate([a.scores[side] for side in a.tokens])


def attribution_summary(attributions: Sequence[TokenAttribution]) -> dict[str, float]:
    top, entropy = zip(*(concentration(_flat_scores(a)) for a in attributions))
    delta = np.array([abs(a.delta) for a in attributions])
    change = np.array([abs(a.logit - a.baseline_logit) for a in attributions])
    return {
        "texts": len(attributions),
        "top1_share_mean": float(np.mean(top)),
        "entropy_normalised_mean": float(np.mean(entropy)),
        "abs_delta_mean": float(delta.mean()),
        "abs_delta_max": float(delta.max()),
        "relative_delta_max": float((delta / np.maximum(change, 1e-12)).max()),
    }


def _colored(name: str, loaded, a: TokenAttribution) -> ColoredText:
    tokens, values = [], []
    for k, side in enumerate(a.tokens):
        if k:
            tokens.append("||")
            values.append(0.0)
        tokens += a.tokens[side]
        values += a.scores[side].tolist()
    scale = max(np.abs(values).max(), 1e-12)
    label = f"{name}: logit of '{target_string(loaded, a.target_id)}'" + (
        f" at step {a.position}" if a.position is not None else "")
    return ColoredText(label, tokens, [v / scale for v in values])


def attribution_section(models: dict, texts: Sequence, out: Path, cfg) -> tuple[list[str], dict]:
    """IG of every model on ``texts``: concentration table, coloured views of the first texts."""
    results = {
        name: token_attributions(loaded, texts, position=cfg.position, n_steps=cfg.n_steps,
                                 batch_size=cfg.batch_size, internal_batch_size=cfg.internal_batch_size,
                                 progress=True)
        for name, loaded in models.items()
    }
    summary = {name: attribution_summary(r) for name, r in results.items()}
    rows = [ColoredText(c.label + f" (text {n})", c.tokens, c.values)
            for n in range(min(cfg.views, len(texts)))
            for c in (_colored(name, models[name], results[name][n]) for name in models)]
    png = activation_png(rows, out / "attributions.png", title="Integrated Gradients, scaled per text (red +, blue -)")
    page = activation_html(rows, out / "attributions.html", title="Integrated Gradients")
    lines = [
        "## Integrated Gradients: which tokens a prediction rests on",
        "",
        f"{len(texts)} texts, {cfg.n_steps} Gauss-Legendre steps from zero embeddings; the logit of the "
        f"gold target at output step {cfg.position}. Concentration of |attribution| over a text's "
        "tokens: the top token's share (higher: more concentrated) and the normalised entropy "
        "(lower: more concentrated); delta is the completeness gap.",
        "",
        _table(summary, ["top1_share_mean", "entropy_normalised_mean", "abs_delta_mean", "abs_delta_max"]),
        "",
        f"![attributions]({png.name}) ([HTML]({page.name}))",
        "",
    ]
    numbers = {"summary": summary,
               "texts": {name: [asdict(a) | {"scores": {s: v.tolist() for s, v in a.scores.items()}}
                                for a in r] for name, r in results.items()}}
    return lines, numbers


def _table(summary: dict[str, dict], keys: Sequence[str]) -> str:
    names = list(summary)
    lines = ["| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(summary[n][key]) for n in names) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


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
