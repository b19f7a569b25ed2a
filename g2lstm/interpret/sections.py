"""The report's sections: token attributions (Integrated Gradients), gates per token, what units
respond to (RNNVis), neurons that decide (Hellinger), per-word information (Guan et al.). Each
takes the models or their recorded states (:func:`g2lstm.interpret.states.collect_states`), writes
its views into ``out`` and returns ``(markdown lines, numbers)``."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .. import config
from ..diagnostics import RECORDED_GATES, plot_heatmap
from .attribution import TokenAttribution, converged_attributions, delta_ratio, target_string, within_bound
from .neurons import rank_neurons
from .rnnvis import CO_CLUSTER_MODES, co_cluster, expected_response
from .states import FIELDS, LayerStates
from .views import ColoredText, activation_png, plot_memory_chips, plot_word_clouds
from .phi import layer_phi
from .word_information import word_information

# Closed-class English words: the "function words" of the paper's per-token gate figure.
FUNCTION_WORDS = frozenset(
    "a an the and or but nor so yet if then than that this these those of in on at by for with to from "
    "into onto over under about as is are was were be been being am do does did have has had not no "
    "it its he she they we you i me him her them us my his their our your who whom which what there "
    "will would shall should can could may might must".split()
)


# ----------------------------------------------------------------------------- config schemas
# The sections of g2lstm/conf/interpret/config.yaml (the meaning of each key: the comments there).


@dataclass
class SectionConfig:
    """A section of the report; ``enabled: false`` leaves it out (the schema of ``gates``)."""

    enabled: bool = True


@dataclass
class AttributionConfig(SectionConfig):
    position: int = -2  # output step whose gold-target logit is attributed
    n_steps: int = 50
    max_steps: int = 400
    tolerance: float = 0.05
    batch_size: int = 16
    internal_batch_size: Optional[int] = None
    views: int = 4

    def __post_init__(self):
        config.positive(self, "n_steps", "max_steps", "tolerance", "batch_size")
        config.require(self, "max_steps", lambda v: v >= self.n_steps, f"a value >= n_steps ({self.n_steps})")
        config.positive(self, "internal_batch_size", optional=True)
        config.at_least(self, 0, "views")


@dataclass
class RNNVisConfig(SectionConfig):
    states: list[str] = field(default_factory=lambda: ["h", "c"])
    view_states: list[str] = field(default_factory=lambda: ["h"])
    top_k: int = 300
    n_clusters: int = 6
    mode: str = "positive"
    sparse_below: float = 0.01
    seed: int = 0

    def __post_init__(self):
        config.all_of(self, "states", lambda s: s in FIELDS, f"recorded states among {list(FIELDS)}")
        config.require(self, "view_states", lambda names: set(names) <= set(self.states),
                       "states also in rnnvis.states")
        config.positive(self, "top_k", "n_clusters")
        config.one_of(self, "mode", CO_CLUSTER_MODES)
        config.at_least(self, 0, "sparse_below")
        config.seed(self, "seed")


@dataclass
class NeuronsConfig(SectionConfig):
    pairs: int = 10
    min_group: int = 20
    internals: list[str] = field(default_factory=lambda: ["i", "f", "o", "g", "c", "h"])
    top: int = 10
    permutations: int = 200
    alpha: float = 0.01
    views: int = 3
    seed: int = 0

    def __post_init__(self):
        config.positive(self, "pairs", "min_group", "top", "permutations")
        config.all_of(self, "internals", lambda s: s in FIELDS, f"recorded internals among {list(FIELDS)}")
        config.require(self, "alpha", lambda v: 0 < v <= 1, "a significance level in (0, 1]")
        config.at_least(self, 0, "views")
        config.seed(self, "seed")


@dataclass
class InformationConfig(SectionConfig):
    max_texts: int = 16
    lam: float = 0.1
    scale: float = 0.5
    steps: int = 200
    draws: int = 4
    views: int = 3
    seed: int = 0

    def __post_init__(self):
        config.positive(self, "max_texts", "lam", "scale", "steps", "draws")
        config.at_least(self, 0, "views")
        config.seed(self, "seed")


GATE_FIELDS = {"input": "i", "forget": "f", "cell": "g", "output": "o"}


def _word(token: str) -> str:
    return token.replace("\u2581", "").lower()  # sentencepiece's word-start mark


def token_kind(token: str) -> str:
    """``'punctuation'`` (no letter or digit), ``'function'`` (a closed-class word) or ``'content'``."""
    word = _word(token)
    if not any(ch.isalnum() for ch in word):
        return "punctuation"
    return "function" if word in FUNCTION_WORDS else "content"


def table(columns: Sequence[str], rows: Sequence[tuple[str, Sequence]]) -> str:
    """A markdown table: one row per ``(label, values)``."""
    def cell(v):
        return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)

    lines = ["| | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    lines += [f"| {label} | " + " | ".join(cell(v) for v in values) + " |" for label, values in rows]
    return "\n".join(lines)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)


def colored_view(rows: Sequence[ColoredText], out, stem: str, title: str) -> str:
    """Write ``stem.png`` of coloured text (for papers; the explorer page is the interactive view);
    the markdown line showing it."""
    png = activation_png(rows, out / f"{stem}.png", title=title)
    return f"![{stem}]({png.name})"


# --------------------------------------------------------------------------- Integrated Gradients
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


def attribution_summary(attributions: Sequence[TokenAttribution], steps: Sequence[int],
                        tolerance: float) -> dict[str, float]:
    top, entropy = zip(*(concentration(_flat_scores(a)) for a in attributions))
    delta = np.array([abs(a.delta) for a in attributions])
    return {
        "texts": len(attributions),
        "top1_share_mean": float(np.mean(top)),
        "entropy_normalised_mean": float(np.mean(entropy)),
        "abs_delta_mean": float(delta.mean()),
        "abs_delta_max": float(delta.max()),
        "relative_delta_max": max(delta_ratio(a) for a in attributions),
        "outside_bound": sum(not within_bound(a, tolerance) for a in attributions),
        "steps_mean": float(np.mean(steps)),
        "steps_max": max(steps),
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


def attribute(models: dict, texts: Sequence, cfg) -> dict[str, tuple[list[TokenAttribution], list[int]]]:
    """IG of every model on ``texts``, refined per text to ``cfg.tolerance``
    (:func:`converged_attributions`): ``{name: (attributions, steps)}``. The explorer page shows
    the same results (:func:`g2lstm.interpret.report.write_report`)."""
    return {
        name: converged_attributions(loaded, texts, position=cfg.position, n_steps=cfg.n_steps,
                                     max_steps=cfg.max_steps, tolerance=cfg.tolerance, batch_size=cfg.batch_size,
                                     internal_batch_size=cfg.internal_batch_size, progress=True)
        for name, loaded in models.items()
    }


def _steps_line(name: str, attributions: Sequence[TokenAttribution], steps: Sequence[int], outside: Sequence[int],
                cfg) -> str:
    """One model's steps per text (the texts that needed more than ``n_steps`` by index) and the
    texts still outside the bound (``outside``), with their ``|delta| / |F(x) - F(0)|``."""
    more = {}
    for n, count in enumerate(steps):
        if count > cfg.n_steps:
            more.setdefault(count, []).append(n)
    parts = [f"{len(steps) - sum(map(len, more.values()))} texts at {cfg.n_steps} steps"]
    parts += [f"{count} steps: text{'s' * (len(indices) > 1)} {', '.join(map(str, indices))}"
              for count, indices in sorted(more.items())]
    if outside:
        bound = (f"**{len(outside)} outside the bound** at {cfg.max_steps} steps: "
                 + ", ".join(f"text {n} ({delta_ratio(attributions[n]):.3g})" for n in outside))
    else:
        bound = "All within the bound"
    return f"- **{name}**: " + "; ".join(parts) + f". {bound}."


def attribution_section(models: dict, texts: Sequence, attributed: dict, out: Path, cfg) -> tuple[list[str], dict]:
    """The IG of :func:`attribute` (``attributed``): concentration table, steps per text and the
    texts outside the completeness bound, coloured views of the first texts."""
    summary = {name: attribution_summary(a, steps, cfg.tolerance) for name, (a, steps) in attributed.items()}
    outside = {name: [n for n, x in enumerate(a) if not within_bound(x, cfg.tolerance)]
               for name, (a, _) in attributed.items()}
    rows = [ColoredText(c.label + f" (text {n})", c.tokens, c.values)
            for n in range(min(cfg.views, len(texts)))
            for c in (_colored(name, models[name], attributed[name][0][n]) for name in models)]
    lines = [
        "## Integrated Gradients: which tokens a prediction rests on",
        "",
        f"{len(texts)} texts; Gauss-Legendre steps from zero embeddings, {cfg.n_steps} to start with, doubled "
        f"per text until the completeness gap |delta| <= {cfg.tolerance:g} |F(x) - F(0)| or {cfg.max_steps} "
        f"steps; the logit of the gold target at output step {cfg.position}. Concentration of |attribution| "
        "over a text's tokens: the top token's share (higher: more concentrated) and the normalised entropy "
        "(lower: more concentrated).",
        "",
        table(list(summary), [(key, [summary[name][key] for name in summary]) for key in
                              ("top1_share_mean", "entropy_normalised_mean", "abs_delta_mean", "abs_delta_max",
                               "relative_delta_max", "outside_bound", "steps_mean", "steps_max")]),
        "",
        "Steps per text (texts by index, from 0), and the texts whose |delta| / |F(x) - F(0)| is still "
        f"above {cfg.tolerance:g} (their scores do not add up to the logit's change; read them with care):",
        "",
        *[_steps_line(name, a, steps, outside[name], cfg) for name, (a, steps) in attributed.items()],
        "",
        colored_view(rows, out, "attributions", "Integrated Gradients, scaled per text (red +, blue -)"),
        "",
    ]
    numbers = {
        "n_steps": cfg.n_steps, "max_steps": cfg.max_steps, "tolerance": cfg.tolerance,
        "summary": summary,
        "outside_bound": {name: [{"text": n, "delta_ratio": delta_ratio(a[n]), "steps": steps[n]} for n in outside[name]]
                          for name, (a, steps) in attributed.items()},
        "texts": {name: [asdict(x) | {"scores": {s: v.tolist() for s, v in x.scores.items()}, "steps": steps[n],
                                      "delta_ratio": delta_ratio(x), "within_bound": within_bound(x, cfg.tolerance)}
                         for n, x in enumerate(a)]
                  for name, (a, steps) in attributed.items()},
    }
    return lines, numbers


# --------------------------------------------------------------------------- RNNVis and gates
def updates(states: LayerStates, name: str) -> np.ndarray:
    """``D_t = s_t - s_{t-1}`` (``D_1 = s_1``) of state ``name`` over every text, stacked."""
    return np.concatenate([np.diff(s, axis=0, prepend=0.0) for s in states.values[name]])


def _clusters(response: np.ndarray, wanted: int, mode: str) -> int:
    """``wanted``, or fewer when the chosen part of the graph has fewer non-zero rows or columns."""
    part = {"positive": response > 0, "negative": response < 0, "absolute": response != 0}[mode]
    return max(1, min(wanted, part.any(1).sum(), part.any(0).sum()))


def rnnvis_section(states: dict[str, dict[str, LayerStates]], out, cfg) -> tuple[list[str], dict]:
    names = list(states)
    layer_keys = list(states[names[0]])
    vocabulary: dict[str, int] = {}
    numbers: dict = {}
    rows_sparse, rows_sat = [], []
    images = []
    for key in layer_keys:
        for state in cfg.states:
            row_sparse, row_mean = [], []
            for name in names:
                layer = states[name][key]
                d = np.abs(updates(layer, state))
                row_sparse.append(float((d < cfg.sparse_below).mean()))
                row_mean.append(float(d.mean()))
                ids = [[vocabulary.setdefault(t, len(vocabulary)) for t in tokens] for tokens in layer.tokens]
                words, response = expected_response(layer.values[state], ids, top_k=cfg.top_k)
                rows, cols = co_cluster(response, _clusters(response, cfg.n_clusters, cfg.mode), mode=cfg.mode,
                                        seed=cfg.seed)
                inverse = {i: t for t, i in vocabulary.items()}
                strings = [inverse[int(w)] for w in words]
                numbers.setdefault(name, {}).setdefault(key, {})[state] = {
                    "share_updates_below": row_sparse[-1], "mean_abs_update": row_mean[-1],
                    "words": strings, "word_clusters": rows.tolist(), "unit_clusters": cols.tolist(),
                    "response": response.round(5).tolist(),
                }
                if state in cfg.view_states:
                    stem = _slug(f"{name}_{key}_{state}")
                    positive = np.clip(response, 0, None) if cfg.mode == "positive" else np.abs(response)
                    strength = np.array([positive[i, cols == rows[i]].sum() if rows[i] >= 0 else 0.0
                                         for i in range(len(words))])
                    title = f"{name} {key} {state}"
                    plot_word_clouds(strings, rows, strength, out / f"clouds_{stem}.png", title=title)
                    plot_memory_chips(response, rows, cols, out / f"chips_{stem}.png", title=title)
                    images.append((title, f"clouds_{stem}.png", f"chips_{stem}.png"))
            rows_sparse.append((f"{key} {state}: share of abs(D) < {cfg.sparse_below}", row_sparse))
            rows_sparse.append((f"{key} {state}: mean abs(D)", row_mean))
        for gate in ("i", "f"):
            shares = []
            for name in names:
                values = states[name][key].stacked(gate)
                shares.append(float(((values < 0.1) | (values > 0.9)).mean()))
                numbers[name][key][f"{gate}_saturated"] = shares[-1]
            rows_sat.append((f"{key} gate {gate}: share < 0.1 or > 0.9", shares))
    lines = [
        "## RNNVis: how units update, what they respond to",
        "",
        "Updates `D_t = s_t - s_{t-1}` of the hidden (`h`) and cell (`c`) states over the texts: the "
        "share of small updates (sparser: higher) and their mean size; gate saturation. Word clusters "
        f"and unit clusters: spectral co-clustering of the {cfg.mode} part of the words x units matrix "
        f"of expected responses (top {cfg.top_k} words).",
        "",
        table(names, rows_sparse + rows_sat),
        "",
    ]
    for title, clouds, chips in images:
        lines += [f"**{title}**", "", f"![word clouds]({clouds}) ![memory chips]({chips})", ""]
    return lines, numbers


def gate_token_section(states: dict[str, dict[str, LayerStates]], out, cfg) -> tuple[list[str], dict]:
    """The paper's per-token gate figure in numbers: the forget and input gates (mean over units)
    on punctuation, function words and content words."""
    names = list(states)
    numbers: dict = {}
    rows = []
    for key in states[names[0]]:
        for gate in ("f", "i"):
            for kind in ("punctuation", "function", "content"):
                row = []
                for name in names:
                    layer = states[name][key]
                    kinds = np.array([token_kind(t) for tokens in layer.tokens for t in tokens])
                    per_step = layer.stacked(gate).mean(1)
                    value = float(per_step[kinds == kind].mean()) if (kinds == kind).any() else float("nan")
                    numbers.setdefault(name, {}).setdefault(key, {})[f"{gate}_{kind}"] = value
                    row.append(value)
                rows.append((f"{key} {gate} on {kind}", row))
    figures = []
    for key in states[names[0]]:
        first = states[names[0]][key]
        averages = {
            name: {key: torch.tensor(np.stack([states[name][key].values[GATE_FIELDS[g]][0].mean(1)
                                               for g in RECORDED_GATES], axis=1))}
            for name in names
        }
        path = out / f"gates_{_slug(key)}.png"
        plot_heatmap(first.tokens[0], averages, path, key, gates=("input", "forget"),
                     title=f"mean gate value per token, {key} (first text)")
        figures.append(path.name)
    lines = [
        "## Gates per token: are G2's forget gates low on function words and punctuation?",
        "",
        "Mean over units of the forget (`f`) and input (`i`) gates, averaged over the steps that read "
        "punctuation, closed-class (function) words and other (content) words.",
        "",
        table(names, rows),
        "",
        *[f"![gates]({f})" for f in figures],
        "",
    ]
    return lines, numbers


# --------------------------------------------------------------------------- neurons
def _pairs(layer: LayerStates, count: int, min_group: int) -> list[tuple[str, str]]:
    inputs = [t for tokens in layer.tokens for t in tokens]
    outputs = [t for symbols in layer.outputs for t in symbols]
    joint, single = Counter(zip(inputs, outputs)), Counter(inputs)
    eligible = [(pair, n) for pair, n in joint.items() if n >= min_group and single[pair[0]] - n >= min_group]
    return [pair for pair, _ in sorted(eligible, key=lambda item: (-item[1], item[0]))[:count]]


def neuron_section(states: dict[str, dict[str, LayerStates]], out, cfg) -> tuple[list[str], dict]:
    """Hellinger ranking of every unit of every layer direction and internal for (input, output)
    pairs, the reverse view of each model's best neuron, and coloured views of it."""
    names = list(states)
    keys = [k for k, layer in states[names[0]].items() if layer.outputs is not None]
    if not keys:
        return ["## Neurons", "", "No layer's steps have output symbols; skipped.", ""], {}
    pairs = _pairs(states[names[0]][keys[-1]], cfg.pairs, cfg.min_group)
    if not pairs:
        return ["## Neurons", "", f"No (input, output) pair has {cfg.min_group} steps in and out of it; skipped.", ""], {}
    numbers: dict = {name: {} for name in names}
    best: dict[str, tuple] = {}
    rows = []
    for key in keys:
        for internal in cfg.internals:
            top1, significant = [], []
            for name in names:
                layer = states[name][key]
                inputs = np.array([t for tokens in layer.tokens for t in tokens])
                outputs = np.array([t for symbols in layer.outputs for t in symbols])
                activations = layer.stacked(internal)
                ranked = {}
                for a, b in pairs:
                    at_a = inputs == a
                    ranking = rank_neurons(activations[at_a], outputs[at_a] == b, permutations=cfg.permutations,
                                           seed=cfg.seed)
                    ranked[f"{a} -> {b}"] = [s._asdict() for s in ranking[: cfg.top]]
                    head = ranking[0]
                    if name not in best or head.distance > best[name][0]:
                        best[name] = (head.distance, key, internal, head.unit)
                numbers[name].setdefault(key, {})[internal] = ranked
                top1.append(float(np.mean([r[0]["distance"] for r in ranked.values()])))
                significant.append(float(np.mean([sum(s["p_value"] <= cfg.alpha for s in r) for r in ranked.values()])))
            rows.append((f"{key} {internal}: top-1 distance", top1))
            rows.append((f"{key} {internal}: units of the top {cfg.top} with p <= {cfg.alpha}", significant))
    reverse_lines, views = [], []
    for name in names:
        distance, key, internal, unit = best[name]
        scores = []
        for pair, ranking in numbers[name][key][internal].items():
            for s in ranking:
                if s["unit"] == unit:
                    scores.append((s["distance"], s["p_value"], pair))
        scores.sort(reverse=True)
        numbers[name]["best_neuron"] = {"layer": key, "internal": internal, "unit": unit,
                                        "pairs": [{"pair": p, "distance": d, "p_value": q} for d, q, p in scores]}
        reverse_lines.append(f"- **{name}**: `{key}` {internal} unit {unit}: " + ", ".join(
            f"`{p}` {d:.2f} (p={q:.3f})" for d, q, p in scores[:5]))
        layer = states[name][key]
        for n in range(min(cfg.views, len(layer.tokens))):
            for state in ("c", "h", internal):
                values = layer.values[state][n][:, unit]
                shown = np.tanh(values) if state == "c" else (2 * values - 1 if state in "ifo" else values)
                views.append(ColoredText(f"{name} {key} unit {unit} {state} (text {n})", layer.tokens[n], shown))
    lines = [
        "## Neurons that decide: Hellinger distance between activation histograms",
        "",
        f"For each of the {len(pairs)} most frequent (input, output) pairs (at least {cfg.min_group} steps "
        "in and out), every unit's activations at steps with that input, split by whether the output "
        "is that symbol; Hellinger distance on shared bins (Rice's rule on the smaller group) with a "
        f"{cfg.permutations}-permutation p-value. Pairs: " + ", ".join(f"`{a} -> {b}`" for a, b in pairs) + ".",
        "",
        table(names, rows),
        "",
        "Best neuron of each model and the pairs it separates best (reverse view):",
        "",
        *reverse_lines,
        "",
        colored_view(views, out, "neurons", "best neuron per model: tanh(c), h, and its internal"),
        "",
    ]
    return lines, numbers


