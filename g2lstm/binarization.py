"""The binarization study: how binary the gates of trained models are, at what quality, and what
compressing their gate weights costs.

    python -m g2lstm.binarization OUT_DIR RUN_DIR [RUN_DIR ...] [--evaluate key=value ...]
        [--export-dir DIR] [--rows FILE]

For each finished run (its ``best.pt``, any task): the test metric as the task scores it, the
per-layer share of input / forget / output gate values below 0.1 and above 0.9 on test data
(evaluation mode), the gate-weight magnitudes, and the metric under the paper's round & clip grid,
a scale-aware grid, 4-bit codes and low-rank SVD of the input- and forget-gate weights, and with
hard gates at evaluation (``eval_gates='hard'`` on every layer, no retraining). Writes
``OUT_DIR/summary.json`` (one entry per run, keyed ``<task>/<run folder name>``),
``OUT_DIR/<task>.md`` (a table per task) and ``OUT_DIR/<task>_histograms.png``; a
``saturation.png`` of each run (its curves during training) is copied next to them when present.

``--export-dir``: each scheme with a packed form is written by :func:`g2lstm.compress.export` to
``DIR/<task>/<run>/<scheme>.pt`` and the model read back from that file is scored, so the entry
holds its bytes on disk. ``--rows``: the entries of the runs named, one row each
(:func:`convergence_row`), as a JSON list in that file (rows of other runs already there are kept).

A configuration reaches the target when at least ``TARGET`` of its input and of its forget gate
values are below 0.1 or above 0.9 in every layer.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
from pathlib import Path

from torch import nn

from g2lstm import diagnostics, tasks
from g2lstm.compress import evaluate_under_compression, gate_weight_stats
from g2lstm.protocol import lstm_layers
from g2lstm.rnn import G2LSTM

TARGET = 0.5
# Per task: the paper's absolute grid (PTB for language models, IWSLT14 otherwise), a grid in
# units of each block's standard deviation, and a rank a fraction of the hidden size.
COMPRESSIONS = {
    "lm": {"round_clip": {"method": "round_clip", "precision": 0.2, "clip": 0.4}},
    "default": {"round_clip": {"method": "round_clip", "precision": 0.5, "clip": 1.0}},
}
RELATIVE = {"round_relative": {"method": "round_relative", "precision": 1.0, "clip": 2.0},
            "quantize4": {"method": "quantize", "bits": 4}}
HARD_GATES = "hard_gates"  # the "scheme" that evaluates with eval_gates='hard' on every layer
QUALITY_NAMES = {"lm": "test perplexity", "mt": "test BLEU", "translit": "test word accuracy (%)",
                 "classify": "test accuracy (%)"}


def binary_shares(stats: diagnostics.GateStats) -> dict[str, dict[str, float]]:
    """Per layer, per gate: the share of values below 0.1 or above 0.9."""
    return {key: {gate: v["share_below_0.1"] + v["share_above_0.9"] for gate, v in per_gate.items()}
            for key, per_gate in stats.summary().items()}


def meets_target(shares: dict[str, dict[str, float]]) -> bool:
    return all(layer[g] >= TARGET for layer in shares.values() for g in ("input", "forget"))


def hard_gated(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose recurrent layers use hard gates (``a >= 0``) in evaluation."""
    hard = copy.deepcopy(model)
    for layer in lstm_layers(hard).values():
        if not isinstance(layer, G2LSTM):
            raise TypeError(f"hard gates need G2LSTM layers; got {type(layer).__name__}")
        layer.eval_gates = "hard"
    return hard


def converged(task: str, result: dict) -> bool:
    """Whether a run ended by its own convergence test (early stopping, NT-ASGD's patience or the
    finetune's trigger) rather than by an epoch, step or minute budget."""
    if task == "lm":
        return result.get("ended_by") in ("patience", "nonmono")
    stopped = str(result.get("stopped", ""))
    return stopped.startswith(("no better validation", "no improvement in", "learning rate fell below"))


