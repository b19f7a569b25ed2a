"""Train an attention encoder-decoder: ``train(cfg) -> {'run_dir', 'checkpoint', 'bleu', ...}``.

The loop, top to bottom: load the corpus and filter the training pairs; train sentencepiece on the
training split (or take it from the checkpoint when resuming); build the model; then for each
epoch, token-count batches over length-sorted buckets (shuffled by a seed derived from the epoch,
so a resumed run sees the same batches), label-smoothed cross-entropy, Adam with linear warm-up,
gradient clipping, and every ``eval_every`` steps (or epoch) a validation that decays the learning
rate on a plateau, saves ``best.pt`` on improvement and stops early when the validation score stops
improving; ``last.pt`` is saved then and every ``checkpoint_every`` steps. The run folder, resume
and budgets are :class:`g2lstm.train.Run`'s. At the end ``best.pt`` is scored on the test split with beam
search (sacreBLEU, chrF, tokenized BLEU) and everything lands in ``results.json``.

``cfg`` is the Hydra config of ``g2lstm/conf/mt`` (a DictConfig or a plain dict with the same keys);
:func:`mt_config` composes it from Python.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from .. import config, shard
from ..config import compose_config
from ..config.run import RunConfig, TaskConfig
from ..data.mt import MTDataConfig, filter_pairs, load_corpus
from ..train import EpochState, GateSchedules, GateWatch, Run, load_checkpoint
from ..train.distributed import World
from ..train.fingerprint import fingerprint
from .batching import token_batches, training_batch
from .evaluate import TOKENIZED_BLEU, bleu_of
from .model import ModelConfig, Seq2Seq
from .tokenizer import PAD, Tokenizers, train_tokenizers


TASK = "mt"


# ----------------------------------------------------------------------------- config schemas


@dataclass
class MTTrainConfig(RunConfig):
    """The schema of ``g2lstm/conf/mt/train`` (the meaning of each key: ``g2lstm/conf/mt/train/default.yaml``)."""

    max_tokens: int = 4000
    lr: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 500
    lr_decay: float = 0.5
    decay_patience: int = 1
    min_lr: float = 1.0e-5
    early_stop_patience: int = 4
    label_smoothing: float = 0.1
    clip_norm: float = 5.0
    max_epochs: int = 30
    eval_every: int = 0
    select_by: str = "loss"
    valid_beam: int = 1
    saturation_pairs: int = 100

    def __post_init__(self):
        super().__post_init__()
        config.positive(self, "max_tokens", "decay_patience", "early_stop_patience", "clip_norm",
                        "max_epochs", "valid_beam")
        config.finite_positive(self, "lr")
        config.require(self, "betas", lambda b: len(b) == 2 and all(0 <= x < 1 for x in b),
                       "two Adam betas in [0, 1)")
        config.at_least(self, 0, "warmup_steps", "min_lr", "eval_every")
        # training stops once the learning rate falls below min_lr: above lr, at the first validation
        config.require(self, "min_lr", lambda v: v <= self.lr, f"a value <= train.lr={self.lr} (training stops "
                       "once the learning rate falls below it)")
        config.require(self, "lr_decay", lambda v: 0 < v <= 1, "a factor in (0, 1]")
        config.require(self, "label_smoothing", lambda v: 0 <= v < 1, "a probability in [0, 1)")
        config.positive(self, "saturation_pairs")
        config.one_of(self, "select_by", ("loss", "bleu"))


@dataclass
class MTEvalConfig:
    """The final test decoding (``eval`` in ``g2lstm/conf/mt/config.yaml``)."""

    beam: int = 5
    length_penalty: float = 1.0
    max_tokens: int = 4000
    tokenized_bleu: str = "13a"

    def __post_init__(self):
        config.positive(self, "beam", "max_tokens")
        config.at_least(self, 0, "length_penalty")
        config.one_of(self, "tokenized_bleu", TOKENIZED_BLEU)


@dataclass
class MTConfig(TaskConfig):
    """The schema of ``g2lstm/conf/mt/config.yaml``."""

    data: MTDataConfig = MISSING
    model: ModelConfig = MISSING
    train: MTTrainConfig = MISSING
    eval: MTEvalConfig = field(default_factory=MTEvalConfig)

    def __post_init__(self):
        super().__post_init__()
        if self.model.share_embeddings and not self.data.tokenizer.joint:  # one table cannot serve two vocabularies
            raise config.ConfigValueError("model.share_embeddings", True, "false with separate vocabularies "
                                          "(data.tokenizer.joint=false); set data.tokenizer.joint=true to share")


config.store(MTTrainConfig, "mt_train_schema", group="train")
config.store(MTConfig, "mt_schema")


def mt_config(overrides: list[str] | None = None):
    """The composed ``g2lstm/conf/mt`` config with Hydra-style overrides, for use from Python."""
    return compose_config(TASK, overrides)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Seq2Seq, Tokenizers, dict]:
    """``(model in eval mode, tokenizers, config)`` from ``best.pt`` or ``last.pt``; an alias of
    :func:`g2lstm.load` for this task."""
    from ..tasks import load

    loaded = load(path, device, task=TASK)
    return loaded.model, loaded.tokenizers, loaded.config


def build_data(cfg: dict) -> dict[str, list[tuple[str, str]]]:
    """{'train', 'valid', 'test'} pairs; length and ratio filters apply to the training split only, and
    a blank line in the valid or test files is refused (:func:`g2lstm.data.mt.read_parallel`)."""
    d = cfg["data"]
    names = d["splits"]
    corpus = load_corpus(d["name"], d["src"], d["tgt"], d.get("path"), evaluation=(names["valid"], names["test"]),
                         **d.get("options", {}))
    for role, split in names.items():
        if split not in corpus:
            raise KeyError(f"data.splits.{role} is {split!r}, but the corpus has splits {sorted(corpus)}")
    f = d["filter"]
    data = {
        "train": filter_pairs(corpus[names["train"]], f["min_len"], f["max_len"], f["max_ratio"]),
        "valid": corpus[names["valid"]],
        "test": corpus[names["test"]],
    }
    for role, pairs in data.items():  # found now, not as a loss of 0 after the first epoch
        if not pairs:
            where = f"data.name={d['name']}" + (f", data.path={d['path']}" if d.get("path") else "")
            raise ValueError(f"the {role} split (data.splits.{role}={names[role]!r}, {where}) has no sentence pairs"
                             + (" left after data.filter" if role == "train" else ""))
    return data


@torch.no_grad()
def validation_loss(model: Seq2Seq, src_ids, tgt_ids, max_tokens: int, device) -> float:
    """Per-token cross-entropy (no smoothing) with teacher forcing, in eval mode."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for batch in token_batches([len(s) + 1 for s in src_ids], [len(t) + 1 for t in tgt_ids], max_tokens):
        b = {k: v.to(device) for k, v in training_batch([src_ids[i] for i in batch], [tgt_ids[i] for i in batch]).items()}
        logits = model(b["src"], b["src_lengths"], b["tgt_in"])
        total += F.cross_entropy(logits.flatten(0, 1).float(), b["tgt_out"].flatten(), ignore_index=PAD, reduction="sum").item()
        tokens += int((b["tgt_out"] != PAD).sum())
    model.train(was_training)
    return total / max(tokens, 1)


