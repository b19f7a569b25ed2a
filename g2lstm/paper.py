"""The paper's compression table (Li et al. 2018, Table 3) on the tasks and data we have.

For each task and each model kind (lstm, sharpened, g2lstm): train it with the task's own trainer
(or load a given checkpoint), evaluate it uncompressed and under each compression of the task's
config (round, round & clip, SVD, ... of the input- and forget-gate weights; int8), and collect its
gate statistics. With ``export`` (the default) each compression that a file can store packed is
measured as one: written by :func:`g2lstm.compress.export`, read back, evaluated from the file,
and its size in bytes recorded beside the float32 export's. :func:`run_task` writes, under ``out_dir/<task folder>``:

    results.json                values, changes, compression reports, gate saturation per model
    gates_<model>.json          gate histograms (10 bins of width 0.1) per layer
    gate_averages_<model>.json  per-token average gates of the heatmap sentences
    histograms.png              input/forget gate histograms of the models, per layer
    heatmap_<n>_<layer>.png     per-token average gates of the n-th test sentence

and :func:`g2lstm.report.write_table` the table over every task. With ``merge=True`` the models of
an existing ``results.json`` that are not run again are kept. The entry point is
``experiments/paper_table.py`` (config ``g2lstm/conf/paper``).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from g2lstm import config, diagnostics, tasks
from g2lstm.compress import evaluate_under_compression, gate_weight_stats
from g2lstm.config import compose_config
from g2lstm.protocol import CELLS
from g2lstm.report import MODEL_NAMES, model_order

GATES = ("input", "forget", "output")


TABLE_TASKS = ("lm", "mt", "classify", "translit")  # the config groups of conf/paper


@dataclass
class PaperTaskConfig:
    """The schema of ``g2lstm/conf/paper/<task>``: one task of the table (see g2lstm/conf/paper/lm/brown_cpu.yaml)."""

    name: str = MISSING
    folder: Optional[str] = None  # <out_dir>/<folder>/; null: the task's key
    metric: str = MISSING
    train_overrides: list[str] = field(default_factory=list)  # for g2lstm/conf/<task> when a model is trained
    model_overrides: dict[str, list[str]] = field(default_factory=dict)  # per model kind
    checkpoints: dict[str, Optional[str]] = field(default_factory=dict)  # per model kind; null: train it
    evaluate: dict[str, Any] = field(default_factory=dict)  # options of the task's evaluate()
    compression: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> g2lstm.compress spec
    gates: list[str] = field(default_factory=lambda: ["input", "forget"])
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for key in ("model_overrides", "checkpoints"):
            config.require(self, key, lambda d: set(d) <= set(CELLS), f"keys among the model kinds {list(CELLS)}")
        config.all_of(self, "gates", lambda g: g in GATES, f"gates among {list(GATES)}")


@dataclass
class PaperConfig:
    """The schema of ``g2lstm/conf/paper/config.yaml``."""

    tasks: list[str] = field(default_factory=lambda: list(TABLE_TASKS))
    models: list[str] = field(default_factory=lambda: list(CELLS))
    out_dir: str = "runs/paper/table"
    runs_dir: str = "runs/paper"
    threads: int = 1
    seed: int = 1
    int8: bool = True
    export: bool = True
    merge: bool = False
    lm: Optional[PaperTaskConfig] = None
    mt: Optional[PaperTaskConfig] = None
    classify: Optional[PaperTaskConfig] = None
    translit: Optional[PaperTaskConfig] = None

    def __post_init__(self):
        configured = [key for key in TABLE_TASKS if getattr(self, key) is not None]
        config.all_of(self, "tasks", lambda t: t in configured, f"tasks with a config group among {configured}")
        config.all_of(self, "models", lambda m: m in CELLS, f"model kinds among {list(CELLS)}")
        config.positive(self, "threads")
        config.seed(self, "seed")


config.store(PaperConfig, "paper_schema")
for _task in TABLE_TASKS:
    config.store(PaperTaskConfig, "paper_task_schema", group=_task)


class PaperTask:
    """One task of the table: gets a trained model of each kind (training it in ``runs_dir`` with
    the task's trainer unless ``cfg.checkpoints`` names one), scores it and feeds it test data."""

    def __init__(self, key: str, cfg: DictConfig, runs_dir: Path, seed: int, root: Path = Path(".")):
        self.key, self.cfg, self.runs_dir, self.seed, self.root = key, cfg, runs_dir, seed, root
        self.higher_is_better = tasks.task_class(key).higher_is_better
        self.loaded: tasks.TaskModel | None = None

    def model(self, kind: str):
        path = self.cfg.checkpoints.get(kind)
        if path is None:
            run_dir = self.runs_dir / f"{self.key}_{kind}"
            overrides = list(self.cfg.train_overrides) + list(self.cfg.model_overrides.get(kind) or []) + [
                f"model.cell={kind}", f"seed={self.seed}"]
            tasks.trainer(self.key)(compose_config(self.key, overrides), run_dir)
            path = run_dir / "best.pt"
        self.loaded = tasks.load(self.root / path, task=self.key)
        cell = self.loaded.config.get("model", {}).get("cell")
        if cell != kind:  # the table labels a model by its kind: the checkpoint must be one
            raise ValueError(f"{self.key}.checkpoints.{kind}={path}: a checkpoint of model.cell={cell!r}, not "
                             f"{kind!r}; give it as {self.key}.checkpoints.{cell}")
        return self.loaded.model, str(path)

    def evaluate(self, model) -> float:
        return self.loaded.evaluate(model, **self.cfg.evaluate)

    def gate_stats(self, model) -> diagnostics.GateStats:
        batches, forward = self.loaded.gate_batches(**self.cfg.diagnostics.gate_data)
        return diagnostics.collect_gate_stats(model, batches, forward)

    def sentences(self, count: int):
        return self.loaded.labelled_sentences(count)


def _rounding_precision(compression: DictConfig) -> float | None:
    """The paper's fixed grid of a task: the precision of its first absolute rounding entry."""
    for options in compression.values():
        if options.get("method") in ("round", "round_clip"):
            return float(options["precision"])
    return None


def run_task(task, cfg: DictConfig, models: list[str], out_dir: Path, command: str, merge: bool = False) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"task": task.key, "name": task.cfg.name, "metric": task.cfg.metric,
               "higher_is_better": task.higher_is_better, "command": command, "models": {}}
    if merge and (out_dir / "results.json").exists():
        previous = json.loads((out_dir / "results.json").read_text())
        if previous["task"] != task.key:
            raise ValueError(f"merge: {out_dir / 'results.json'} holds task {previous['task']!r}, not {task.key!r}")
        results["models"] = {k: v for k, v in previous["models"].items() if k not in models}
    precision = _rounding_precision(task.cfg.compression)
    for kind in models:
        t0 = time.time()
        model, path = task.model(kind)
        print(f"[{task.key}/{kind}] model from {path} ({time.time() - t0:.0f}s)", flush=True)
        # The packed compressions are measured as files a user would ship: exported, read back and
        # evaluated from the file; only the sizes are kept.
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".exports-") as exports:
            rows = evaluate_under_compression(
                model, task.evaluate, OmegaConf.to_container(task.cfg.compression, resolve=True),
                gates=list(task.cfg.gates), int8=cfg.int8, export_to=exports if cfg.get("export", True) else None,
                source=getattr(task, "loaded", None))
        for r in rows:
            print(f"[{task.key}/{kind}] {r['method']}: {r['value']:.2f} ({r['change']:+.2f})", flush=True)
        stats = task.gate_stats(model)
        stats.to_json(out_dir / f"gates_{kind}.json")
        results["models"][kind] = {"checkpoint": path, "command": command, "rows": rows,
                                   "saturation": diagnostics.pooled_saturation(stats.summary()),
                                   "gate_weights": gate_weight_stats(model, list(task.cfg.gates), precision),
                                   "rounding_precision": precision,
                                   "parameters": sum(p.numel() for p in model.parameters()),
                                   "seconds": time.time() - t0}
        averages = [{"tokens": tokens, "labels": labels,
                     "layers": {k: v.tolist() for k, v in diagnostics.token_gate_averages(model, batch, forward).items()}}
                    for tokens, batch, forward, labels in task.sentences(task.cfg.diagnostics.heatmap_sentences)]
        (out_dir / f"gate_averages_{kind}.json").write_text(json.dumps(averages))
        # Partial results survive a kill; models in the paper's order whatever order they ran in.
        results["models"] = {k: results["models"][k] for k in sorted(results["models"], key=model_order)}
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    plot_task(results, out_dir)
    return results


