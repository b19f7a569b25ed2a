"""Result tables: the compression table of the paper and the table of finished LM runs.

    python -m g2lstm.report runs/lm/brown_cpu results/lm/brown_cpu

collects every finished LM run below a folder (the ``final`` line of its ``metrics.jsonl`` and its
``config.yaml``) into ``<out>.md`` (one row per run, then mean +- std per cell kind) and
``<out>.json``. :func:`write_table` writes ``table.md`` / ``table.csv`` from the per-task
``results.json`` files of :func:`g2lstm.paper.run_task`.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from pathlib import Path

from omegaconf import OmegaConf

from g2lstm.train import MetricsLog
from g2lstm.diagnostics import RECORDED_GATES

COLUMNS = {"original": "Original", "round": "Round", "round_clip": "Round & clip", "svd": "SVD",
           "svd_small": "SVD+", "int8": "int8 (extra)", "round_relative": "Relative round & clip (extra)",
           "quantize_8bit": "8-bit codes (extra)", "quantize_4bit": "4-bit codes (extra)"}
MODEL_NAMES = {"lstm": "LSTM", "sharpened": "Sharpened sigmoid", "g2lstm": "G2-LSTM"}


def model_order(kind: str) -> tuple:
    """The paper's order of model kinds (others after, alphabetically)."""
    return (list(MODEL_NAMES).index(kind) if kind in MODEL_NAMES else len(MODEL_NAMES), kind)


# ----------------------------------------------------------------------------- the compression table


def _cell(row: dict, digits: int) -> str:
    return f"{row['value']:.{digits}f}" if row["method"] == "original" else \
        f"{row['value']:.{digits}f} ({row['change']:+.{digits}f})"


def _column_title(method: str, rows: list[dict]) -> str:
    report = next((r.get("report") for r in rows if r["method"] == method), None) or {}
    title = COLUMNS.get(method, method)
    if report.get("method") == "svd":
        title += f" (rank {report['rank']})"
    elif report.get("relative"):
        title += f" (r={report['precision']}σ" + (f", c={report['clip']}σ" if report.get("clip") else "") + ")"
    elif report.get("method") in ("round", "round_clip"):
        title += f" (r={report['precision']}" + (f", c={report['clip']}" if report.get("clip") else "") + ")"
    return title


def relative_size(report: dict) -> str:
    """A relative grid keeps at most 2 * clip / precision + 1 levels per block, plus the block's scale."""
    levels = 2 * math.floor(report["clip"] / report["precision"] + 1e-9) + 1 if report.get("clip") else None
    per_block = f"at most {levels} levels per block ({math.ceil(math.log2(levels))} bits/weight) and one scale " \
        "per block" if levels else "one scale per block"
    return f"{per_block}; {report['distinct_values']} distinct values over all blocks " \
           f"({report['entropy_bits_per_weight']:.2f} entropy)"


def compressed_size(row: dict) -> str:
    """What one compression keeps, from its report, and the size of its exported file when measured."""
    report = row["report"]
    if report.get("relative"):
        text = relative_size(report)
    elif report.get("method") == "quantize":
        text = f"{report['bits']} bits/weight and one scale per row ({report['scale_bits_per_weight']:.2f} bits/weight)"
    elif "bits_per_weight" in report:
        text = (f"{report['distinct_values']} distinct values, {report['bits_per_weight']} bits/weight "
                f"({report['entropy_bits_per_weight']:.2f} entropy)")
    elif "targeted_size_ratio" in report:
        text = f"targeted blocks x{report['targeted_size_ratio']:.2f}, model x{report['model_size_ratio']:.2f}"
    else:
        text = f"LSTM layers x{report['size_ratio']:.2f}"
    if "bytes" in row:
        b = row["bytes"]
        text += (f", file {b['file'] / 1e6:.2f} MB = x{b['ratio']:.3f} of the float32 export (gate blocks "
                 f"x{b['blocks_packed'] / b['blocks_float32']:.3f})")
    return text


