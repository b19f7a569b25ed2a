"""Train an attention encoder-decoder: ``train(cfg) -> {'run_dir', 'checkpoint', 'bleu', ...}``.

The loop, top to bottom: load the corpus and filter the training pairs; train sentencepiece on the
training split (or take it from the checkpoint when resuming); build the model; then for each
epoch, token-count batches over length-sorted buckets (shuffled by a seed derived from the epoch,
so a resumed run sees the same batches), label-smoothed cross-entropy, Adam with linear warm-up,
gradient clipping, and every ``eval_every`` steps a validation that decays the learning rate on a
plateau, saves ``last.pt`` (and ``best.pt`` on improvement) atomically and stops early when the
validation score stops improving. At the end ``best.pt`` is scored on the test split with beam
search (sacreBLEU, chrF, tokenized BLEU) and everything lands in ``results.json``.

``cfg`` is the Hydra config of ``conf/mt`` (a DictConfig or a plain dict with the same keys).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.mt import filter_pairs, load_corpus
from ..runtime import MetricsLog, check_finite, load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from .batching import token_batches, training_batch
from .evaluate import bleu_of
from .model import ModelConfig, Seq2Seq
from .tokenizer import PAD, Tokenizers, train_tokenizers


def to_dict(cfg) -> dict:
    """A plain, resolved dict of a DictConfig (or a copy of a dict)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return json.loads(json.dumps(cfg))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Seq2Seq, Tokenizers, dict]:
    """A trained model (in eval mode), its tokenizers and its run config, from a checkpoint."""
    state = load_checkpoint(path, map_location=device)
    model = Seq2Seq(ModelConfig(**state["model_config"])).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, Tokenizers.from_state(state["tokenizers"]), state["config"]


def build_data(cfg: dict) -> dict[str, list[tuple[str, str]]]:
    """{'train', 'valid', 'test'} pairs; length and ratio filters apply to the training split only."""
    d = cfg["data"]
    corpus = load_corpus(d["name"], d["src"], d["tgt"], d.get("path"), **d.get("options", {}))
    names = d["splits"]
    for role, split in names.items():
        if split not in corpus:
            raise KeyError(f"data.splits.{role} is {split!r}, but the corpus has splits {sorted(corpus)}")
    f = d["filter"]
    return {
        "train": filter_pairs(corpus[names["train"]], f["min_len"], f["max_len"], f["max_ratio"]),
        "valid": corpus[names["valid"]],
        "test": corpus[names["test"]],
    }


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


