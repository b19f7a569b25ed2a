"""Train a Latin -> Cyrillic transliterator: ``train(cfg, run_dir) -> {'char_accuracy', 'word_accuracy', ...}``.

The loop, top to bottom: romanise the Russian Synodal Bible and split it by book
(:mod:`g2lstm.data.translit`), build the input (Latin) and output (Cyrillic) symbol tables from
the training split, build the model; then for each epoch, batches of ``batch_size`` pieces in an
order drawn from (seed, epoch) (so a resumed run sees the same batches), cross-entropy over every
input character, Adam, gradient clipping, and every ``eval_every`` steps (and after each epoch) a
validation (character and word accuracy) that saves ``best.pt`` on a better word accuracy and stops
early after ``early_stop_patience`` validations without one. At the end ``best.pt`` is scored on
the test books. The run folder, resume and budgets are :class:`g2lstm.train.Run`'s; ``cfg`` is
the Hydra config of ``g2lstm/conf/translit``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from .. import config
from ..classify.model import RecurrentModelConfig
from ..config import compose_config
from ..config.run import EpochTrainConfig, TaskConfig
from ..data.symbols import SymbolTable
from ..data.translit import Aligned, TranslitDataConfig, load_translit, words
from ..train import EpochState, GateSchedules, GateWatch, Run, load_checkpoint
from ..train.distributed import forward_rows
from ..train.epochs import epoch_batches
from ..train.fingerprint import fingerprint
from .model import Transliterator, transliterator_config

TASK = "translit"
IGNORE = -100  # target of padding positions


# ----------------------------------------------------------------------------- config schemas


@dataclass
class TranslitTrainConfig(EpochTrainConfig):
    """The schema of ``g2lstm/conf/translit/train`` (the meaning of each key:
    ``g2lstm/conf/translit/train/default.yaml``)."""

    valid_pieces: Optional[int] = 500  # validate on the first pieces of the valid books (null: all)

    def __post_init__(self):
        super().__post_init__()
        config.positive(self, "valid_pieces", optional=True)


@dataclass
class TranslitConfig(TaskConfig):
    """The schema of ``g2lstm/conf/translit/config.yaml``."""

    data: TranslitDataConfig = MISSING
    model: RecurrentModelConfig = MISSING
    train: TranslitTrainConfig = MISSING


config.store(TranslitTrainConfig, "translit_train_schema", group="train")
config.store(TranslitConfig, "translit_schema")


def translit_config(overrides: list[str] | None = None):
    """The composed ``g2lstm/conf/translit`` config with Hydra-style overrides, for use from Python."""
    return compose_config(TASK, overrides)


def build_data(cfg: dict) -> dict[str, list[Aligned]]:
    d = cfg["data"]
    return load_translit(d["translation"], d["romanise_seed"], d["max_chars"], d["valid_books"], d["test_books"],
                         d["schemas"], d.get("train_books"))


def encode(pieces: Sequence[Aligned], inputs: SymbolTable, outputs: SymbolTable):
    """``(input ids (N, T), lengths (N,), target ids (N, T) with IGNORE at padding)``."""
    tokens, lengths = inputs.batch([p.latin for p in pieces])
    targets, _ = outputs.batch([p.target for p in pieces])
    real = torch.arange(tokens.size(1)) < lengths.unsqueeze(1)
    return tokens, lengths, targets.masked_fill(~real, IGNORE)


@torch.no_grad()
def evaluate(model: Transliterator, inputs: SymbolTable, outputs: SymbolTable, pieces: Sequence[Aligned],
             batch_size: int = 256) -> dict[str, float]:
    """Character accuracy (every input character, spaces and punctuation included) and word
    accuracy (space-separated words whose every character is right) of ``model`` on ``pieces``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    right_chars = chars = right_words = all_words = 0
    for index in epoch_batches(len(pieces), batch_size):
        chunk = [pieces[i] for i in index]
        tokens, lengths, targets = encode(chunk, inputs, outputs)
        correct = (model(tokens.to(device), lengths.to(device)).argmax(-1).cpu() == targets)
        for row, piece in zip(correct, chunk):
            right_chars += int(row[:len(piece.latin)].sum())
            chars += len(piece.latin)
            spans = words(piece)
            right_words += sum(bool(row[a:b].all()) for a, b in spans)
            all_words += len(spans)
    model.train(was_training)
    return {"char_accuracy": right_chars / chars, "word_accuracy": right_words / all_words,
            "characters": chars, "words": all_words}


