"""Train a sentence-polarity classifier: ``train(cfg, run_dir) -> {'accuracy', 'macro_f1', ...}``.

The loop, top to bottom: read the Rotten Tomatoes sentences and their fixed split
(:mod:`g2lstm.data.sentiment`), build the word table from the training split, build the model;
then for each epoch, batches of ``batch_size`` sentences in an order drawn from (seed, epoch) (so
a resumed run sees the same batches), cross-entropy, Adam, gradient clipping, and after every
epoch (or ``eval_every`` steps) a validation (accuracy, macro-F1) that saves ``best.pt`` on a
better accuracy and stops early after ``early_stop_patience`` validations without one. At the end
``best.pt`` is scored on the test split and on each out-of-domain set. The run folder, resume and
budgets are :class:`g2lstm.runtime.Run`'s; ``cfg`` is the Hydra config of ``g2lstm/conf/classify``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from tqdm import tqdm

from .. import config as checks, shard
from ..config import compose_config
from ..data.sentiment import Example, SentimentDataConfig, load_sentiment, tokenize
from ..data.symbols import SymbolTable
from ..runtime import Run, RunConfig, TaskConfig, load_checkpoint
from .model import ClassifierConfig, ClassifierModelConfig, RNNClassifier

TASK = "classify"


# ----------------------------------------------------------------------------- config schemas


@dataclass
class EpochTrainConfig(RunConfig):
    """The keys of ``train`` that the classification and transliteration loops share (their
    meaning: ``g2lstm/conf/classify/train/default.yaml``)."""

    batch_size: int = 32
    eval_batch_size: int = 256
    lr: float = 0.001  # Adam
    clip_norm: float = 5.0
    max_epochs: int = 10
    early_stop_patience: int = 3  # validations without a better score
    eval_every: int = 0  # steps between validations; 0: once per epoch
    saturation_examples: int = 200  # the first valid examples the gate-saturation probe runs over

    def __post_init__(self):
        super().__post_init__()
        checks.positive(self, "batch_size", "eval_batch_size", "lr", "clip_norm", "max_epochs",
                        "early_stop_patience", "saturation_examples")
        checks.at_least(self, 0, "eval_every")


@dataclass
class ClassifyTrainConfig(EpochTrainConfig):
    """The schema of ``g2lstm/conf/classify/train``."""

    weight_decay: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        checks.at_least(self, 0, "weight_decay")


@dataclass
class ClassifyConfig(TaskConfig):
    """The schema of ``g2lstm/conf/classify/config.yaml``."""

    data: SentimentDataConfig = MISSING
    model: ClassifierModelConfig = MISSING
    train: ClassifyTrainConfig = MISSING


checks.store(ClassifyTrainConfig, "classify_train_schema", group="train")
checks.store(ClassifyConfig, "classify_schema")


def classify_config(overrides: list[str] | None = None):
    """The composed ``g2lstm/conf/classify`` config with Hydra-style overrides, for use from Python."""
    return compose_config(TASK, overrides)


def build_data(cfg: dict) -> dict[str, list[Example]]:
    d = cfg["data"]
    return load_sentiment(d.get("root"), d["split_seed"], d.get("out_of_domain") or ())


def batches(count: int, batch_size: int, seed: int | None = None) -> list[list[int]]:
    """Index batches over ``count`` examples, in file order or shuffled by ``seed``."""
    order = torch.arange(count) if seed is None else torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return [order[i:i + batch_size].tolist() for i in range(0, count, batch_size)]


def scores(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 (the mean over classes of F1; a class never predicted nor present
    counts 0)."""
    f1 = []
    for c in range(num_classes):
        true_pos = ((predicted == c) & (labels == c)).sum().item()
        denominator = (predicted == c).sum().item() + (labels == c).sum().item()
        f1.append(2 * true_pos / denominator if denominator else 0.0)
    return {"accuracy": (predicted == labels).float().mean().item(), "macro_f1": sum(f1) / num_classes}