def validation_record(model, tokenizers, pairs, val_src, val_tgt, train_cfg, eval_cfg, device) -> dict[str, Any]:
    """``{'split': 'valid', 'loss', 'ppl'}``, and ``'bleu'`` when the run selects by BLEU."""
    loss = validation_loss(model, val_src, val_tgt, train_cfg["max_tokens"], device)
    record = {"split": "valid", "loss": loss, "ppl": math.exp(min(loss, 50))}
    if train_cfg["select_by"] == "bleu":
        record["bleu"] = bleu_of(model, tokenizers, pairs, beam=train_cfg["valid_beam"], max_tokens=eval_cfg["max_tokens"])["bleu"]
    return record


def shard_batch(world: World, pairs: list[int], src_ids, tgt_ids) -> tuple[dict[str, torch.Tensor], int, tuple]:
    """This rank's rows of a global batch (the example indices ``pairs``), the global batch's
    target token count and the arguments of :func:`g2lstm.shard.batch_shard` for these rows. The
    tensors are those of the global batch, cut: padded to the global lengths, so every rank runs
    the decoder for as many steps (and draws as many random numbers) as one process."""
    whole = training_batch([src_ids[i] for i in pairs], [tgt_ids[i] for i in pairs])
    offset, rows = world.split_rows(len(pairs))
    tokens = int((whole["tgt_out"] != PAD).sum())
    where = (offset, rows, len(pairs), whole["src_lengths"].tolist())  # lengths: the packed encoder's
    return {k: v[offset:offset + rows] for k, v in whole.items()}, tokens, where