def train(cfg) -> dict[str, Any]:
    cfg = to_dict(cfg)
    t, ev = cfg["train"], cfg["eval"]
    run_dir = Path(cfg.get("run_dir") or f"runs/mt/{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    torch.set_num_threads(int(cfg.get("threads", 1)))
    device = torch.device(cfg.get("device", "cpu"))
    seed_everything(cfg["seed"])
    log = MetricsLog(run_dir / "metrics.jsonl")

    data = build_data(cfg)
    resume = cfg.get("resume", True) and last_path.exists()
    state = load_checkpoint(last_path) if resume else None
    if state is not None:
        tokenizers = Tokenizers.from_state(state["tokenizers"])
    else:
        tk = cfg["data"]["tokenizer"]
        tokenizers = train_tokenizers(data["train"], tk["joint"], tk["vocab_size"], tk["model_type"], tk["character_coverage"])
    src_ids = tokenizers.src.encode([s for s, _ in data["train"]])
    tgt_ids = tokenizers.tgt.encode([t_ for _, t_ in data["train"]])
    val_src = tokenizers.src.encode([s for s, _ in data["valid"]])
    val_tgt = tokenizers.tgt.encode([t_ for _, t_ in data["valid"]])

    model_cfg = ModelConfig(src_vocab=tokenizers.src.vocab_size, tgt_vocab=tokenizers.tgt.vocab_size, **cfg["model"])
    model = Seq2Seq(model_cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=t["lr"], betas=tuple(t.get("betas", (0.9, 0.999))))
    # trainer state: everything besides weights and optimizer that an exact resume needs
    ts = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "lr_scale": 1.0, "best": None, "bad_evals": 0,
          "evals_since_decay": 0, "elapsed": 0.0, "stopped": None}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ts = state["trainer"]
        ts["stopped"] = None  # a resumed run continues; its limits (maybe raised) are checked again
        set_rng_state(state["rng"])
        print(f"resumed from {last_path} at step {ts['step']} (epoch {ts['epoch']}, batch {ts['batch_in_epoch']})")
    print(f"{cfg['model']['cell']}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(data['train'])} training pairs, vocab {model_cfg.src_vocab}/{model_cfg.tgt_vocab}, run_dir {run_dir}")

    def checkpoint(path: Path) -> None:
        save_checkpoint({
            "model": model.state_dict(), "model_config": model.config_dict(), "tokenizers": tokenizers.state(),
            "config": cfg, "optimizer": optimizer.state_dict(), "trainer": dict(ts), "rng": rng_state(),
        }, path)

    def validate() -> bool:
        """Score on the validation split, decay / stop on a plateau; True means stop training."""
        loss = validation_loss(model, val_src, val_tgt, t["max_tokens"], device)
        record = {"split": "valid", "step": ts["step"], "epoch": ts["epoch"], "loss": loss, "ppl": math.exp(min(loss, 50))}
        if t["select_by"] == "bleu":
            record["bleu"] = bleu_of(model, tokenizers, data["valid"], beam=t["valid_beam"], max_tokens=ev["max_tokens"])["bleu"]
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
        log.write(**record)
        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if improved:
            checkpoint(best_path)
        ts["stopped"] = stop
        return stop is not None

    max_steps = t.get("max_steps") or float("inf")
    max_seconds = (t.get("max_minutes") or float("inf")) * 60
    start = time.time() - ts["elapsed"]
    model.train()
    while ts["stopped"] is None and ts["epoch"] < t["max_epochs"]:
        batches = token_batches([len(s) + 1 for s in src_ids], [len(x) + 1 for x in tgt_ids], t["max_tokens"],
                                seed=cfg["seed"] * 100_003 + ts["epoch"])
        bar = tqdm(total=len(batches), initial=ts["batch_in_epoch"], desc=f"epoch {ts['epoch'] + 1}", disable=None, leave=False)
        while ts["batch_in_epoch"] < len(batches):
            batch = batches[ts["batch_in_epoch"]]
            b = {k: v.to(device) for k, v in training_batch([src_ids[i] for i in batch], [tgt_ids[i] for i in batch]).items()}
            lr = t["lr"] * ts["lr_scale"] * min(1.0, (ts["step"] + 1) / max(t["warmup_steps"], 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = model(b["src"], b["src_lengths"], b["tgt_in"])
            n_tokens = int((b["tgt_out"] != PAD).sum())
            loss = F.cross_entropy(logits.flatten(0, 1).float(), b["tgt_out"].flatten(), ignore_index=PAD,
                                   label_smoothing=t["label_smoothing"], reduction="sum") / n_tokens
            check_finite(loss.detach(), ts["step"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t["clip_norm"])
            optimizer.step()
            ts["step"] += 1
            ts["batch_in_epoch"] += 1
            ts["elapsed"] = time.time() - start
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
            if ts["step"] % t["log_every"] == 0:
                log.write(split="train", step=ts["step"], epoch=ts["epoch"], loss=loss.item(), lr=lr,
                          grad_norm=float(grad_norm), tokens=n_tokens, elapsed=ts["elapsed"])
            if ts["batch_in_epoch"] == len(batches):
                ts["epoch"], ts["batch_in_epoch"] = ts["epoch"] + 1, 0
            out_of_budget = ts["step"] >= max_steps or ts["elapsed"] >= max_seconds
            periodic = t["eval_every"] and ts["step"] % t["eval_every"] == 0
            if periodic or ts["batch_in_epoch"] == 0 or out_of_budget:
                stop = validate()
                if out_of_budget and not stop:
                    ts["stopped"] = f"budget reached (step {ts['step']}, {ts['elapsed'] / 60:.1f} min)"
                checkpoint(last_path)
                if ts["stopped"]:
                    break
            if ts["batch_in_epoch"] == 0:
                break
        bar.close()
    if ts["stopped"] is None:
        ts["stopped"] = f"max_epochs={t['max_epochs']} reached"
        checkpoint(last_path)
    print(f"stopped: {ts['stopped']}")

    # final test score of the best validation checkpoint
    model.load_state_dict(load_checkpoint(best_path)["model"])
    test = bleu_of(model, tokenizers, data["test"], beam=ev["beam"], length_penalty=ev["length_penalty"],
                   max_tokens=ev["max_tokens"], tokenized=ev["tokenized_bleu"], return_hypotheses=True)
    (run_dir / "test.hyp").write_text("\n".join(test.pop("hypotheses")) + "\n", encoding="utf-8")
    result = {
        "run_dir": str(run_dir), "checkpoint": str(best_path), "cell": cfg["model"]["cell"],
        "test_split": cfg["data"]["splits"]["test"], "steps": ts["step"], "epochs": ts["epoch"],
        "train_minutes": ts["elapsed"] / 60, "stopped": ts["stopped"], "best_valid": ts["best"], **test,
    }
    (run_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"test {result['test_split']}: BLEU {test['bleu']:.2f} chrF {test['chrf']:.2f} tokBLEU {test['tok_bleu']:.2f}")
    print(test["bleu_signature"])
    return result
