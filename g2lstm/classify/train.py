"""Train a sentence-polarity classifier: ``train(cfg, run_dir) -> {'accuracy', 'macro_f1', ...}``.

The loop, top to bottom: read the Rotten Tomatoes sentences and their fixed split
(:mod:`g2lstm.data.sentiment`), build the word table from the training split, build the model;
then for each epoch, batches of ``batch_size`` sentences in an order drawn from (seed, epoch) (so
a resumed run sees the same batches), cross-entropy, Adam, gradient clipping, and after every
epoch (or ``eval_every`` steps) a validation (accuracy, macro-F1) that saves ``best.pt`` on a
better accuracy and stops early after ``early_stop_patience`` validations without one. At the end
``best.pt`` is scored on the test split and on each out-of-domain set. The run folder, resume and
budgets are :class:`g2lstm.train.Run`'s; ``cfg`` is the Hydra config of ``g2lstm/conf/classify``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from .. import config
from ..config import compose_config
from ..config.run import EpochTrainConfig, TaskConfig
from ..data.sentiment import Example, SentimentDataConfig, load_sentiment, tokenize
from ..data.symbols import SymbolTable
from ..train import EpochState, GateSchedules, GateWatch, Run, load_checkpoint
from ..train.distributed import forward_rows
from ..train.epochs import epoch_batches
from ..train.fingerprint import fingerprint
from .model import ClassifierConfig, ClassifierModelConfig, RNNClassifier

TASK = "classify"


# ----------------------------------------------------------------------------- config schemas


@dataclass
class ClassifyTrainConfig(EpochTrainConfig):
    """The schema of ``g2lstm/conf/classify/train``."""

    weight_decay: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        config.at_least(self, 0, "weight_decay")


@dataclass
class ClassifyConfig(TaskConfig):
    """The schema of ``g2lstm/conf/classify/config.yaml``."""

    data: SentimentDataConfig = MISSING
    model: ClassifierModelConfig = MISSING
    train: ClassifyTrainConfig = MISSING


config.store(ClassifyTrainConfig, "classify_train_schema", group="train")
config.store(ClassifyConfig, "classify_schema")


def classify_config(overrides: list[str] | None = None):
    """The composed ``g2lstm/conf/classify`` config with Hydra-style overrides, for use from Python."""
    return compose_config(TASK, overrides)


def build_data(cfg: dict) -> dict[str, list[Example]]:
    d = cfg["data"]
    return load_sentiment(d.get("root"), d["split_seed"], d.get("out_of_domain") or ())


def majority_class(labels: torch.Tensor, num_classes: int) -> int:
    """The most frequent class of ``labels`` (the lowest on a tie)."""
    return int(torch.bincount(labels, minlength=num_classes).argmax())


def scores(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int,
           train_majority: int | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 (the mean over classes of F1; a class never predicted nor present
    counts 0), beside what a constant answer scores: ``majority_accuracy`` always answers the most
    frequent class of ``labels`` (the set's own baseline), ``train_majority_accuracy`` the training
    split's most frequent class ``train_majority`` (when given). An out-of-domain set of 69%
    positive sentences makes 46% accuracy worse than a constant."""
    f1 = []
    for c in range(num_classes):
        true_pos = ((predicted == c) & (labels == c)).sum().item()
        denominator = (predicted == c).sum().item() + (labels == c).sum().item()
        f1.append(2 * true_pos / denominator if denominator else 0.0)
    result = {"accuracy": (predicted == labels).float().mean().item(), "macro_f1": sum(f1) / num_classes,
              "majority_accuracy": (labels == majority_class(labels, num_classes)).float().mean().item()}
    if train_majority is not None:
        result["train_majority_accuracy"] = (labels == train_majority).float().mean().item()
    return result


