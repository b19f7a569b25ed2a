"""Build the explorer page of 1 to 4 models of one task over a set of texts.

What the page holds (it says so itself, in its header):

- for every text: its tokens, each model's metric, per-token loss, output symbols, mean gate
  saturation and, for the first ``attribution_texts`` texts, Integrated Gradients per token and,
  for the first ``information_texts``, per-word information (Guan et al. 2019) per token of the
  last layer of each side (or of every layer);
- for every layer direction of every model, aggregates over every text: per unit the shares of
  i, f, o below 0.1 and above 0.9, gate histograms, the expected response of units to the most
  frequent words and its co-clusters;
- full per-step tracks of h, c, i, f, g, o for a sample of texts (the first ones, as many as the
  size budget allows, or ``tracked`` of them); the browser computes the rest from these (select
  and match, Hellinger search, a unit's contexts and histogram, differences between models).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..interpret.attribution import converged_attributions, within_bound
from ..interpret.sections import concentration
from ..interpret.states import FIELDS, collect_states
from .aggregate import SATURATION_GATES, LayerAggregate, co_clusters
from .information import LAYER_CHOICES, entropy, explained_layers, feature_spread, layer_information
from .outcomes import HIGHER_IS_BETTER, outcomes
from .pack import Payload, encode, page_html

MAX_MODELS = 4
PAGE_OVERHEAD = 120_000  # bytes of HTML, CSS and JavaScript around the data (checked after the build)


def _named(models) -> dict:
    from ..tasks import TaskModel, load

    if isinstance(models, Mapping):
        named = dict(models)
    else:
        models = list(models)
        named = {}
        for m in models:
            loaded = m if isinstance(m, TaskModel) else load(m)
            name = str(loaded.config.get("model", {}).get("cell", "model"))
            named[name if name not in named else f"{name}_{len(named)}"] = loaded
    named = {name: m if isinstance(m, TaskModel) else load(m) for name, m in named.items()}
    if not 1 <= len(named) <= MAX_MODELS:
        raise ValueError(f"the explorer shows 1 to {MAX_MODELS} models; got {len(named)}")
    tasks = {m.task for m in named.values()}
    if len(tasks) != 1:
        raise ValueError(f"the models of one page must be of one task; got {sorted(tasks)}")
    return named


def _display(text) -> str:
    return " → ".join(text) if isinstance(text, (tuple, list)) else str(text)


def _run_saturation(loaded) -> list[dict]:
    """Gate saturation over training from the run folder's ``metrics.jsonl`` (empty without one)."""
    path = Path(loaded.path).parent / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash: the rest is still worth showing
            continue
        if record.get("event") == "gates" and "pooled" in record:
            records.append({"step": record["step"], "pooled": record["pooled"]})
    return records


def _round(values, digits: int = 5) -> list:
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), digits) for v in values]


class _ModelData:
    """Everything gathered about one model, before it is packed."""

    def __init__(self, name, loaded):
        self.name, self.loaded = name, loaded
        self.layers: dict[str, dict] = {}  # key -> {"name", "layer", "direction", "side", "units": {field: n}}
        self.aggregates: dict[str, LayerAggregate] = {}
        self.tokens: dict[str, list[list[str]]] = {}
        self.tracks: dict[str, dict[str, list[np.ndarray]]] = {}  # key -> field -> per tracked text
        self.text_saturation: list[float] = []
        self.mean_h: dict[str, list[np.ndarray]] = {}  # key -> per text, h's mean over its steps (sigma_f)


