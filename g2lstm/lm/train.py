"""Train an AWD-LSTM language model (LSTM, sharpened sigmoid or G2-LSTM) from a Hydra config.

The recipe of Merity et al. 2018: variable-length BPTT with the learning rate scaled by the
length, AR/TAR on the last layer, gradient clipping, SGD switched to averaged SGD by the
non-monotone trigger (NT-ASGD), then an optional finetune stage restarted from the best weights
with a fresh ASGD. The run folder is :class:`g2lstm.runtime.Run`'s: ``last.pt`` holds, besides
what every checkpoint holds, the vocabulary, the position in the epoch, the ASGD switch and
averages and the hidden state; ``best.pt`` the best weights on valid (averaged ones once ASGD
runs) with the vocabulary.

Python use (e.g. from another experiment)::

    from g2lstm.lm.train import lm_config, train
    result = train(lm_config(["experiment=brown_cpu", "model.cell=lstm"]), run_dir="runs/x")
    result["test_ppl"]
"""

from __future__ import annotations

import math
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

from g2lstm import config as checks, runtime, shard
from g2lstm.config import compose_config
from g2lstm.data.lm import Corpus, LMDataConfig, Vocab, batchify, load_corpus
from g2lstm.lm.evaluate import LMEvalConfig, evaluate, gate_data, perplexity
from g2lstm.lm.model import AWDLSTM, LMModelConfig, detach_hidden

TASK = "lm"


# ----------------------------------------------------------------------------- config schemas


@dataclass
class LMTrainConfig(runtime.RunConfig):
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
    saturation_tokens: int = 2000

    def __post_init__(self):
        super().__post_init__()
        checks.positive(self, "batch_size", "eval_batch_size", "bptt", "lr", "epochs", "nonmono")
        checks.at_least(self, 0, "clip", "wdecay", "alpha", "beta", "finetune_epochs")
        checks.positive(self, "saturation_tokens")


@dataclass
class LMConfig(runtime.TaskConfig):
    """The schema of ``g2lstm/conf/lm/config.yaml``."""

    threads: Optional[int] = None  # null keeps torch's default
    data: LMDataConfig = MISSING
    model: LMModelConfig = MISSING
    train: LMTrainConfig = MISSING
    eval: LMEvalConfig = MISSING


checks.store(LMTrainConfig, "nt_asgd_schema", group="train")
checks.store(LMConfig, "lm_schema")


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