@dataclass
class MTState(EpochState):
    """The MT trainer's state: :class:`EpochState` (``best`` is the BLEU or the negated loss) with
    the learning rate's decay on a plateau."""

    lr_scale: float = 1.0
    evals_since_decay: int = 0

    def observe_validation(self, value: float, train_cfg: dict) -> bool:
        """A validation score (larger is better): on a plateau of ``decay_patience`` validations the
        learning rate decays; training stops after ``early_stop_patience`` validations without a
        better score, or once the learning rate falls below ``min_lr``. True if it is the best."""
        improved = self.best is None or value > self.best
        if improved:
            self.best, self.bad_evals, self.evals_since_decay = value, 0, 0
        else:
            self.bad_evals += 1
            self.evals_since_decay += 1
            if self.evals_since_decay >= train_cfg["decay_patience"]:
                self.lr_scale *= train_cfg["lr_decay"]
                self.evals_since_decay = 0
        self.stopped = None
        if self.bad_evals >= train_cfg["early_stop_patience"]:
            self.stopped = f"no improvement in {self.bad_evals} validations"
        elif train_cfg["lr"] * self.lr_scale < train_cfg["min_lr"]:
            self.stopped = f"learning rate fell below min_lr={train_cfg['min_lr']}"
        return improved


def train(cfg, run_dir: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train (or resume, if ``run_dir`` has a ``last.pt``) and test one run. With the command
    line's ``overrides``, a resumed run takes its saved config with only those applied.

    Returns the test scores with ``run_dir``, ``steps``, ``epochs``, ``stopped``; with
    ``stopped='max_steps'`` only ``run_dir``, ``steps``, ``stopped`` and ``train_minutes`` (no
    test: run the folder again to go on).
    """
    config.validate(cfg, MTConfig)  # before anything is read or written
    run_dir = run_dir if run_dir is not None else Path("runs/mt") / time.strftime("%Y%m%d-%H%M%S")
    run = Run(cfg, TASK, run_dir, overrides)
    if run.finished:
        return run.result()
    cfg = run.cfg
    train_cfg, eval_cfg = cfg["train"], cfg["eval"]
    device = torch.device(cfg.get("device", "cpu"))

    data = build_data(cfg)
    if run.resumed:
        tokenizers = Tokenizers.from_state(run.saved["tokenizers"])
    else:
        tk = cfg["data"]["tokenizer"]
        tokenizers = train_tokenizers(data["train"], tk["joint"], tk["vocab_size"], tk["model_type"], tk["character_coverage"])
    src_ids = tokenizers.src.encode([source for source, _ in data["train"]])
    tgt_ids = tokenizers.tgt.encode([target for _, target in data["train"]])
    val_src = tokenizers.src.encode([source for source, _ in data["valid"]])
    val_tgt = tokenizers.tgt.encode([target for _, target in data["valid"]])

    model = Seq2Seq(ModelConfig(**cfg["model"]), tokenizers.src.vocab_size, tokenizers.tgt.vocab_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg["lr"], betas=tuple(train_cfg.get("betas", (0.9, 0.999))))
    pieces = [tokenizer.sp.id_to_piece(i) for tokenizer in (tokenizers.src, tokenizers.tgt) for i in range(tokenizer.vocab_size)]
    run.start(fingerprint(data, pieces))
    state = MTState.restore(run.restore(model, optimizer))
    print(f"{cfg['model']['cell']}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(data['train'])} training pairs, vocab {model.src_vocab}/{model.tgt_vocab}, run_dir {run.dir}")
    payload = {"model_config": model.config_dict(), "tokenizers": tokenizers.state()}

    schedules = GateSchedules(train_cfg, cfg["model"])
    watched = min(train_cfg["saturation_pairs"], len(val_src))  # the valid pairs whose gates are watched in training
    probe = [tuple(b[k].to(device) for k in ("src", "src_lengths", "tgt_in"))
             for b in (training_batch(val_src[i:min(i + 50, watched)], val_tgt[i:min(i + 50, watched)])
                       for i in range(0, watched, 50))]
    watch = GateWatch(train_cfg["saturation_every"], probe, enabled=run.world.is_main)
    gates = None if run.resumed else watch(model, run.step, run.metrics)  # step 0: the initial gates
    # a run stopped by train.max_steps and started again as it was takes no step (and writes nothing)
    budget = "max_steps" if run.budget_reached() == "max_steps" else None
    model.train()
    while budget is None and state.stopped is None and state.epoch < train_cfg["max_epochs"]:
        batches = token_batches([len(s) + 1 for s in src_ids], [len(x) + 1 for x in tgt_ids], train_cfg["max_tokens"],
                                seed=cfg["seed"] * 100_003 + state.epoch)
        bar = run.progress(len(batches), state.batch_in_epoch, f"epoch {state.epoch + 1}")
        for batch in batches[state.batch_in_epoch:]:
            tick = time.time()
            b, n_tokens, where = shard_batch(run.world, batch, src_ids, tgt_ids)
            b = {k: v.to(device) for k, v in b.items()}
            schedules.apply(model, run.step)
            lr = train_cfg["lr"] * state.lr_scale * min(1.0, (run.step + 1) / max(train_cfg["warmup_steps"], 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            with shard.batch_shard(*where):  # gate noise and dropout masks of these rows
                logits = model(b["src"], b["src_lengths"], b["tgt_in"])
            # sum over this rank's tokens / the global batch's tokens: the shares add up to the
            # per-token mean of the whole batch whatever each rank's token count
            loss = F.cross_entropy(logits.flatten(0, 1).float(), b["tgt_out"].flatten(), ignore_index=PAD,
                                   label_smoothing=train_cfg["label_smoothing"], reduction="sum") / n_tokens
            loss, grad_norm = run.optimizer_step(model, optimizer, loss, train_cfg["clip_norm"])
            bar.update(1)
            gates = watch(model, run.step, run.metrics) or gates
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", **(gates or {}))
            due = run.due(end_of_epoch=state.is_last_batch(len(batches)))
            if due.log:
                run.metrics.write(split="train", step=run.step, epoch=state.epoch, loss=loss, lr=lr, grad_norm=grad_norm,
                                  tokens=n_tokens, tokens_per_s=n_tokens / max(time.time() - tick, 1e-9),
                                  elapsed=run.elapsed)
            end_of_epoch = state.count_batch(len(batches))
            if due.validate:
                record = run.world.on_main(lambda: validation_record(model, tokenizers, data["valid"], val_src, val_tgt,
                                                                     train_cfg, eval_cfg, device))
                record.update(step=run.step, epoch=state.epoch)
                score = record["bleu"] if train_cfg["select_by"] == "bleu" else -record["loss"]  # larger is better
                improved = state.observe_validation(score, train_cfg)
                record.update(lr=train_cfg["lr"] * state.lr_scale)
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
    # final test score of the best validation checkpoint, on rank 0
    model.load_state_dict(load_checkpoint(run.best_path)["model"])
    test = run.world.on_main(lambda: bleu_of(model, tokenizers, data["test"], beam=eval_cfg["beam"],
                                             length_penalty=eval_cfg["length_penalty"], max_tokens=eval_cfg["max_tokens"],
                                             tokenized=eval_cfg["tokenized_bleu"], return_hypotheses=True))
    hypotheses = test.pop("hypotheses")
    if run.world.is_main:
        (run.dir / "test.hyp").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    watch.plot(run.metrics, run.dir / "saturation.png", f"{run.dir.name}: gate saturation")
    result = run.finish({"checkpoint": str(run.best_path), "cell": cfg["model"]["cell"],
                         "test_split": cfg["data"]["splits"]["test"], "epochs": state.epoch,
                         "stopped": state.stopped, "best_valid": state.best, **test})
    print(f"test {result['test_split']}: BLEU {test['bleu']:.2f} chrF {test['chrf']:.2f} tokBLEU {test['tok_bleu']:.2f}")
    print(test["bleu_signature"])
    return result
