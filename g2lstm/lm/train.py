"""Train an AWD-LSTM language model (LSTM, sharpened sigmoid or G2-LSTM) from a Hydra config.

The recipe of Merity et al. 2018: variable-length BPTT with the learning rate scaled by the
length, AR/TAR on the last layer, gradient clipping, SGD switched to averaged SGD by the
non-monotone trigger (NT-ASGD), then an optional finetune stage restarted from the best weights
with a fresh ASGD (:mod:`g2lstm.lm.nt_asgd`). The run folder is :class:`g2lstm.train.Run`'s:
``last.pt`` holds, besides what every checkpoint holds, the vocabulary, the schedule's state (stage,
epoch, position in the epoch, ASGD switch), the ASGD averages and the hidden state; ``best.pt`` the best weights on valid (averaged ones once ASGD
runs) with the vocabulary.

Python use (e.g. from another experiment)::

    from g2lstm.lm.train import lm_config, train
    result = train(lm_config(["experiment=brown_cpu", "model.cell=lstm"]), run_dir="runs/x")
    result["test_ppl"]
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import MISSING, DictConfig, OmegaConf
from tqdm import tqdm

from g2lstm import config, shard
from g2lstm.config import compose_config
from g2lstm.config.run import RunConfig, TaskConfig
from g2lstm.data.lm import Corpus, LMDataConfig, Vocab, batchify, load_corpus
from g2lstm.lm.evaluate import LMEvalConfig, evaluate, gate_data, perplexity
from g2lstm.lm.model import AWDLSTM, LMModelConfig, detach_hidden
from g2lstm.lm.nt_asgd import NTASGD, START_FINETUNE
from g2lstm.train import GateSchedules, GateWatch, Run, exp_or_inf, load_checkpoint
from g2lstm.train.fingerprint import fingerprint

TASK = "lm"


# ----------------------------------------------------------------------------- config schemas


@dataclass
class LMTrainConfig(RunConfig):
    """The schema of ``g2lstm/conf/lm/train`` (the meaning of each key: ``g2lstm/conf/lm/train/nt_asgd.yaml``)."""

    batch_size: int = 80
    eval_batch_size: int = 10
    bptt: int = 70
    lr: float = 30.0
    clip: float = 0.25  # 0: no clipping
    wdecay: float = 1.2e-6
    alpha: float = 2.0
    beta: float = 1.0
    epochs: int = 500
    asgd: bool = True
    nonmono: int = 5
    finetune_epochs: int = 0
    patience: Optional[int] = None
    min_delta: float = 0.0
    saturation_tokens: int = 2000

    def __post_init__(self):
        super().__post_init__()
        config.positive(self, "batch_size", "eval_batch_size", "bptt", "epochs", "nonmono")
        config.finite_positive(self, "lr")
        config.at_least(self, 0, "clip", "wdecay", "alpha", "beta", "finetune_epochs")
        config.positive(self, "saturation_tokens")
        config.positive(self, "patience", optional=True)
        config.at_least(self, 0, "min_delta")


@dataclass
class LMConfig(TaskConfig):
    """The schema of ``g2lstm/conf/lm/config.yaml``."""

    threads: Optional[int] = None  # null keeps torch's default
    data: LMDataConfig = MISSING
    model: LMModelConfig = MISSING
    train: LMTrainConfig = MISSING
    eval: LMEvalConfig = MISSING


config.store(LMTrainConfig, "nt_asgd_schema", group="train")
config.store(LMConfig, "lm_schema")


def lm_config(overrides: list[str] | None = None) -> DictConfig:
    """The composed ``g2lstm/conf/lm`` config with Hydra-style overrides, for use from Python."""
    return compose_config(TASK, overrides)


# ----------------------------------------------------------------------------- building blocks


def load_data(data_cfg: DictConfig, vocab: Vocab | None = None) -> Corpus:
    options = OmegaConf.to_container(data_cfg, resolve=True)
    options.pop("name", None)
    source, path = options.pop("source"), options.pop("path", None)
    return load_corpus(source, path, vocab=vocab, **options)


def build_model(model_cfg: DictConfig, vocab_size: int) -> AWDLSTM:
    return AWDLSTM(vocab_size, **OmegaConf.to_container(model_cfg, resolve=True))


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[AWDLSTM, Vocab, dict]:
    """``(model in eval mode, vocab, config)`` from ``best.pt`` or ``last.pt``; an alias of
    :func:`g2lstm.load` for this task."""
    from g2lstm.tasks import load

    loaded = load(path, device, task=TASK)
    return loaded.model, loaded.vocab, loaded.config


def make_optimizer(kind: str, params, train_cfg: DictConfig) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=train_cfg.lr, weight_decay=train_cfg.wdecay)
    if kind == "asgd":  # t0=0, lambd=0: a plain running average of the iterates from now on
        return torch.optim.ASGD(params, lr=train_cfg.lr, t0=0, lambd=0.0, weight_decay=train_cfg.wdecay)
    raise ValueError(f"optimizer kind must be 'sgd' or 'asgd'; got {kind!r}")


class averaged_weights:
    """Context manager: while inside, the model holds ASGD's averaged weights (as AWD-LSTM evaluates)."""

    def __init__(self, model, optimizer):
        self.params = [p for p in model.parameters()]
        self.optimizer = optimizer
        self.saved = None

    def __enter__(self):
        if isinstance(self.optimizer, torch.optim.ASGD):
            self.saved = [p.detach().clone() for p in self.params]
            with torch.no_grad():
                for p in self.params:
                    if "ax" in self.optimizer.state[p]:
                        p.copy_(self.optimizer.state[p]["ax"])
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            with torch.no_grad():
                for p, value in zip(self.params, self.saved):
                    p.copy_(value)


