"""Collect finished LM runs into a results table (markdown + JSON).

    python -m g2lstm.lm.report runs/lm/brown_cpu results/lm/brown_cpu

reads every ``*/metrics.jsonl`` below the folder (the ``final`` line and the resolved
``config.yaml`` of each run) and writes ``<out>.md`` (one row per run, then mean +- std per rnn
kind) and ``<out>.json`` (the raw rows).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from omegaconf import OmegaConf

from g2lstm import runtime


def collect(root: str | Path) -> list[dict]:
    rows = []
    for metrics_path in sorted(Path(root).rglob("metrics.jsonl")):
        run_dir = metrics_path.parent
        finals = [r for r in runtime.MetricsLog(metrics_path).read() if r.get("event") == "final"]
        if not finals:
            continue  # unfinished run
        final, cfg = finals[-1], OmegaConf.load(run_dir / "config.yaml")
        cache = final.get("cache") or {}
        rows.append({
            "run_dir": str(run_dir), "rnn": cfg.model.rnn, "seed": cfg.seed, "data": cfg.data.name,
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
    lines = ["| rnn | seed | epochs | steps | train min | valid ppl | test ppl | valid ppl (cache) | test ppl (cache) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["rnn"], r["seed"])):
        cache_v = f"{r['cache_valid_ppl']:.1f}" if r["cache_valid_ppl"] else "-"
        cache_t = f"{r['cache_test_ppl']:.1f}" if r["cache_test_ppl"] else "-"
        lines.append(f"| {r['rnn']} | {r['seed']} | {r['epochs']} | {r['steps']} | {r['train_minutes']:.1f} | "
                     f"{r['valid_ppl']:.1f} | {r['test_ppl']:.1f} | {cache_v} | {cache_t} |")
    lines += ["", "| rnn | runs | test ppl (mean ± std) | test ppl with cache (mean ± std) |", "|---|---|---|---|"]
    for rnn in sorted({r["rnn"] for r in rows}):
        group = [r for r in rows if r["rnn"] == rnn]
        cached = [r["cache_test_ppl"] for r in group if r["cache_test_ppl"]]
        lines.append(f"| {rnn} | {len(group)} | {_mean_std([r['test_ppl'] for r in group])} | "
                     f"{_mean_std(cached) if cached else '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m g2lstm.lm.report RUNS_FOLDER OUTPUT_PREFIX")
    rows = collect(argv[0])
    out = Path(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