def write_table(out_dir: Path) -> str:
    """table.md and table.csv from every ``<task>/results.json`` under ``out_dir``."""
    tasks = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/results.json"))]
    lines = []
    csv_rows = []
    for t in tasks:
        kinds = sorted(t["models"], key=model_order)
        # Every model's methods, in order of appearance: a model merged in later may have been run with
        # compressions that the others were not (a cell it lacks is shown as "–").
        all_rows = [r for kind in kinds for r in t["models"][kind]["rows"]]
        methods = list(dict.fromkeys(r["method"] for r in all_rows))
        digits = 1 if t["task"] == "lm" else 2
        commands: dict[str, list[str]] = {}
        for kind in kinds:
            commands.setdefault(t["models"][kind].get("command", t["command"]), []).append(MODEL_NAMES.get(kind, kind))
        made_by = f"Made by `{next(iter(commands))}`." if len(commands) == 1 else "Made by " + "; ".join(
            f"`{c}` ({', '.join(names)})" for c, names in commands.items()) + "."
        lines += [f"### {t['name']}: {t['metric']} ({'higher' if t['higher_is_better'] else 'lower'} is better; "
                  "change vs the uncompressed model in brackets)", "", made_by, "",
                  "Checkpoints: " + ", ".join(f"{MODEL_NAMES.get(k, k)} `{t['models'][k]['checkpoint']}`"
                                              for k in kinds) + ".", "",
                  "| Model | " + " | ".join(_column_title(m, all_rows) for m in methods) + " |",
                  "|---" * (len(methods) + 1) + "|"]
        for kind in kinds:
            rows = {r["method"]: r for r in t["models"][kind]["rows"]}
            lines.append(f"| {MODEL_NAMES.get(kind, kind)} | " + " | ".join(
                _cell(rows[m], digits) if m in rows else "–" for m in methods) + " |")
            for m in filter(rows.__contains__, methods):
                report = rows[m].get("report", {})
                csv_rows.append({
                    "task": t["task"], "model": kind, "method": m, "value": rows[m]["value"], "change": rows[m]["change"],
                    "bits_per_weight": report.get("bits_per_weight", ""),
                    "size_ratio": report.get("model_size_ratio", report.get("size_ratio", "")),
                    "file_bytes": rows[m].get("bytes", {}).get("file", ""),
                    "float32_file_bytes": rows[m].get("bytes", {}).get("float32", ""),
                })
        lines.append("")
        for kind in kinds:  # rounding leaves a different number of values in each model
            lines += [f"Compressed size, {MODEL_NAMES.get(kind, kind)}: " + "; ".join(
                f"{COLUMNS.get(r['method'], r['method'])}: {compressed_size(r)}"
                for r in t["models"][kind]["rows"][1:]) + ".", ""]
        lines += ["Gate saturation over the test data (share of values < 0.1 / > 0.9, all layers pooled):", "",
                  "| Model | input <0.1 | input >0.9 | forget <0.1 | forget >0.9 | output <0.1 | output >0.9 |",
                  "|---|---|---|---|---|---|---|"]
        for kind in kinds:
            s = t["models"][kind]["saturation"]
            lines.append(f"| {MODEL_NAMES.get(kind, kind)} | " + " | ".join(
                f"{s[f'{g}_share_{side}']:.3f}" for g in RECORDED_GATES
                for side in ("below_0.1", "above_0.9")) + " |")
        lines.append("")
        weighed = [k for k in kinds if "gate_weights" in t["models"][k]]
        if weighed:
            r = t["models"][weighed[0]]["rounding_precision"]
            gates = list(t["models"][weighed[0]]["gate_weights"])
            lines += [f"Gate-weight magnitudes of the compressed blocks (all layers pooled; 'to 0': share with "
                      f"abs w < r/2 = {r / 2:g}, which rounding to r={r:g} sets to 0):", "",
                      "| Model | " + " | ".join(f"{g} mean abs w | {g} std | {g} max abs w | {g} to 0" for g in gates) + " |",
                      "|---" * (4 * len(gates) + 1) + "|"]
            for kind in weighed:
                w = t["models"][kind]["gate_weights"]
                lines.append(f"| {MODEL_NAMES.get(kind, kind)} | " + " | ".join(
                    f"{w[g]['mean_abs']:.3f} | {w[g]['std']:.3f} | {w[g]['max_abs']:.2f} | "
                    f"{w[g].get('share_rounded_to_zero', float('nan')):.3f}" for g in gates) + " |")
            lines.append("")
    text = "\n".join(lines)
    (out_dir / "table.md").write_text(text)
    with open(out_dir / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "model", "method", "value", "change", "bits_per_weight", "size_ratio",
                                               "file_bytes", "float32_file_bytes"])
        writer.writeheader()
        writer.writerows(csv_rows)
    return text



