"""Tables of finished classification / transliteration runs, from their ``results.json`` files.

    python -m g2lstm.classify.report 'RUN_FOLDERS_GLOB' OUTPUT_PREFIX
    e.g. python -m g2lstm.classify.report 'runs/classify/rt_small_*' results/classify/rt_small

writes ``OUTPUT_PREFIX.json`` (one row per run) and ``OUTPUT_PREFIX.md`` (per run, then mean ±
sample standard deviation per cell); scores in percent.
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

from g2lstm.report import _mean_std, model_order, write_rows

# task -> the scores of a row: (column title, how to read it from results.json)
SCORES = {
    "classify": [("test acc", lambda r: r["accuracy"]), ("test macro-F1", lambda r: r["macro_f1"])]
    + [(f"{name} acc", (lambda n: lambda r: r["out_of_domain"][n]["accuracy"])(name))
       for name in ("tweets", "amazonReviewSnippets", "nytEditorialSnippets")],
    "translit": [("test char acc", lambda r: r["char_accuracy"]), ("test word acc", lambda r: r["word_accuracy"])],
}


def collect(pattern: str) -> list[dict]:
    """The finished runs (with a ``results.json``) among the folders matching ``pattern``."""
    rows = []
    for path in sorted(Path(p) / "results.json" for p in glob.glob(pattern) if (Path(p) / "results.json").is_file()):
        result = json.loads(path.read_text(encoding="utf-8"))
        scores = {}
        for title, read in SCORES.get(result.get("task"), []):
            try:
                scores[title] = 100 * read(result)
            except KeyError:
                continue  # an out-of-domain set the run did not score
        rows.append({"run_dir": str(path.parent), "task": result["task"], "cell": result["cell"],
                     "seed": _seed(path.parent), "steps": result["steps"], "epochs": result["epochs"],
                     "train_minutes": result["train_minutes"], "stopped": result["stopped"], **scores})
    if not rows:
        raise FileNotFoundError(f"no finished runs (folders with a results.json) match {pattern!r}")
    return rows


def _seed(run_dir: Path) -> int:
    from omegaconf import OmegaConf

    return int(OmegaConf.load(run_dir / "config.yaml").seed)


def markdown(rows: list[dict]) -> str:
    titles = [t for t, _ in SCORES[rows[0]["task"]] if any(t in r for r in rows)]
    rows = sorted(rows, key=lambda r: (model_order(r["cell"]), r["seed"]))
    lines = ["| cell | seed | steps | train min | " + " | ".join(titles) + " |", "|---" * (4 + len(titles)) + "|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['seed']} | {r['steps']} | {r['train_minutes']:.1f} | "
                     + " | ".join(f"{r[t]:.2f}" if t in r else "-" for t in titles) + " |")
    lines += ["", "| cell | runs | " + " | ".join(f"{t} (mean ± std)" for t in titles) + " |",
              "|---" * (2 + len(titles)) + "|"]
    for cell in dict.fromkeys(r["cell"] for r in rows):
        group = [r for r in rows if r["cell"] == cell]
        lines.append(f"| {cell} | {len(group)} | " + " | ".join(
            _mean_std([r[t] for r in group if t in r]) for t in titles) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m g2lstm.classify.report 'RUN_FOLDERS_GLOB' OUTPUT_PREFIX")
    print(write_rows(collect(argv[0]), argv[1], markdown))


if __name__ == "__main__":
    main(sys.argv[1:])