def _gather(data: _ModelData, texts, tracked: set[int], words: dict[str, int], batch_size: int,
            response_states: tuple[str, ...], bar) -> None:
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        states = collect_states(data.loaded, chunk, batch_size)
        saturated = np.zeros(len(chunk))
        counted = np.zeros(len(chunk))
        for key, layer in states.items():
            data.layers.setdefault(key, {"name": layer.name, "layer": layer.layer, "direction": layer.direction,
                                                "side": layer.side,
                                                "units": {f: int(layer.values[f][0].shape[1]) for f in FIELDS}})
            aggregate = data.aggregates.setdefault(key, LayerAggregate())
            side_tokens = data.tokens.setdefault(layer.side, [])
            first_of_side = len(side_tokens) < start + len(chunk)
            for n, tokens in enumerate(layer.tokens):
                if first_of_side:
                    side_tokens.append(tokens)
                values = {f: layer.values[f][n] for f in FIELDS}
                ids = np.array([words.setdefault(t, len(words)) for t in tokens], dtype=np.int64)
                aggregate.add(values, ids, response_states)
                data.mean_h.setdefault(key, []).append(values["h"].mean(0))
                for gate in SATURATION_GATES:
                    v = values[gate]
                    saturated[n] += ((v < 0.1) | (v > 0.9)).sum()
                    counted[n] += v.size
                if start + n in tracked:
                    per_field = data.tracks.setdefault(key, {f: [] for f in FIELDS})
                    for f in FIELDS:
                        per_field[f].append(values[f])
        data.text_saturation += (saturated / np.maximum(counted, 1)).tolist()
        bar.update(len(chunk))


def _probe(loaded, text) -> dict:
    """The layers of one model, from one text: per layer key, its side and units per field."""
    return {key: (layer.side, {f: layer.values[f][0].shape[1] for f in FIELDS})
            for key, layer in collect_states(loaded, [text]).items()}


def reserved_bytes(models: Mapping, texts: Sequence, top_words: int, states: int, information_texts: int = 0) -> int:
    """What the page holds besides the full tracks, estimated from above (after base64): the page's
    code, texts and tokens, per-text numbers, per-unit aggregates and response matrices, and the
    per-word information of the first ``information_texts`` texts."""
    text_bytes = sum(len(_display(t).encode("utf-8")) for t in texts)
    per_model = 0
    for loaded in models.values():
        probed = _probe(loaded, texts[0]).values()
        for side, units in probed:
            per_model += top_words * units["h"] * states + 2 * 3 * 8 * units["i"] + 4 * 60 * 8
        per_model += 3 * text_bytes + 80 * len(texts)  # predictions, outputs, values, loss per token
        # at most every layer direction: a uint16 per token (tokens <= bytes of text) and a spread per text
        per_model += len(probed) * (2 * sum(len(_display(t).encode("utf-8")) + 2 for t in texts[:information_texts])
                                    + 10 * min(information_texts, len(texts)))
    return PAGE_OVERHEAD + int(4 / 3 * (3 * text_bytes + 20 * len(texts) + per_model))