# --------------------------------------------------------------------------- word information
def information_section(models: dict, texts: Sequence, states: dict[str, dict[str, LayerStates]], out, cfg):
    names = list(models)
    chosen = list(texts[: cfg.max_texts])
    numbers: dict = {}
    rows, views = [], []
    side0 = list(models[names[0]].encode(chosen[:1]).tokens)[0]
    keys = [k for k, layer in states[names[0]].items() if layer.side == side0]
    for key in keys:
        mean_entropy, spread = [], []
        for name in names:
            loaded = models[name]
            batch = loaded.encode(chosen)
            phi, x = layer_phi(loaded.model, batch, side0, states[name][key])
            lengths = torch.tensor([len(t) for t in batch.tokens[side0]])
            mask = torch.arange(x.shape[1])[None] < lengths[:, None]
            with torch.backends.cudnn.flags(enabled=False):
                result = word_information(phi, x, mask=mask.to(x.device), lam=cfg.lam, scale=cfg.scale,
                                          steps=cfg.steps, draws=cfg.draws, seed=cfg.seed, progress=True)
            entropy = result.entropy.cpu().numpy()
            per_text = [entropy[n, : lengths[n]] for n in range(len(chosen))]
            numbers.setdefault(name, {})[key] = {"entropy": [e.tolist() for e in per_text],
                                                 "tokens": batch.tokens[side0]}
            mean_entropy.append(float(np.mean(np.concatenate(per_text))))
            spread.append(float(np.mean([e.std() for e in per_text])))
            for n in range(min(cfg.views, len(chosen))):
                e = per_text[n]
                centred = -(e - e.mean())
                scale = max(np.abs(centred).max(), 1e-12)
                views.append(ColoredText(f"{name} {key} (text {n})", batch.tokens[side0][n], centred / scale))
        rows.append((f"{key}: mean H per word (nats)", mean_entropy))
        rows.append((f"{key}: spread of H within a text (std)", spread))
    lines = [
        "## Per-word information in each layer's hidden states (Guan et al. 2019)",
        "",
        f"{len(chosen)} texts; entropy `H_i` of each word's largest noise that keeps the layer's hidden "
        f"states (lambda {cfg.lam}, scale {cfg.scale}, {cfg.steps} steps x {cfg.draws} draws). Lower: "
        "the layer kept more of the word; a larger spread within a text: information more concentrated "
        "on a few words.",
        "",
        table(names, rows),
        "",
        colored_view(views, out, "information", "per-word information: red = kept (low entropy), blue = forgotten"),
        "",
    ]
    return lines, numbers