def model_order(kind: str) -> tuple:
    return (list(MODEL_NAMES).index(kind) if kind in MODEL_NAMES else len(MODEL_NAMES), kind)


def plot_task(results: dict, out_dir: Path) -> None:
    """Histograms and heatmaps of every model in ``results``, from the files run_task wrote."""
    kinds = list(results["models"])
    stats = {MODEL_NAMES.get(k, k): diagnostics.GateStats.from_json(out_dir / f"gates_{k}.json") for k in kinds}
    diagnostics.plot_histograms(stats, out_dir / "histograms.png", title=f"{results['name']}: gate value histograms")
    averages = {k: json.loads((out_dir / f"gate_averages_{k}.json").read_text()) for k in kinds}
    for n, first in enumerate(averages[kinds[0]]):
        for layer in first["layers"]:
            tokens = first["tokens"]
            if first["labels"] is not None:  # MT: encoder layers read the source, decoder layers the target
                tokens = first["labels"]["encoder" if layer.startswith("encoder") else "decoder"]
            per_model = {MODEL_NAMES.get(k, k): {layer: torch.tensor(averages[k][n]["layers"][layer])} for k in kinds}
            diagnostics.plot_heatmap(tokens, per_model, out_dir / f"heatmap_{n}_{layer.replace('/', '_')}.png",
                                     layer=layer, title=f"{results['name']}, test sentence {n}, {layer}")