def nt_trigger(history: list[float], val_loss: float, nonmono: int) -> bool:
    """Non-monotone trigger: valid loss is worse than the best of all but the last ``nonmono`` epochs."""
    if nonmono < 1:
        raise ValueError(f"train.nonmono must be >= 1; got {nonmono}")
    return len(history) > nonmono and val_loss > min(history[:-nonmono])


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

    Returns ``{'run_dir', 'steps', 'stopped', 'train_minutes', 'valid_ppl', 'test_ppl',
    'cache': {...} | None}`` where ``stopped`` is ``'done'``, ``'max_steps'`` (no evaluation: run the
    folder again to go on) or ``'max_minutes'``.
    """
    checks.validate(cfg, LMConfig)  # before anything is read or written
    run_dir = run_dir if run_dir is not None else Path("runs/lm") / time.strftime("%Y-%m-%d_%H-%M-%S")
    # the saved hidden state and position in the epoch are laid out for one batch size
    run = runtime.Run(cfg, TASK, run_dir, overrides, fixed_keys=("train.batch_size",))
    if run.finished:
        return run.result()
    cfg = OmegaConf.create(run.cfg)
    tc = cfg.train
    device = torch.device(cfg.device)
    corpus = load_data(cfg.data, vocab=Vocab(run.saved["vocab"]) if run.resumed else None)
    check_splits(corpus, cfg)
    model = build_model(cfg.model, len(corpus.vocab)).to(device)
    # train.batch_size is the global batch: rank r of W trains on columns [r N/W, (r+1) N/W) of the
    # (T, N) stream, contiguous parts of the text, disjoint across ranks
    offset, rows = run.world.even_rows(tc.batch_size, "train.batch_size")
    columns = slice(offset, offset + rows)
    train_data = batchify(corpus.train, tc.batch_size)[:, columns].to(device)
    print(f"run {run.dir}: {cfg.model.cell}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"vocab {len(corpus.vocab)}, train {corpus.train.numel():,} tokens", flush=True)

    state = {"stage": "train", "epoch": 1, "position": 0, "history": [], "best_val": math.inf,
             "optimizer_kind": "sgd"}
    optimizer = make_optimizer("sgd", model.parameters(), tc)
    hidden = model.init_hidden(rows)
    if run.resumed:
        state = run.saved["trainer"]
        optimizer = make_optimizer(state["optimizer_kind"], model.parameters(), tc)
        run.restore(model, optimizer)
        # the checkpoint holds the global batch's hidden state: resumes at any world size
        hidden = [(h[:, columns].to(device), c[:, columns].to(device)) for h, c in run.saved["hidden"]]
    else:
        run.restore(model)  # a fresh run: the weights of train.init_from, when given

    def save_checkpoint():
        run.save(model, optimizer, state, vocab=corpus.vocab.tokens,
                 hidden=[[run.gather_rows(h, 1), run.gather_rows(c, 1)] for h, c in hidden])

    def end_of_epoch():
        """Validate (with averaged weights under ASGD), keep the best, apply NT-ASGD / finetune stop."""
        nonlocal optimizer
        with averaged_weights(model, optimizer):
            val = run.on_main(lambda: perplexity(model, corpus.valid, tc.eval_batch_size, tc.bptt))
            if val["loss"] < state["best_val"]:
                state["best_val"] = val["loss"]
                run.save_best(model, vocab=corpus.vocab.tokens, epoch=state["epoch"], stage=state["stage"],
                              valid_loss=val["loss"])
        triggered = nt_trigger(state["history"], val["loss"], tc.nonmono)
        state["history"].append(val["loss"])
        run.metrics.write(event="epoch", stage=state["stage"], epoch=state["epoch"], step=run.step,
                          valid_loss=val["loss"], valid_ppl=val["ppl"], optimizer=state["optimizer_kind"])
        tqdm.write(f"{state['stage']} epoch {state['epoch']}: valid ppl {val['ppl']:.2f} "
                   f"({state['optimizer_kind']}, best {runtime.exp_or_inf(state['best_val']):.2f})")
        state["epoch"] += 1
        state["position"] = 0
        if state["stage"] == "train":
            if triggered and state["optimizer_kind"] == "sgd" and tc.asgd:
                tqdm.write("non-monotone trigger: switching to ASGD")
                state["optimizer_kind"] = "asgd"
                optimizer = make_optimizer("asgd", model.parameters(), tc)
            if state["epoch"] > tc.epochs:
                start_finetune() if tc.finetune_epochs > 0 else end_stage()
        elif state["stage"] == "finetune" and (triggered or state["epoch"] > tc.finetune_epochs):
            end_stage()

    def end_stage():
        state.update(done_stage=state["stage"], stage="done")  # done_stage: where a raised budget goes on

    def start_finetune():
        """AWD-LSTM's finetune: restart from the best weights with a fresh ASGD."""
        nonlocal optimizer
        model.load_state_dict(runtime.load_checkpoint(run.best_path, map_location=device)["model"])
        state.update(stage="finetune", epoch=1, position=0, history=[state["best_val"]], optimizer_kind="asgd")
        optimizer = make_optimizer("asgd", model.parameters(), tc)

    def go_on():
        """A finished run resumed with a raised ``train.epochs`` or ``train.finetune_epochs`` (the only
        finished runs Run lets through are those with another train config) goes on where it ended."""
        ended = state.get("done_stage") or ("finetune" if run.saved["config"]["train"].get("finetune_epochs")
                                            else "train")  # (checkpoints from before done_stage)
        if ended == "train" and state["epoch"] <= tc.epochs:
            state["stage"] = "train"
        elif ended == "train" and tc.finetune_epochs > 0:
            start_finetune()
        elif ended == "finetune" and state["epoch"] <= tc.finetune_epochs:
            state["stage"] = "finetune"

    if state["stage"] == "done":
        go_on()

    # ------------------------------------------------------------------ training loop
    probe = gate_data(corpus.valid, tc.saturation_tokens, tc.eval_batch_size, tc.bptt, device)
    gates = None if run.resumed else run.watch_gates(model, *probe)  # step 0: the initial gates
    stopped = "done"
    bar = None
    while state["stage"] != "done":
        if state["position"] == 0 or bar is None:
            bar = run.progress((train_data.size(0) - 1) * tc.batch_size, state["position"] * tc.batch_size,
                               f"{state['stage']} epoch {state['epoch']}", unit="tok")
        if state["position"] >= train_data.size(0) - 2:
            bar.close()
            hidden = model.init_hidden(rows)
            end_of_epoch()
            save_checkpoint()
            continue
        stopped = run.budget_reached() or "done"
        if stopped == "max_steps":
            break
        if stopped == "max_minutes":
            # Out of wall-clock time: validate the partial epoch so best.pt reflects it, then stop.
            end_of_epoch()
            end_stage()
            break

        tick = time.time()
        model.train()
        run.apply_schedules(model)
        seq_len = min(sample_seq_len(tc.bptt), train_data.size(0) - 1 - state["position"])
        i = state["position"]
        inputs, targets = train_data[i:i + seq_len], train_data[i + 1:i + 1 + seq_len]
        hidden = detach_hidden(hidden)
        with shard.batch_shard(offset, rows, tc.batch_size):  # gate noise and masks of these columns
            logits, hidden, raw_outputs, dropped_outputs = model(inputs, hidden)
        raw_loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        loss = raw_loss
        if tc.alpha:  # AR: small activations of the (dropped) last-layer output
            loss = loss + tc.alpha * dropped_outputs[-1].pow(2).mean()
        if tc.beta:  # TAR: slowly changing last-layer hidden states
            loss = loss + tc.beta * (raw_outputs[-1][1:] - raw_outputs[-1][:-1]).pow(2).mean()
        # Every rank has as many tokens (and rows): the mean over the global batch is the sum of
        # the ranks' means divided by the world size.
        run.gradients(model, optimizer, loss / run.world.size, tc.clip)
        raw_loss = run.all_sum(raw_loss.detach() / run.world.size)
        set_step_lr(optimizer, tc.lr * seq_len / tc.bptt)  # shorter segments get a smaller step
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = tc.lr

        run.step += 1
        state["position"] += seq_len
        tokens_per_s = seq_len * tc.batch_size / max(time.time() - tick, 1e-9)  # of all ranks
        bar.update(seq_len * tc.batch_size)
        gates = run.watch_gates(model, *probe) or gates
        bar.set_postfix(loss=f"{raw_loss.item():.3f}", ppl=f"{math.exp(min(raw_loss.item(), 50)):.1f}",
                        tok_s=f"{tokens_per_s:.0f}", **(gates or {}), refresh=False)
        if run.step % tc.log_every == 0:
            run.metrics.write(event="train", stage=state["stage"], epoch=state["epoch"], step=run.step,
                              loss=raw_loss.item(), ppl=math.exp(min(raw_loss.item(), 50)), tokens_per_s=tokens_per_s)
        if run.step % tc.checkpoint_every == 0:
            save_checkpoint()
    if bar is not None:
        bar.close()
    save_checkpoint()
    if stopped == "max_steps":
        return {"run_dir": str(run.dir), "steps": run.step, "stopped": stopped, "train_minutes": run.elapsed / 60}
    return run.finish({"stopped": stopped, **run.on_main(lambda: final_evaluation(cfg, run.best_path, corpus))})


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
    ev = cfg.eval
    cache = OmegaConf.to_container(ev.cache, resolve=True) if ev.cache.enabled else None
    return evaluate(model, corpus.valid, corpus.test, ev.test_batch_size, cfg.train.bptt, cache)