def study_run(run_dir: Path, evaluate_options: dict, gate_options: dict, export_dir: Path | None = None) -> dict:
    """Everything the summary holds about one finished run."""
    loaded = tasks.load(run_dir / "best.pt")
    config = loaded.config
    hidden = min(layer.hidden_size for layer in loaded.model.recurrent_layers().values())
    methods = dict(COMPRESSIONS.get(loaded.task, COMPRESSIONS["default"]), **RELATIVE,
                   svd=dict(method="svd", rank=max(1, hidden // 8)))
    score = lambda m: loaded.evaluate(m, **evaluate_options)  # noqa: E731
    exports = None if export_dir is None else export_dir / loaded.task / run_dir.name
    rows = evaluate_under_compression(loaded.model, score, methods, export_to=exports,
                                      source=None if exports is None else loaded)
    hard = score(hard_gated(loaded.model))
    batches, forward = loaded.gate_batches(**gate_options)
    stats = diagnostics.collect_gate_stats(loaded.model, batches, forward)
    shares = binary_shares(stats)
    results_file = run_dir / "results.json"
    result = json.loads(results_file.read_text()) if results_file.exists() else {}
    compression = {r["method"]: {"value": r["value"], "change": r["change"], **({"bytes": r["bytes"]} if "bytes" in r else {})}
                   for r in rows[1:]}
    compression[HARD_GATES] = {"value": hard, "change": hard - rows[0]["value"]}
    return {
        "task": loaded.task, "run_dir": str(run_dir), "checkpoint": str(run_dir / "best.pt"),
        "cell": config["model"]["cell"], "tau": config["model"].get("tau"), "noise_p": config["model"].get("noise_p"),
        "schedules": {k: v for k, v in (config["train"].get("schedules") or {}).items() if v},
        "init_from": config["train"].get("init_from"),
        "eval_gates": _layer_option(loaded.model, "eval_gates"),
        "train_gates": _layer_option(loaded.model, "train_gates"),
        "seed": config["seed"], "higher_is_better": loaded.higher_is_better,
        "steps": result.get("steps"), "converged": converged(loaded.task, result),
        "quality": rows[0]["value"], "quality_name": QUALITY_NAMES.get(loaded.task, "test metric"),
        "compression": compression,
        "binary_share": shares, "saturation": diagnostics.pooled_saturation(stats.summary()),
        "meets_target": meets_target(shares),
        "gate_weights": gate_weight_stats(loaded.model, ["input", "forget"], methods["round_clip"]["precision"]),
        "_stats": stats,
    }


def _layer_option(model: nn.Module, option: str) -> str:
    """The ``eval_gates`` or ``train_gates`` of the model's LSTM layers ('soft' for an nn.LSTM)."""
    kinds = {getattr(layer, option, "soft") for layer in lstm_layers(model).values()}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def convergence_row(entry: dict) -> dict:
    """The issue-23 row of a summary entry: ``task``, ``config``, ``run``, ``cell``, ``seed``,
    ``converged``, ``steps``, ``init_from``, ``quality``, ``quality_name``, ``higher_is_better``,
    ``binary`` ({layer: {input, forget}}), ``compression`` ({scheme: change}) and ``bytes``
    ({scheme: size on disk}, for the schemes exported, ``float32`` being the unpacked export)."""
    sizes = {scheme: c["bytes"]["file"] for scheme, c in entry["compression"].items() if "bytes" in c}
    if sizes:
        sizes = {"float32": next(c["bytes"]["float32"] for c in entry["compression"].values() if "bytes" in c), **sizes}
    return {
        "task": entry["task"], "config": _label(entry), "run": Path(entry["run_dir"]).name, "cell": entry["cell"],
        "seed": entry["seed"], "converged": entry["converged"], "steps": entry["steps"],
        "init_from": entry.get("init_from"), "quality": entry["quality"], "quality_name": entry["quality_name"],
        "higher_is_better": entry["higher_is_better"],
        "binary": {layer: {g: shares[g] for g in ("input", "forget")} for layer, shares in entry["binary_share"].items()},
        "compression": {scheme: c["change"] for scheme, c in entry["compression"].items()},
        "bytes": sizes,
    }


def _label(entry: dict) -> str:
    label = entry["cell"]
    if entry["cell"] != "lstm":
        label += f" tau={entry['tau']:g}"
    if entry["cell"] == "g2lstm":
        label += f" p={entry['noise_p']:g}"
    for option, s in entry["schedules"].items():
        label += f", {option}->{s['end']:g} ({s['shape']})"
    if entry.get("train_gates") == "hard":
        label += ", straight-through in training"
    if entry.get("eval_gates") == "hard":
        label += ", hard gates in evaluation"
    if entry.get("init_from"):  # a finetune: its steps come after those of the run it started from
        source = Path(entry["init_from"]).parent.name
        label += f", from {re.sub(r'_s' + str(entry['seed']) + '$', '', source)}"  # the same seed's run
    return label


def markdown(entries: list[dict]) -> str:
    """One row per run: quality, the smallest per-layer input / forget binary share, the target,
    and the change of the metric under each compression."""
    methods = list(dict.fromkeys(m for e in entries for m in e["compression"]))  # entries of older runs lack some
    lines = ["| run | configuration | seed | steps | metric | input binary (min over layers) | forget binary "
             "(min over layers) | target | " + " | ".join(f"{m} change" for m in methods) + " |",
             "|---" * (8 + len(methods)) + "|"]
    for e in entries:
        low_i = min(layer["input"] for layer in e["binary_share"].values())
        low_f = min(layer["forget"] for layer in e["binary_share"].values())
        lines.append(f"| {Path(e['run_dir']).name} | {_label(e)} | {e['seed']} | {e['steps']} | {e['quality']:.2f} | {low_i:.3f} | {low_f:.3f} | "
                     f"{'yes' if e['meets_target'] else 'no'} | "
                     + " | ".join(f"{e['compression'][m]['change']:+.2f}" if m in e["compression"] else ""
                                  for m in methods) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("runs", type=Path, nargs="+", help="finished run folders (with best.pt)")
    parser.add_argument("--evaluate", nargs="*", default=[], help="options of the task's evaluate(), key=value")
    parser.add_argument("--gates", nargs="*", default=[], help="options of the task's gate_batches(), key=value")
    parser.add_argument("--export-dir", type=Path, help="write each packed scheme there and score the file read back")
    parser.add_argument("--rows", type=Path, help="a JSON list of convergence_row()s, updated with these runs")
    args = parser.parse_args(argv)
    parse = lambda pairs: {k: json.loads(v) for k, v in (p.split("=", 1) for p in pairs)}  # noqa: E731
    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = args.out_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    by_task: dict[str, list[dict]] = {}
    keys = []
    for run_dir in args.runs:
        entry = study_run(run_dir, parse(args.evaluate), parse(args.gates), args.export_dir)
        stats = entry.pop("_stats")
        key = f"{entry['task']}/{run_dir.name}"
        summary[key] = entry
        keys.append(key)
        stats.to_json(args.out_dir / f"gates_{entry['task']}_{run_dir.name}.json")
        if (run_dir / "saturation.png").exists():
            shutil.copy(run_dir / "saturation.png", args.out_dir / f"saturation_{entry['task']}_{run_dir.name}.png")
        print(f"{key}: {entry['quality']:.2f}, target {'met' if entry['meets_target'] else 'not met'}", flush=True)
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    if args.rows is not None:
        rows = json.loads(args.rows.read_text()) if args.rows.exists() else []
        new = [convergence_row(summary[key]) for key in keys]
        ours = {(r["task"], r["run"]) for r in new}
        rows = sorted([r for r in rows if (r["task"], r["run"]) not in ours] + new,
                      key=lambda r: (r["task"], r["config"], r["seed"]))
        args.rows.write_text(json.dumps(rows, indent=1) + "\n")
    for entry in summary.values():
        by_task.setdefault(entry["task"], []).append(entry)
    for task, entries in by_task.items():
        entries.sort(key=lambda e: (_label(e), e["seed"]))
        (args.out_dir / f"{task}.md").write_text(markdown(entries))
        stats = {f"{_label(e)} s{e['seed']}": diagnostics.GateStats.from_json(
            args.out_dir / f"gates_{task}_{Path(e['run_dir']).name}.json") for e in entries}
        diagnostics.plot_histograms(stats, args.out_dir / f"{task}_histograms.png",
                                    title=f"{task}: input / forget gate histograms")
    return summary


if __name__ == "__main__":
    main()