def choose_tracked(models: Mapping, texts: Sequence, budget_bytes: int, bits: Mapping[str, int],
                   reserved: int) -> list[int]:
    """The first texts whose full tracks fit in what the budget leaves after ``reserved`` bytes;
    counted before compression and with base64's 4/3, so the page stays under the budget."""
    cost_per_side = {}
    for name, loaded in models.items():
        cost_per_side[name] = {}
        for side, units in _probe(loaded, texts[0]).values():
            size = sum(units[f] * bits.get(f, 8) // 8 for f in FIELDS)
            cost_per_side[name][side] = cost_per_side[name].get(side, 0) + size
    available = (budget_bytes - reserved) * 3 / 4
    chosen, used = [], 0.0
    for n, text in enumerate(texts):
        cost = 0
        for name, loaded in models.items():
            tokens = loaded.encode([text]).tokens
            cost += sum(len(tokens[side][0]) * size for side, size in cost_per_side[name].items())
        if used + cost > available:
            break
        chosen.append(n)
        used += cost
    return chosen


def build(
    models,
    texts: Sequence,
    out: str | os.PathLike = "runs/explore/explore.html",
    *,
    references: Sequence | None = None,
    title: str | None = None,
    key_prefix: str = "",
    budget_mb: float = 25.0,
    tracked: int | None = None,
    bits: Mapping[str, int] | None = None,
    batch_size: int = 16,
    attribution_texts: int = 100,
    ig_steps: int = 50,
    ig_max_steps: int = 400,
    ig_tolerance: float = 0.05,
    ig_position: int = -1,
    attributions: Mapping[str, tuple[Sequence, Sequence[int]]] | None = None,
    information_texts: int = 8,
    information_layers: str = "last",
    information_lam: float = 0.1,
    information_scale: float = 0.5,
    information_steps: int = 200,
    information_draws: int = 4,
    response_states: Sequence[str] = ("h",),
    top_words: int = 200,
    clusters: int = 6,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the explorer page of ``models`` on ``texts`` to ``out``; returns its path.

    Args:
        models: ``{name: g2lstm.load result or checkpoint path}``, or a list of them (named by
            their ``model.cell``); 1 to 4 models of one task.
        texts: what the models' ``encode`` takes (MT: ``(source, target)`` pairs or sources).
        references: per text, the gold label (classifier) or output symbols (transliterator);
            LM and MT texts carry their own targets.
        budget_mb: the most the page may weigh (MB, 10^6 bytes); full tracks fill what is left.
        tracked: how many texts get full tracks (``None``: as many as the budget allows).
        bits: per field (h, c, i, f, g, o), 8 or 16 bits of quantisation (default 8 for all).
        attribution_texts: texts attributed with Integrated Gradients (0: none), from ``ig_steps``
            Gauss-Legendre steps doubled per text until ``|delta| <= ig_tolerance * |F(x) - F(0)|``
            or ``ig_max_steps``; ``ig_position``: the attributed output step (as
            :func:`g2lstm.interpret.token_attributions`' ``position``).
        attributions: per model, the ``(attributions, steps)`` of
            :func:`g2lstm.interpret.attribution.converged_attributions` on the first texts, computed
            to ``ig_tolerance``; shown instead of computing them here (the interpretability report
            passes its own, so IG runs once), and ``attribution_texts``, ``ig_steps``,
            ``ig_max_steps`` and ``ig_position`` are not used.
        information_texts: texts whose per-word information (Guan et al. 2019) is learnt (0: none;
            ``sigma_f`` is the hidden states' spread over all ``texts``, so it needs 2 of them), for the
            ``information_layers`` (``'last'``: each side's last layer, every direction of it;
            ``'all'``), with ``information_lam``, ``_scale``, ``_steps``, ``_draws`` as
            :func:`g2lstm.interpret.word_information`'s ``lam``, ``scale``, ``steps``, ``draws``.
        response_states: states whose expected response to words (RNNVis) is kept.
        key_prefix: put before the option names in errors (the report's page: ``'explore.'``).
        top_words, clusters: words of the response matrices, co-clusters wanted per matrix.
    """
    began = time.perf_counter()
    torch.manual_seed(seed)
    named = _named(models)
    task = next(iter(named.values())).task
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: the explorer needs at least one text")
    bits = {f: 8 for f in FIELDS} | dict(bits or {})
    unknown = set(bits) - set(FIELDS) or {f for f, b in bits.items() if b not in (8, 16)}
    if unknown:
        raise ValueError(f"bits must map fields among {list(FIELDS)} to 8 or 16; got {dict(bits)}")
    for state in response_states:
        if state not in FIELDS:
            raise ValueError(f"response_states must be among {list(FIELDS)}; got {state!r}")
    if attributions is not None:
        _check_attributions(attributions, named, len(texts))
    if information_layers not in LAYER_CHOICES:  # before the slow parts, not after them
        raise ValueError(f"information_layers must be one of {list(LAYER_CHOICES)}; got {information_layers!r}")
    if information_texts < 0:
        raise ValueError(f"information_texts must be >= 0; got {information_texts}")
    # sigma_f is the hidden states' spread over the page's texts: one text has none
    explained = min(information_texts, len(texts)) if len(texts) >= 2 else 0
    budget = int(budget_mb * 1e6)
    if tracked is None:
        chosen = choose_tracked(named, texts, budget, bits,
                                reserved_bytes(named, texts, top_words, len(response_states), explained))
    else:
        chosen = list(range(min(tracked, len(texts))))
    words: dict[str, int] = {}
    gathered = {}
    bar = tqdm(total=len(texts) * len(named), desc="states", disable=not progress, leave=False)
    for name, loaded in named.items():
        gathered[name] = _ModelData(name, loaded)
        _gather(gathered[name], texts, set(chosen), words, batch_size, tuple(response_states), bar)
    bar.close()
    results = {name: outcomes(loaded, texts, references, batch_size) for name, loaded in named.items()}
    seconds = {}
    attributed = {}
    if attributions is not None:
        attributed = dict(attributions)
    elif attribution_texts:
        started = time.perf_counter()
        subset = texts[:attribution_texts]
        for name, loaded in named.items():
            attributed[name] = converged_attributions(loaded, subset, ig_position, ig_steps, ig_max_steps, ig_tolerance,
                                                      batch_size, progress=progress)
        seconds["IG"] = time.perf_counter() - started
    informed = {}
    if explained:
        started = time.perf_counter()
        options = {"lam": information_lam, "scale": information_scale, "steps": information_steps,
                   "draws": information_draws}
        jobs = [(name, key) for name in named for key in explained_layers(gathered[name].layers, information_layers)]
        for name, key in tqdm(jobs, desc="per-word information", disable=not progress, leave=False):
            sigmas, dim = layer_information(named[name], texts[:explained], gathered[name].layers[key], key,
                                            feature_spread(gathered[name].mean_h[key]), batch_size, seed=seed,
                                            **options)
            informed.setdefault(name, {"texts": explained, "which": information_layers, **options,
                                       "layers": {}})["layers"][key] = (sigmas, dim)
        seconds["per-word information"] = time.perf_counter() - started
    payload = Payload()
    header = _header(task, named, gathered, results, attributed, informed, texts, chosen, words, payload, bits,
                     tuple(response_states), top_words, clusters, seed, ig_tolerance, budget)
    header["budget_bytes"] = budget
    raw = payload.raw_bytes(header)
    page = page_html(title or f"g2lstm explorer: {', '.join(named)} ({task})", encode(raw))
    size = len(page.encode("utf-8"))
    if size > budget:
        raise ValueError(f"the page would weigh {size / 1e6:.2f} MB, over {key_prefix}budget_mb={budget_mb}; lower "
                         f"{key_prefix}tracked, the words of the responses ({key_prefix}rnnvis.top_words) or the texts")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    parts = ", ".join(f"{what} {s:.1f} s" for what, s in seconds.items())
    note = "" if explained or not information_texts else "; no per-word information: it needs at least 2 texts"
    print(f"wrote {out}: {size / 1e6:.2f} MB of a {budget_mb:g} MB budget; {len(texts)} texts, full tracks of "
          f"{len(chosen)}; built in {time.perf_counter() - began:.1f} s" + (f" ({parts})" if parts else "") + note,
          flush=True)
    return out


def _check_attributions(attributions: Mapping, named: Mapping, texts: int) -> None:
    if set(attributions) != set(named):
        raise ValueError(f"attributions must hold the models {list(named)}; got {list(attributions)}")
    for name, (results, steps) in attributions.items():
        if not 1 <= len(results) == len(steps) <= texts:
            raise ValueError(f"attributions[{name!r}]: {len(results)} attributions and {len(steps)} step counts for "
                             f"{texts} texts; expected one of each per text, for the first 1 to {texts} texts")


def _header(task, named, gathered, results, attributed, informed, texts, chosen, words, payload: Payload, bits,
            response_states, top_words, clusters, seed, ig_tolerance, budget) -> dict:
    names = list(named)
    first = gathered[names[0]]
    shared_tokens = all(gathered[n].tokens == first.tokens for n in names)
    inverse_words = sorted(words, key=words.get)
    models = []
    for name in names:
        data, result = gathered[name], results[name]
        layers = []
        for key, info in data.layers.items():
            aggregate = data.aggregates[key]
            entry = dict(info, key=key, saturation=aggregate.saturation(),
                         histograms={f: aggregate.histograms[f].tolist() for f in aggregate.histograms},
                         tracks={}, responses={})
            for f in FIELDS:
                if key in data.tracks and data.tracks[key][f]:
                    entry["tracks"][f] = payload.add_quantised(np.concatenate(data.tracks[key][f]), bits[f])
            for state in response_states:
                ids, response = aggregate.response(state, top_words)
                rows, cols = co_clusters(response, clusters, seed=seed)
                scale = float(np.abs(response).max()) or 1.0
                entry["responses"][state] = {
                    "words": [inverse_words[i] for i in ids],
                    "matrix": payload.add_quantised(np.clip(response, -scale, scale), 8),
                    "word_clusters": rows, "unit_clusters": cols,
                }
            layers.append(entry)
        loss = [x for x in result.token_loss]
        loss_offsets = np.cumsum([0] + [0 if x is None else len(x) for x in loss]).tolist()
        model = {
            "name": name, "path": str(data.loaded.path), "cell": data.loaded.config.get("model", {}).get("cell"),
            "layers": layers, "metric": result.metric, "higher_is_better": HIGHER_IS_BETTER[result.metric],
            "values": _round(result.values), "saturation": _round(data.text_saturation),
            "predictions": result.predictions, "outputs": result.outputs,
            "token_loss": {"offsets": loss_offsets,
                           "array": payload.add(np.concatenate([x for x in loss if x is not None] or [np.zeros(0)]))},
            "training": _run_saturation(data.loaded),
            "tokens": None if shared_tokens else data.tokens,
            "track_offsets": {side: np.cumsum([0] + [len(data.tokens[side][n]) for n in chosen]).tolist()
                              for side in data.tokens},
        }
        if name in attributed:
            attributions, steps = attributed[name]
            sides = list(attributions[0].tokens)
            model["attribution"] = {
                "texts": len(attributions), "steps": steps, "tolerance": ig_tolerance,
                "within_bound": [within_bound(a, ig_tolerance) for a in attributions],
                "delta": _round([a.delta for a in attributions], 6),
                "change": _round([a.logit - a.baseline_logit for a in attributions], 6),
                "top1_share": _round([concentration(np.concatenate([a.scores[s] for s in sides]))[0]
                                      for a in attributions]),
                "position": [a.position for a in attributions],
                "scores": {s: {"offsets": np.cumsum([0] + [len(a.scores[s]) for a in attributions]).tolist(),
                               "array": payload.add(np.concatenate([a.scores[s] for a in attributions]))}
                           for s in sides},
            }
        if name in informed:
            info = dict(informed[name])
            layers_sigma = info.pop("layers")
            info["layers"] = {}
            for key, (sigmas, dim) in layers_sigma.items():
                # 16 bits: sigma spans orders of magnitude below `scale`, and the small ones matter most
                info["layers"][key] = {
                    "sigma": dict(payload.add_quantised(np.concatenate(sigmas), 16),
                                  offsets=np.cumsum([0] + [len(s) for s in sigmas]).tolist()),
                    "dim": dim,  # the entropy's K: the width of the embeddings of the layer's side
                    "spread": _round([entropy(s, dim).std() for s in sigmas]),
                }
            model["information"] = info
        models.append(model)
    return {
        "version": 1, "task": task, "fields": list(FIELDS), "sides": list(first.tokens),
        "texts": [_display(t) for t in texts], "tokens": first.tokens if shared_tokens else None,
        "tracked": chosen, "models": models,
    }