@torch.no_grad()
def evaluate(model: RNNClassifier, table: SymbolTable, examples: Sequence[Example], batch_size: int = 256,
             train_majority: int | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 of ``model`` (in eval mode) on ``examples``, with the majority-class
    baselines of :func:`scores` (``train_majority``: the training split's most frequent label)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predicted = []
    for index in epoch_batches(len(examples), batch_size):
        tokens, lengths = table.batch([tokenize(examples[i].text) for i in index])
        predicted.append(model(tokens.to(device), lengths.to(device)).argmax(-1).cpu())
    model.train(was_training)
    labels = torch.tensor([e.label for e in examples])
    return {**scores(torch.cat(predicted), labels, model.cfg.num_classes, train_majority), "sentences": len(examples)}


def train(cfg, run_dir: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train (or resume, if ``run_dir`` has a ``last.pt``) and test one run; with the command line's
    ``overrides`` a resumed run takes its saved config with only those applied. With
    ``stopped='max_steps'`` the result has no test scores: run the folder again to go on."""
    config.validate(cfg, ClassifyConfig)  # before anything is read or written
    run = Run(cfg, TASK, run_dir if run_dir is not None else Path("runs/classify") / time.strftime("%Y%m%d-%H%M%S"), overrides)
    if run.finished:
        return run.result()
    cfg, train_cfg = run.cfg, run.cfg["train"]
    device = torch.device(cfg.get("device", "cpu"))

    data = build_data(cfg)
    train_tokens = [tokenize(e.text) for e in data["train"]]
    train_labels = torch.tensor([e.label for e in data["train"]])
    table = SymbolTable(run.saved["symbols"]) if run.resumed else SymbolTable.build(train_tokens, cfg["data"]["min_count"])
    model = RNNClassifier(ClassifierConfig(vocab_size=len(table), num_classes=2, **cfg["model"])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"])
    run.start(fingerprint(data, table.symbols))
    state = EpochState.restore(run.restore(model, optimizer))
    payload = {"model_config": model.config_dict(), "symbols": table.symbols}
    print(f"{cfg['model']['cell']}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(data['train'])} training sentences, {len(table)} words, run_dir {run.dir}")

    schedules = GateSchedules(train_cfg, cfg["model"])
    # the gates watched in training: the first valid sentences
    probe = [tuple(x.to(device) for x in table.batch([tokenize(e.text) for e in data["valid"][:train_cfg["saturation_examples"]]]))]
    watch = GateWatch(train_cfg["saturation_every"], probe, enabled=run.world.is_main)
    gates = None if run.resumed else watch(model, run.step, run.metrics)
    # a run stopped by train.max_steps and started again as it was takes no step (and writes nothing)
    budget = "max_steps" if run.budget_reached() == "max_steps" else None
    model.train()
    while budget is None and state.stopped is None and state.epoch < train_cfg["max_epochs"]:
        batches = epoch_batches(len(train_tokens), train_cfg["batch_size"], seed=cfg["seed"] * 100_003 + state.epoch)
        bar = run.progress(len(batches), state.batch_in_epoch, f"epoch {state.epoch + 1}")
        for index in batches[state.batch_in_epoch:]:
            tick = time.time()
            tokens, lengths = table.batch([train_tokens[i] for i in index])  # the global batch
            schedules.apply(model, run.step)
            logits, mine = forward_rows(run.world, model, tokens, lengths, device)
            # this rank's summed loss over the global batch size: the shares add up to the mean
            loss = F.cross_entropy(logits, train_labels[index][mine].to(device), reduction="sum") / len(index)
            loss, grad_norm = run.optimizer_step(model, optimizer, loss, train_cfg["clip_norm"])
            gates = watch(model, run.step, run.metrics) or gates
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", **(gates or {}))
            due = run.due(end_of_epoch=state.is_last_batch(len(batches)))
            if due.log:
                run.metrics.write(split="train", step=run.step, epoch=state.epoch, loss=loss, grad_norm=grad_norm,
                                  lr=optimizer.param_groups[0]["lr"],
                                  tokens_per_s=int(lengths.sum()) / max(time.time() - tick, 1e-9), elapsed=run.elapsed)
            end_of_epoch = state.count_batch(len(batches))
            if due.validate:
                record = {"split": "valid", "step": run.step, "epoch": state.epoch,
                          **run.world.on_main(lambda: evaluate(model, table, data["valid"], train_cfg["eval_batch_size"]))}
                improved = state.observe(record["accuracy"], train_cfg["early_stop_patience"], "accuracy")
                run.record_validation(record, improved, model, **payload)
            if due.save:
                run.save(model, optimizer, state.as_dict(), **payload)
            budget = due.budget
            if budget or state.stopped or end_of_epoch:
                break
        bar.close()
    if budget == "max_steps" and state.stopped is None:
        return run.stopped_early(epochs=state.epoch)

    state.stopped = state.why_ended(budget, run.elapsed, train_cfg["max_epochs"])
    run.save(model, optimizer, state.as_dict(), **payload)
    print(f"stopped: {state.stopped}")
    model.load_state_dict(load_checkpoint(run.best_path)["model"])
    train_majority = majority_class(train_labels, model.cfg.num_classes)
    test = run.world.on_main(lambda: {name: evaluate(model, table, examples, train_cfg["eval_batch_size"], train_majority)
                                      for name, examples in data.items() if name not in ("train", "valid")})
    watch.plot(run.metrics, run.dir / "saturation.png", f"{run.dir.name}: gate saturation")
    result = run.finish({"checkpoint": str(run.best_path), "cell": cfg["model"]["cell"], "epochs": state.epoch,
                         "stopped": state.stopped, "best_valid_accuracy": state.best, **test["test"],
                         "out_of_domain": {k: v for k, v in test.items() if k != "test"}})
    for name, s in test.items():
        print(f"{name}: accuracy {s['accuracy']:.4f} macro-F1 {s['macro_f1']:.4f} ({s['sentences']} sentences; "
              f"always its majority class: {s['majority_accuracy']:.4f})")
    return result