@torch.no_grad()
def evaluate(model: RNNClassifier, table: SymbolTable, examples: Sequence[Example], batch_size: int = 256) -> dict[str, float]:
    """Accuracy and macro-F1 of ``model`` (in eval mode) on ``examples``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predicted = []
    for index in batches(len(examples), batch_size):
        tokens, lengths = table.batch([tokenize(examples[i].text) for i in index])
        predicted.append(model(tokens.to(device), lengths.to(device)).argmax(-1).cpu())
    model.train(was_training)
    labels = torch.tensor([e.label for e in examples])
    return {**scores(torch.cat(predicted), labels, model.cfg.num_classes), "sentences": len(examples)}


# --- the bookkeeping the classification and transliteration loops share (each keeps its own loop)


def shard_logits(run: Run, model: RNNClassifier, tokens: torch.Tensor, lengths: torch.Tensor, device):
    """The logits of this rank's rows of a global batch (``tokens`` (N, T), ``lengths`` (N,)), with
    the gate noise and dropout masks those rows get in the whole batch, and the slice of the rows."""
    offset, rows = run.world.split_rows(len(lengths))
    mine = slice(offset, offset + rows)
    with shard.batch_shard(offset, rows, len(lengths), lengths=lengths.tolist()):
        return model(tokens[mine].to(device), lengths[mine].to(device)), mine


def keep_best(run: Run, ts: dict, record: dict, key: str, patience: int, save_best) -> None:
    """Log a validation ``record``; on a better ``record[key]`` call ``save_best()``, and after
    ``patience`` validations without one set ``ts['stopped']``."""
    improved = ts["best"] is None or record[key] > ts["best"]
    ts["best"], ts["bad_evals"] = (record[key], 0) if improved else (ts["best"], ts["bad_evals"] + 1)
    if improved:
        save_best()
    if ts["bad_evals"] >= patience:
        ts["stopped"] = f"no better validation {key} in {ts['bad_evals']} validations"
    run.metrics.write(**record, improved=improved)
    tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))


def train(cfg, run_dir: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train (or resume, if ``run_dir`` has a ``last.pt``) and test one run; with the command line's
    ``overrides`` a resumed run takes its saved config with only those applied. With
    ``stopped='max_steps'`` the result has no test scores: run the folder again to go on."""
    checks.validate(cfg, ClassifyConfig)  # before anything is read or written
    run = Run(cfg, TASK, run_dir if run_dir is not None else Path("runs/classify") / time.strftime("%Y%m%d-%H%M%S"), overrides)
    if run.finished:
        return run.result()
    cfg, t = run.cfg, run.cfg["train"]
    device = torch.device(cfg.get("device", "cpu"))

    data = build_data(cfg)
    train_tokens = [tokenize(e.text) for e in data["train"]]
    train_labels = torch.tensor([e.label for e in data["train"]])
    table = SymbolTable(run.saved["symbols"]) if run.resumed else SymbolTable.build(train_tokens, cfg["data"]["min_count"])
    model = RNNClassifier(ClassifierConfig(vocab_size=len(table), num_classes=2, **cfg["model"])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    ts = run.restore(model, optimizer) or {"epoch": 0, "batch_in_epoch": 0, "best": None, "bad_evals": 0}
    ts["stopped"] = None  # a resumed run continues; its limits (maybe raised) are checked again
    payload = {"model_config": model.config_dict(), "symbols": table.symbols}
    print(f"{cfg['model']['cell']}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(data['train'])} training sentences, {len(table)} words, run_dir {run.dir}")

    def validate() -> None:
        record = {"split": "valid", "step": run.step, "epoch": ts["epoch"],
                  **run.on_main(lambda: evaluate(model, table, data["valid"], t["eval_batch_size"]))}
        keep_best(run, ts, record, "accuracy", t["early_stop_patience"], lambda: run.save_best(model, **payload))

    def save() -> None:
        run.save(model, optimizer, ts, **payload)

    # the gates watched in training: the first valid sentences
    probe = [tuple(x.to(device) for x in table.batch([tokenize(e.text) for e in data["valid"][:t["saturation_examples"]]]))]
    gates = None if run.resumed else run.watch_gates(model, probe)
    budget = None
    model.train()
    while ts["stopped"] is None and ts["epoch"] < t["max_epochs"] and budget is None:
        epoch_batches = batches(len(train_tokens), t["batch_size"], seed=cfg["seed"] * 100_003 + ts["epoch"])
        bar = run.progress(len(epoch_batches), ts["batch_in_epoch"], f"epoch {ts['epoch'] + 1}")
        leave = False
        while not leave:
            index = epoch_batches[ts["batch_in_epoch"]]
            tokens, lengths = table.batch([train_tokens[i] for i in index])  # the global batch
            run.apply_schedules(model)
            logits, mine = shard_logits(run, model, tokens, lengths, device)
            # this rank's summed loss over the global batch size: the shares add up to the mean
            loss = F.cross_entropy(logits, train_labels[index][mine].to(device), reduction="sum") / len(index)
            loss, grad_norm = run.optimizer_step(model, optimizer, loss, t["clip_norm"])
            gates = run.watch_gates(model, probe) or gates
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", **(gates or {}))
            if run.step % t["log_every"] == 0:
                run.metrics.write(split="train", step=run.step, epoch=ts["epoch"], loss=loss,
                                  grad_norm=grad_norm, elapsed=run.elapsed)
            leave, budget = run.after_epoch_step(ts, len(epoch_batches), validate, save)
        bar.close()
    partial = run.end_epochs(ts, budget, save)
    if partial is not None:
        return partial

    model.load_state_dict(load_checkpoint(run.best_path)["model"])
    test = run.on_main(lambda: {name: evaluate(model, table, examples, t["eval_batch_size"])
                                for name, examples in data.items() if name not in ("train", "valid")})
    result = run.finish({"checkpoint": str(run.best_path), "cell": cfg["model"]["cell"], "epochs": ts["epoch"],
                         "stopped": ts["stopped"], "best_valid_accuracy": ts["best"], **test["test"],
                         "out_of_domain": {k: v for k, v in test.items() if k != "test"}})
    for name, s in test.items():
        print(f"{name}: accuracy {s['accuracy']:.4f} macro-F1 {s['macro_f1']:.4f} ({s['sentences']} sentences)")
    return result
