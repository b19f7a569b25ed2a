"""Train an attention encoder-decoder: ``train(cfg) -> {'run_dir', 'checkpoint', 'bleu', ...}``.

The loop, top to bottom: load the corpus and filter the training pairs; train sentencepiece on the
training split (or take it from the checkpoint when resuming); build the model; then for each
epoch, token-count batches over length-sorted buckets (shuffled by a seed derived from the epoch,
so a resumed run sees the same batches), label-smoothed cross-entropy, Adam with linear warm-up,
gradient clipping, and every ``eval_every`` steps (or epoch) a validation that decays the learning
rate on a plateau, saves ``best.pt`` on improvement and stops early when the validation score stops
improving; ``last.pt`` is saved then and every ``checkpoint_every`` steps. The run folder, resume
and budgets are :class:`g2lstm.runtime.Run`'s. At the end ``best.pt`` is scored on the test split with beam
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
from tqdm import tqdm

from .. import config as checks, runtime, shard
from ..data.mt import MTDataConfig, filter_pairs, load_corpus
from ..config import compose_config
from ..runtime import Run, load_checkpoint
from .batching import token_batches, training_batch
from .evaluate import TOKENIZED_BLEU, bleu_of
from .model import ModelConfig, Seq2Seq
from .tokenizer import PAD, Tokenizers, train_tokenizers


TASK = "mt"


# ----------------------------------------------------------------------------- config schemas


@dataclass
class MTTrainConfig(runtime.RunConfig):
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
        checks.positive(self, "max_tokens", "lr", "decay_patience", "early_stop_patience", "clip_norm",
                        "max_epochs", "valid_beam")
        checks.require(self, "betas", lambda b: len(b) == 2 and all(0 <= x < 1 for x in b),
                       "two Adam betas in [0, 1)")
        checks.at_least(self, 0, "warmup_steps", "min_lr", "eval_every")
        checks.require(self, "lr_decay", lambda v: 0 < v <= 1, "a factor in (0, 1]")
        checks.require(self, "label_smoothing", lambda v: 0 <= v < 1, "a probability in [0, 1)")
        checks.positive(self, "saturation_pairs")
        checks.one_of(self, "select_by", ("loss", "bleu"))


@dataclass
class MTEvalConfig:
    """The final test decoding (``eval`` in ``g2lstm/conf/mt/config.yaml``)."""

    beam: int = 5
    length_penalty: float = 1.0
    max_tokens: int = 4000
    tokenized_bleu: str = "13a"

    def __post_init__(self):
        checks.positive(self, "beam", "max_tokens")
        checks.at_least(self, 0, "length_penalty")
        checks.one_of(self, "tokenized_bleu", TOKENIZED_BLEU)


@dataclass
class MTConfig(runtime.TaskConfig):
    """The schema of ``g2lstm/conf/mt/config.yaml``."""

    data: MTDataConfig = MISSING
    model: ModelConfig = MISSING
    train: MTTrainConfig = MISSING
    eval: MTEvalConfig = field(default_factory=MTEvalConfig)


checks.store(MTTrainConfig, "mt_train_schema", group="train")
checks.store(MTConfig, "mt_schema")


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
    """{'train', 'valid', 'test'} pairs; length and ratio filters apply to the training split only."""
    d = cfg["data"]
    corpus = load_corpus(d["name"], d["src"], d["tgt"], d.get("path"), **d.get("options", {}))
    names = d["splits"]
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


def validation_record(model, tokenizers, pairs, val_src, val_tgt, t, ev, device) -> dict[str, Any]:
    """``{'split': 'valid', 'loss', 'ppl'}``, and ``'bleu'`` when the run selects by BLEU."""
    loss = validation_loss(model, val_src, val_tgt, t["max_tokens"], device)
    record = {"split": "valid", "loss": loss, "ppl": math.exp(min(loss, 50))}
    if t["select_by"] == "bleu":
        record["bleu"] = bleu_of(model, tokenizers, pairs, beam=t["valid_beam"], max_tokens=ev["max_tokens"])["bleu"]
    return record


def shard_batch(run: Run, pairs: list[int], src_ids, tgt_ids) -> tuple[dict[str, torch.Tensor], int, tuple]:
    """This rank's rows of a global batch (the example indices ``pairs``), the global batch's
    target token count and the arguments of :func:`g2lstm.shard.batch_shard` for these rows. The
    tensors are those of the global batch, cut: padded to the global lengths, so every rank runs
    the decoder for as many steps (and draws as many random numbers) as one process."""
    whole = training_batch([src_ids[i] for i in pairs], [tgt_ids[i] for i in pairs])
    offset, rows = run.world.split_rows(len(pairs))
    tokens = int((whole["tgt_out"] != PAD).sum())
    where = (offset, rows, len(pairs), whole["src_lengths"].tolist())  # lengths: the packed encoder's
    return {k: v[offset:offset + rows] for k, v in whole.items()}, tokens, where


def train(cfg, run_dir: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train (or resume, if ``run_dir`` has a ``last.pt``) and test one run. With the command
    line's ``overrides``, a resumed run takes its saved config with only those applied.

    Returns the test scores with ``run_dir``, ``steps``, ``epochs``, ``stopped``; with
    ``stopped='max_steps'`` only the first four (no test: run the folder again to go on).
    """
    checks.validate(cfg, MTConfig)  # before anything is read or written
    run_dir = run_dir if run_dir is not None else Path("runs/mt") / time.strftime("%Y%m%d-%H%M%S")
    run = Run(cfg, TASK, run_dir, overrides)
    if run.finished:
        return run.result()
    cfg = run.cfg
    t, ev = cfg["train"], cfg["eval"]
    device = torch.device(cfg.get("device", "cpu"))

    data = build_data(cfg)
    if run.resumed:
        tokenizers = Tokenizers.from_state(run.saved["tokenizers"])
    else:
        tk = cfg["data"]["tokenizer"]
        tokenizers = train_tokenizers(data["train"], tk["joint"], tk["vocab_size"], tk["model_type"], tk["character_coverage"])
    src_ids = tokenizers.src.encode([s for s, _ in data["train"]])
    tgt_ids = tokenizers.tgt.encode([t_ for _, t_ in data["train"]])
    val_src = tokenizers.src.encode([s for s, _ in data["valid"]])
    val_tgt = tokenizers.tgt.encode([t_ for _, t_ in data["valid"]])

    model = Seq2Seq(ModelConfig(**cfg["model"]), tokenizers.src.vocab_size, tokenizers.tgt.vocab_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=t["lr"], betas=tuple(t.get("betas", (0.9, 0.999))))
    # trainer state: everything besides weights and optimizer that an exact resume needs
    ts = run.restore(model, optimizer) or {"epoch": 0, "batch_in_epoch": 0, "lr_scale": 1.0, "best": None,
                                           "bad_evals": 0, "evals_since_decay": 0, "stopped": None}
    ts["stopped"] = None  # a resumed run continues; its limits (maybe raised) are checked again
    print(f"{cfg['model']['cell']}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(data['train'])} training pairs, vocab {model.src_vocab}/{model.tgt_vocab}, run_dir {run.dir}")
    payload = {"model_config": model.config_dict(), "tokenizers": tokenizers.state()}

    def validate() -> bool:
        """Score on the validation split, decay / stop on a plateau; True means stop training."""
        record = run.on_main(lambda: validation_record(model, tokenizers, data["valid"], val_src, val_tgt, t, ev, device))
        record.update(step=run.step, epoch=ts["epoch"])
        loss = record["loss"]
        value = record["bleu"] if t["select_by"] == "bleu" else -loss  # larger is better
        improved = ts["best"] is None or value > ts["best"]
        if improved:
            ts["best"], ts["bad_evals"], ts["evals_since_decay"] = value, 0, 0
        else:
            ts["bad_evals"] += 1
            ts["evals_since_decay"] += 1
            if ts["evals_since_decay"] >= t["decay_patience"]:
                ts["lr_scale"] *= t["lr_decay"]
                ts["evals_since_decay"] = 0
        stop = None
        if ts["bad_evals"] >= t["early_stop_patience"]:
            stop = f"no improvement in {ts['bad_evals']} validations"
        elif t["lr"] * ts["lr_scale"] < t["min_lr"]:
            stop = f"learning rate fell below min_lr={t['min_lr']}"
        record.update(improved=improved, lr=t["lr"] * ts["lr_scale"])
        run.metrics.write(**record)
        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if improved:
            run.save_best(model, **payload)
        ts["stopped"] = stop
        return stop is not None

    watched = min(t["saturation_pairs"], len(val_src))  # the valid pairs whose gates are watched in training
    probe = [tuple(b[k].to(device) for k in ("src", "src_lengths", "tgt_in"))
             for b in (training_batch(val_src[i:min(i + 50, watched)], val_tgt[i:min(i + 50, watched)])
                       for i in range(0, watched, 50))]
    gates = None if run.resumed else run.watch_gates(model, probe)  # step 0: the initial gates
    def save() -> None:
        run.save(model, optimizer, ts, **payload)

    budget = None
    model.train()
    while ts["stopped"] is None and ts["epoch"] < t["max_epochs"] and budget is None:
        batches = token_batches([len(s) + 1 for s in src_ids], [len(x) + 1 for x in tgt_ids], t["max_tokens"],
                                seed=cfg["seed"] * 100_003 + ts["epoch"])
        bar = run.progress(len(batches), ts["batch_in_epoch"], f"epoch {ts['epoch'] + 1}")
        while ts["batch_in_epoch"] < len(batches):
            batch = batches[ts["batch_in_epoch"]]
            b, n_tokens, where = shard_batch(run, batch, src_ids, tgt_ids)
            b = {k: v.to(device) for k, v in b.items()}
            run.apply_schedules(model)
            lr = t["lr"] * ts["lr_scale"] * min(1.0, (run.step + 1) / max(t["warmup_steps"], 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            with shard.batch_shard(*where):  # gate noise and dropout masks of these rows
                logits = model(b["src"], b["src_lengths"], b["tgt_in"])
            # sum over this rank's tokens / the global batch's tokens: the shares add up to the
            # per-token mean of the whole batch whatever each rank's token count
            loss = F.cross_entropy(logits.flatten(0, 1).float(), b["tgt_out"].flatten(), ignore_index=PAD,
                                   label_smoothing=t["label_smoothing"], reduction="sum") / n_tokens
            loss, grad_norm = run.optimizer_step(model, optimizer, loss, t["clip_norm"])
            bar.update(1)
            gates = run.watch_gates(model, probe) or gates
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", **(gates or {}))
            if run.step % t["log_every"] == 0:
                run.metrics.write(split="train", step=run.step, epoch=ts["epoch"], loss=loss, lr=lr,
                                  grad_norm=grad_norm, tokens=n_tokens, elapsed=run.elapsed)
            leave, budget = run.after_epoch_step(ts, len(batches), validate, save)
            if leave:
                break
        bar.close()
    partial = run.end_epochs(ts, budget, save)
    if partial is not None:
        return partial

    # final test score of the best validation checkpoint, on rank 0
    model.load_state_dict(load_checkpoint(run.best_path)["model"])
    test = run.on_main(lambda: bleu_of(model, tokenizers, data["test"], beam=ev["beam"], length_penalty=ev["length_penalty"],
                                       max_tokens=ev["max_tokens"], tokenized=ev["tokenized_bleu"], return_hypotheses=True))
    hypotheses = test.pop("hypotheses")
    if run.world.is_main:
        (run.dir / "test.hyp").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    result = run.finish({"checkpoint": str(run.best_path), "cell": cfg["model"]["cell"],
                         "test_split": cfg["data"]["splits"]["test"], "epochs": ts["epoch"],
                         "stopped": ts["stopped"], "best_valid": ts["best"], **test})
    print(f"test {result['test_split']}: BLEU {test['bleu']:.2f} chrF {test['chrf']:.2f} tokBLEU {test['tok_bleu']:.2f}")
    print(test["bleu_signature"])
    return result