def set_step_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of the coming step. torch's ASGD steps with the ``eta`` it computed at
    the previous step, so with lambd=0 (eta == lr) we set ``eta`` too for the scaling to apply now."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        for p in group["params"]:
            if "eta" in optimizer.state.get(p, {}):
                optimizer.state[p]["eta"].fill_(lr)


def sample_seq_len(bptt: int) -> int:
    """AWD-LSTM's variable BPTT: mostly around bptt, 5% of the time around bptt/2; at least 5."""
    base = bptt if np.random.random() < 0.95 else bptt / 2
    return max(5, int(np.random.normal(base, 5)))


# ----------------------------------------------------------------------------- the run


def train(cfg: DictConfig, run_dir: str | os.PathLike | None = None, overrides: list[str] | None = None) -> dict:
    """Train (or resume, if ``run_dir`` has a ``last.pt``) and evaluate one run. With the command
    line's ``overrides``, a resumed run takes its saved config with only those applied.

    Returns ``{'run_dir', 'steps', 'stopped', 'ended_by', 'epochs', 'train_minutes', 'valid_ppl',
    'test_ppl', 'cache': {...} | None}`` where ``stopped`` is ``'done'``, ``'max_steps'`` (no
    evaluation: run the folder again to go on) or ``'max_minutes'``; ``ended_by`` says why the last
    stage ended (:class:`~g2lstm.lm.nt_asgd.NTASGD`: 'epochs', 'patience' (converged), 'nonmono',
    'stop') and ``epochs`` counts the last stage's epochs.
    """
    config.validate(cfg, LMConfig)  # before anything is read or written
    run_dir = run_dir if run_dir is not None else Path("runs/lm") / time.strftime("%Y-%m-%d_%H-%M-%S")
    # the saved hidden state and position in the epoch are laid out for one batch size
    run = Run(cfg, TASK, run_dir, overrides, fixed_keys=("train.batch_size",))
    if run.finished:
        return run.result()
    cfg = OmegaConf.create(run.cfg)
    train_cfg = cfg.train
    device = torch.device(cfg.device)
    corpus = load_data(cfg.data, vocab=Vocab(run.saved["vocab"]) if run.resumed else None)
    check_splits(corpus, cfg)
    model = build_model(cfg.model, len(corpus.vocab)).to(device)
    # train.batch_size is the global batch: rank r of W trains on columns [r N/W, (r+1) N/W) of the
    # (T, N) stream, contiguous parts of the text, disjoint across ranks
    offset, rows = run.world.even_rows(train_cfg.batch_size, "train.batch_size")
    columns = slice(offset, offset + rows)
    train_data = batchify(corpus.train, train_cfg.batch_size)[:, columns].to(device)
    epoch_end = train_data.size(0) - 2  # the last position a segment can start from
    print(f"run {run.dir}: {cfg.model.cell}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"vocab {len(corpus.vocab)}, train {corpus.train.numel():,} tokens", flush=True)

    schedule = NTASGD.restore(run.saved["trainer"] if run.resumed else None,
                              run.saved["config"]["train"] if run.resumed else None)
    optimizer = make_optimizer(schedule.optimizer_kind, model.parameters(), train_cfg)
    run.start(fingerprint({"train": corpus.train, "valid": corpus.valid, "test": corpus.test}, corpus.vocab.tokens))
    run.restore(model, optimizer if run.resumed else None)  # a fresh run: the weights of train.init_from, if given
    if run.resumed:  # the checkpoint holds the global batch's hidden state: resumes at any world size
        hidden = [(h[:, columns].to(device), c[:, columns].to(device)) for h, c in run.saved["hidden"]]
    else:
        hidden = model.init_hidden(rows)
    payload = {"vocab": corpus.vocab.tokens}

    if schedule.done and schedule.extend(train_cfg.epochs, train_cfg.finetune_epochs) == START_FINETUNE:
        optimizer = restart_from_best(model, run.best_path, train_cfg)

    gate_schedules = GateSchedules(run.cfg["train"], run.cfg["model"])
    watch = GateWatch(train_cfg.saturation_every, *gate_data(corpus.valid, train_cfg.saturation_tokens,
                                                             train_cfg.eval_batch_size, train_cfg.bptt, device),
                      enabled=run.world.is_main)
    gates = None if run.resumed else watch(model, run.step, run.metrics)  # step 0: the initial gates
    stopped = "done"
    bar = None
    while not schedule.done:
        if schedule.position == 0 or bar is None:
            bar = run.progress((train_data.size(0) - 1) * train_cfg.batch_size, schedule.position * train_cfg.batch_size,
                               f"{schedule.stage} epoch {schedule.epoch}", unit="tok")
        budget = None if schedule.position >= epoch_end else run.budget_reached()
        if schedule.position >= epoch_end or budget == "max_minutes":
            # the epoch's end; or out of wall-clock time: validate the partial epoch so that best.pt
            # reflects it, then stop
            bar.close()
            with averaged_weights(model, optimizer):  # under ASGD, its averages are the model evaluated
                val = run.world.on_main(lambda: perplexity(model, corpus.valid, train_cfg.eval_batch_size, train_cfg.bptt))
                if schedule.improved(val["loss"]):
                    run.save_best(model, **payload, epoch=schedule.epoch, stage=schedule.stage, valid_loss=val["loss"])
            run.metrics.write(event="epoch", stage=schedule.stage, epoch=schedule.epoch, step=run.step,
                              valid_loss=val["loss"], valid_ppl=val["ppl"], optimizer=schedule.optimizer_kind)
            tqdm.write(f"{schedule.stage} epoch {schedule.epoch}: valid ppl {val['ppl']:.2f} "
                       f"({schedule.optimizer_kind}, best {exp_or_inf(schedule.best_val):.2f})")
            action = schedule.end_epoch(val["loss"], train_cfg.epochs, train_cfg.finetune_epochs, train_cfg.nonmono,
                                        train_cfg.asgd, train_cfg.patience, train_cfg.min_delta)
            if action == START_FINETUNE:
                optimizer = restart_from_best(model, run.best_path, train_cfg)
            elif action is not None:  # the non-monotone trigger: averaged SGD from here on
                optimizer = make_optimizer("asgd", model.parameters(), train_cfg)
            if budget == "max_minutes":
                schedule.stop()
                stopped = budget
                break
            hidden = model.init_hidden(rows)
            run.save(model, optimizer, schedule.as_dict(), **payload, hidden=gathered(run, hidden))
            continue
        if budget == "max_steps":
            stopped = budget
            break

        tick = time.time()
        model.train()
        gate_schedules.apply(model, run.step)
        seq_len = min(sample_seq_len(train_cfg.bptt), train_data.size(0) - 1 - schedule.position)
        i = schedule.position
        inputs, targets = train_data[i:i + seq_len], train_data[i + 1:i + 1 + seq_len]
        hidden = detach_hidden(hidden)
        with shard.batch_shard(offset, rows, train_cfg.batch_size):  # gate noise and masks of these columns
            logits, hidden, raw_outputs, dropped_outputs = model(inputs, hidden)
        raw_loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        loss = raw_loss
        if train_cfg.alpha:  # AR: small activations of the (dropped) last-layer output
            loss = loss + train_cfg.alpha * dropped_outputs[-1].pow(2).mean()
        if train_cfg.beta:  # TAR: slowly changing last-layer hidden states
            loss = loss + train_cfg.beta * (raw_outputs[-1][1:] - raw_outputs[-1][:-1]).pow(2).mean()
        set_step_lr(optimizer, train_cfg.lr * seq_len / train_cfg.bptt)  # shorter segments get a smaller step
        # Every rank has as many tokens (and rows): the mean over the global batch is the sum of
        # the ranks' means divided by the world size.
        run.optimizer_step(model, optimizer, loss / run.world.size, train_cfg.clip)
        for group in optimizer.param_groups:
            group["lr"] = train_cfg.lr
        raw_loss = float(run.world.all_sum(raw_loss.detach() / run.world.size))
        schedule.position += seq_len

        tokens_per_s = seq_len * train_cfg.batch_size / max(time.time() - tick, 1e-9)  # of all ranks
        bar.update(seq_len * train_cfg.batch_size)
        gates = watch(model, run.step, run.metrics) or gates
        bar.set_postfix(loss=f"{raw_loss:.3f}", ppl=f"{exp_or_inf(min(raw_loss, 50)):.1f}",
                        tok_s=f"{tokens_per_s:.0f}", **(gates or {}), refresh=False)
        due = run.due()
        if due.log:
            run.metrics.write(event="train", stage=schedule.stage, epoch=schedule.epoch, step=run.step,
                              loss=raw_loss, ppl=exp_or_inf(min(raw_loss, 50)), lr=train_cfg.lr * seq_len / train_cfg.bptt,
                              tokens_per_s=tokens_per_s)
        if due.save:
            run.save(model, optimizer, schedule.as_dict(), **payload, hidden=gathered(run, hidden))
    if bar is not None:
        bar.close()
    if run.has_unsaved_steps or stopped == "max_minutes":
        run.save(model, optimizer, schedule.as_dict(), **payload, hidden=gathered(run, hidden))
    if stopped == "max_steps":
        return run.stopped_early(train_minutes=run.elapsed / 60)
    result = run.world.on_main(lambda: final_evaluation(cfg, run.best_path, corpus))
    watch.plot(run.metrics, run.dir / "saturation.png", f"{run.dir.name}: gate saturation")
    return run.finish({"stopped": stopped, "ended_by": schedule.ended_by, "epochs": len(schedule.history), **result})


def gathered(run: Run, hidden) -> list[list[torch.Tensor]]:
    """The hidden state of the global batch (the ranks' columns joined), as ``last.pt`` keeps it."""
    return [[run.world.gather_rows(h, 1), run.world.gather_rows(c, 1)] for h, c in hidden]


def restart_from_best(model: AWDLSTM, best_path: Path, train_cfg: DictConfig) -> torch.optim.Optimizer:
    """AWD-LSTM's finetune: ``model`` takes the best weights, with a fresh ASGD."""
    model.load_state_dict(load_checkpoint(best_path, map_location=next(model.parameters()).device)["model"])
    return make_optimizer("asgd", model.parameters(), train_cfg)


def check_splits(corpus: Corpus, cfg: DictConfig) -> None:
    """Valid and test must fill two rows of their evaluation batches: found now, not after an epoch."""
    for split, batch_size, key in (("valid", cfg.train.eval_batch_size, "train.eval_batch_size"),
                                   ("test", cfg.eval.test_batch_size, "eval.test_batch_size")):
        tokens = corpus.split(split).numel()
        if tokens < 2 * batch_size + 1:
            raise ValueError(f"the {split} split of data={cfg.data.name} has {tokens} tokens; evaluating it "
                             f"with {key}={batch_size} needs at least {2 * batch_size + 1}")


def final_evaluation(cfg: DictConfig, best_path: Path, corpus: Corpus) -> dict:
    """Valid and test perplexity of the best weights, and with the cache pointer if enabled."""
    model, _, _ = load_model(best_path, cfg.device)
    eval_cfg = cfg.eval
    cache = OmegaConf.to_container(eval_cfg.cache, resolve=True) if eval_cfg.cache.enabled else None
    return evaluate(model, corpus.valid, corpus.test, eval_cfg.test_batch_size, cfg.train.bptt, cache)