# ----------------------------------------------------------------------------- LM runs


def collect(root: str | Path) -> list[dict]:
    rows = []
    for metrics_path in sorted(Path(root).rglob("metrics.jsonl")):
        run_dir = metrics_path.parent
        finals = [r for r in MetricsLog(metrics_path).read() if r.get("event") == "final"]
        if not finals:
            continue  # unfinished run
        final, cfg = finals[-1], OmegaConf.load(run_dir / "config.yaml")
        cache = final.get("cache") or {}
        rows.append({
            "run_dir": str(run_dir), "cell": cfg.model.cell, "seed": cfg.seed, "data": cfg.data.name,
            "epochs": cfg.train.epochs, "steps": final["steps"], "train_minutes": final["train_minutes"],
            "valid_ppl": final["valid_ppl"], "test_ppl": final["test_ppl"],
            "cache_valid_ppl": cache.get("valid_ppl"), "cache_test_ppl": cache.get("test_ppl"),
        })
    if not rows:
        raise FileNotFoundError(f"no finished runs (metrics.jsonl with a 'final' line) under {root}")
    return rows


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def markdown(rows: list[dict]) -> str:
    lines = ["| cell | seed | epochs | steps | train min | valid ppl | test ppl | valid ppl (cache) | test ppl (cache) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["cell"], r["seed"])):
        cache_v = f"{r['cache_valid_ppl']:.1f}" if r["cache_valid_ppl"] else "-"
        cache_t = f"{r['cache_test_ppl']:.1f}" if r["cache_test_ppl"] else "-"
        lines.append(f"| {r['cell']} | {r['seed']} | {r['epochs']} | {r['steps']} | {r['train_minutes']:.1f} | "
                     f"{r['valid_ppl']:.1f} | {r['test_ppl']:.1f} | {cache_v} | {cache_t} |")
    lines += ["", "| cell | runs | test ppl (mean ± std) | test ppl with cache (mean ± std) |", "|---|---|---|---|"]
    for cell in sorted({r["cell"] for r in rows}):
        group = [r for r in rows if r["cell"] == cell]
        cached = [r["cache_test_ppl"] for r in group if r["cache_test_ppl"]]
        lines.append(f"| {cell} | {len(group)} | {_mean_std([r['test_ppl'] for r in group])} | "
                     f"{_mean_std(cached) if cached else '-'} |")
    return "\n".join(lines) + "\n"


def write_rows(rows: list[dict], prefix: str | Path, render) -> str:
    """``prefix.json`` (the rows) and ``prefix.md`` (``render(rows)``); returns the markdown."""
    out = Path(prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    text = render(rows)
    out.with_suffix(".md").write_text(text)
    return text


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m g2lstm.report RUNS_FOLDER OUTPUT_PREFIX")
    print(write_rows(collect(argv[0]), argv[1], markdown))


if __name__ == "__main__":
    main(sys.argv[1:])
