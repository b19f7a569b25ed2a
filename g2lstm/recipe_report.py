"""Which recipe binarizes the gates at no cost: the rows of a convergence study (one per run, as
``python -m g2lstm.binarization ... --rows FILE`` writes them) grouped by configuration and held
against the same task's LSTM.

    python -m g2lstm.recipe_report ROWS.json [--markdown OUT.md] [--plot OUT.png]

A configuration meets the target when
- every seed has at least :data:`TARGET_SHARE` of its input and of its forget gate values below 0.1
  or above 0.9 in every layer;
- its mean quality is within :data:`QUALITY_TOLERANCE` of the LSTM's mean: perplexity at most 2%
  higher (LM), BLEU at most 0.5 lower (MT), word accuracy at most 0.5 points lower (transliterator;
  a bound of this module's choosing);
- under each scheme of :data:`ROBUSTNESS_SCHEMES` its mean loss of quality is at most a third of
  the LSTM's (a loss is the change in the bad direction; a gain counts as no loss).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from .diagnostics import distinct_colours

TARGET_SHARE = 0.5
ROBUSTNESS_SCHEMES = ("round_clip", "svd")
SHOWN_SCHEMES = ROBUSTNESS_SCHEMES + ("quantize4", "hard_gates")  # the table's loss columns
BASELINE = "lstm"  # the config label of the baseline every task's configurations are held against


def relative_cost(task: str, quality: float, baseline: float) -> float:
    """How much worse ``quality`` is than ``baseline``, in the unit of the task's tolerance:
    percent of perplexity (LM), points otherwise (BLEU, accuracy); negative is better."""
    if task == "lm":
        return 100 * (quality - baseline) / baseline
    return baseline - quality


QUALITY_TOLERANCE = {"lm": 2.0, "mt": 0.5, "translit": 0.5, "classify": 0.5}  # in relative_cost's unit
COST_UNITS = {"lm": "% perplexity", "mt": "BLEU", "translit": "points of word accuracy", "classify": "points"}


def loss(row: dict, scheme: str) -> float:
    """The quality lost under ``scheme`` (0 when it gained)."""
    change = row["compression"][scheme]
    return max(0.0, -change if row["higher_is_better"] else change)


def min_share(row: dict) -> float:
    """The smallest input or forget binary share over the run's layers."""
    return min(min(shares["input"], shares["forget"]) for shares in row["binary"].values())


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows: list[dict]) -> list[dict]:
    """One entry per (task, config): seeds, mean and spread of quality, cost against the task's
    LSTM, binary share, losses under compression and whether each part of the target is met.
    Tasks without an LSTM row are left out."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["config"]), []).append(row)
    out = []
    for (task, config), runs in sorted(groups.items()):
        baseline = groups.get((task, BASELINE))
        if baseline is None:
            continue
        base_quality = _mean([r["quality"] for r in baseline])
        quality = [r["quality"] for r in runs]
        cost = relative_cost(task, _mean(quality), base_quality)
        losses = {s: _mean([loss(r, s) for r in runs]) for s in SHOWN_SCHEMES
                  if all(s in r["compression"] for r in runs + baseline)}
        base_losses = {s: _mean([loss(r, s) for r in baseline]) for s in losses}
        robust = {s: losses[s] <= base_losses[s] / 3 + 1e-12 for s in ROBUSTNESS_SCHEMES if s in losses}
        binary = all(min_share(r) >= TARGET_SHARE for r in runs)
        within = cost <= QUALITY_TOLERANCE.get(task, 0.0)
        out.append({
            "task": task, "config": config, "seeds": sorted(r["seed"] for r in runs),
            "converged": all(r["converged"] for r in runs),
            "quality": _mean(quality), "quality_spread": _spread(quality), "quality_name": runs[0]["quality_name"],
            "cost": cost, "cost_unit": COST_UNITS.get(task, "points"),
            "min_share": min(min_share(r) for r in runs),
            "losses": losses, "baseline_losses": base_losses,
            "binary": binary, "within_tolerance": within, "robust": robust,
            "meets_target": binary and within and bool(robust) and all(robust.values()) and len(runs) >= 2,
        })
    return out


def markdown(summary: list[dict]) -> str:
    """A table per task: one row per configuration, its losses under compression next to the
    LSTM's, and the parts of the target it misses."""
    lines = []
    for task in dict.fromkeys(e["task"] for e in summary):
        entries = [e for e in summary if e["task"] == task]
        schemes = list(dict.fromkeys(s for e in entries for s in e["losses"]))
        unit = entries[0]["cost_unit"]
        lines += [f"### {task}: {entries[0]['quality_name']}", "",
                  f"| configuration | seeds | converged | quality (mean ± sd) | cost vs LSTM ({unit}) | "
                  "min binary share | " + " | ".join(f"{s} loss (LSTM)" for s in schemes) + " | target |",
                  "|---" * (7 + len(schemes)) + "|"]
        for e in entries:
            parts = [e["config"], ",".join(map(str, e["seeds"])), "yes" if e["converged"] else "no",
                     f"{e['quality']:.2f} ± {e['quality_spread']:.2f}", f"{e['cost']:+.2f}", f"{e['min_share']:.3f}"]
            parts += [f"{e['losses'][s]:.2f} ({e['baseline_losses'][s]:.2f})" if s in e["losses"] else "" for s in schemes]
            missing = [what for what, ok in (("binary", e["binary"]), ("quality", e["within_tolerance"]),
                                             ("robustness", bool(e["robust"]) and all(e["robust"].values())),
                                             ("2 seeds", len(e["seeds"]) >= 2)) if not ok]
            if e["config"] == BASELINE:
                parts.append("(the baseline)")
            else:
                parts.append("**yes**" if e["meets_target"] else "no: " + ", ".join(missing))
            lines.append("| " + " | ".join(parts) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: str | Path) -> None:
    """Cost against binary share, one point per run (seeds as separate points), one panel per task;
    the region of the binary and quality targets is shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in dict.fromkeys(r["task"] for r in rows)
             if any(r["task"] == t and r["config"] == BASELINE for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 6.5), squeeze=False)
    configs = sorted({r["config"] for r in rows})
    markers = "osD^v<>pP*Xh"
    colours = distinct_colours(len(configs))
    for ax, task in zip(axes[0], tasks):
        runs = [r for r in rows if r["task"] == task]
        base = _mean([r["quality"] for r in runs if r["config"] == BASELINE])
        for config in dict.fromkeys(r["config"] for r in runs):
            k = configs.index(config)  # one marker and colour per configuration in every panel
            points = [(min_share(r), relative_cost(task, r["quality"], base), r["seed"]) for r in runs if r["config"] == config]
            ax.scatter([p[0] for p in points], [p[1] for p in points], marker=markers[k % len(markers)], s=50, label=config,
                       color=colours[k])
            for x, y, seed in points:
                ax.annotate(f"s{seed}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        low, high = ax.get_ylim()
        tolerance = QUALITY_TOLERANCE.get(task, 0.0)
        ax.fill_between([TARGET_SHARE, 1.0], min(low, tolerance), tolerance, color="tab:green", alpha=0.08, lw=0)
        ax.set_ylim(min(low, tolerance - 0.1), max(high, tolerance + 0.1))
        ax.axvline(TARGET_SHARE, color="grey", ls="--", lw=0.8)
        ax.axhline(tolerance, color="grey", ls="--", lw=0.8)
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xlim(0, 1.04)
        ax.set_xlabel("smallest input / forget binary share over layers (< 0.1 or > 0.9)")
        ax.set_ylabel(f"cost vs LSTM mean ({COST_UNITS.get(task, 'points')}; lower is better)")
        ax.set_title(f"{task}: the target is right of the vertical and below the horizontal line", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=Path, help="a JSON list of convergence rows (g2lstm.binarization --rows)")
    parser.add_argument("--markdown", type=Path, help="write the tables there (default: print them)")
    parser.add_argument("--plot", type=Path, help="write the cost-versus-binary-share plot there")
    args = parser.parse_args(argv)
    rows = json.loads(args.rows.read_text())
    summary = summarize(rows)
    text = markdown(summary)
    if args.markdown:
        args.markdown.write_text(text)
    else:
        print(text)
    if args.plot:
        plot(rows, args.plot)
    return summary


if __name__ == "__main__":
    main()