def train(cfg, run_dir: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train (or resume, if ``run_dir`` has a ``last.pt``) and test one run; with the command line's
    ``overrides`` a resumed run takes its saved config with only those applied. With
    ``stopped='max_steps'`` the result has no test scores: run the folder again to go on."""
    config.validate(cfg, TranslitConfig)  # before anything is read or written
    run = Run(cfg, TASK, run_dir if run_dir is not None else Path("runs/translit") / time.strftime("%Y%m%d-%H%M%S"), overrides)
    if run.finished:
        return run.result()
    cfg, train_cfg = run.cfg, run.cfg["train"]
    device = torch.device(cfg.get("device", "cpu"))

    data = build_data(cfg)
    if run.resumed:
        inputs, outputs = SymbolTable(run.saved["input_symbols"]), SymbolTable(run.saved["output_symbols"])
    else:
        inputs = SymbolTable.build(p.latin for p in data["train"])
        outputs = SymbolTable.build(p.target for p in data["train"])
    model = Transliterator(transliterator_config(len(inputs), len(outputs), **cfg["model"])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg["lr"])
    run.start(fingerprint(data, [inputs.symbols, outputs.symbols]))
    state = EpochState.restore(run.restore(model, optimizer))
    payload = {"model_config": model.config_dict(), "input_symbols": inputs.symbols, "output_symbols": outputs.symbols}
    valid = data["valid"][:train_cfg["valid_pieces"]] if train_cfg.get("valid_pieces") else data["valid"]
    print(f"{cfg['model']['cell']}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(data['train'])} training pieces, {len(inputs)} input / {len(outputs)} output symbols, run_dir {run.dir}")

    schedules = GateSchedules(train_cfg, cfg["model"])
    probe = [tuple(x.to(device) for x in encode(valid[:train_cfg["saturation_examples"]], inputs, outputs)[:2])]
    watch = GateWatch(train_cfg["saturation_every"], probe, enabled=run.world.is_main)  # the gates watched in training
    gates = None if run.resumed else watch(model, run.step, run.metrics)
    # a run stopped by train.max_steps and started again as it was takes no step (and writes nothing)
    budget = "max_steps" if run.budget_reached() == "max_steps" else None
    model.train()
    while budget is None and state.stopped is None and state.epoch < train_cfg["max_epochs"]:
        batches = epoch_batches(len(data["train"]), train_cfg["batch_size"], seed=cfg["seed"] * 100_003 + state.epoch)
        bar = run.progress(len(batches), state.batch_in_epoch, f"epoch {state.epoch + 1}")
        for index in batches[state.batch_in_epoch:]:
            tick = time.time()
            # the global batch; each rank computes its rows
            tokens, lengths, targets = encode([data["train"][i] for i in index], inputs, outputs)
            schedules.apply(model, run.step)
            logits, mine = forward_rows(run.world, model, tokens, lengths, device)
            # this rank's summed loss over the global batch's character count: the shares add up to the mean
            loss = F.cross_entropy(logits.flatten(0, 1), targets[mine].to(device).flatten(), ignore_index=IGNORE,
                                   reduction="sum") / int((targets != IGNORE).sum())
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
                          **run.world.on_main(lambda: evaluate(model, inputs, outputs, valid, train_cfg["eval_batch_size"]))}
                improved = state.observe(record["word_accuracy"], train_cfg["early_stop_patience"], "word_accuracy")
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
    test = run.world.on_main(lambda: evaluate(model, inputs, outputs, data["test"], train_cfg["eval_batch_size"]))
    watch.plot(run.metrics, run.dir / "saturation.png", f"{run.dir.name}: gate saturation")
    result = run.finish({"checkpoint": str(run.best_path), "cell": cfg["model"]["cell"], "epochs": state.epoch,
                         "stopped": state.stopped, "best_valid_word_accuracy": state.best,
                         "test_books": cfg["data"]["test_books"], **test})
    print(f"test books {cfg['data']['test_books']}: character accuracy {test['char_accuracy']:.4f}, "
          f"word accuracy {test['word_accuracy']:.4f} ({test['words']} words)")
    return result
