"""The AWD-LSTM model, the cache pointer, and the trainer's runs: resume, checkpoints, NaN stop."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from g2lstm import runtime
from g2lstm.lm.evaluate import SplitOutputs, cache_pointer_loss
from g2lstm.lm.model import AWDLSTM
from g2lstm.report import collect, markdown
from g2lstm.lm.nt_asgd import NTASGD, START_FINETUNE, SWITCH_TO_ASGD, nt_trigger
from g2lstm.lm.train import load_model, train

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("cell, gates", [("lstm", "sigmoid"), ("sharpened", "sharpened"), ("g2lstm", "gumbel")])
def test_model_switch_builds_g2lstm_layers_with_weight_drop(cell, gates):
    model = AWDLSTM(50, emsize=8, nhid=12, nlayers=3, cell=cell, wdrop=0.5)
    assert [r.gates for r in model.rnns] == [gates] * 3
    assert [r.weight_drop for r in model.rnns] == [0.5] * 3
    assert [(r.input_size, r.hidden_size) for r in model.rnns] == [(8, 12), (12, 12), (12, 8)]
    assert model.decoder.weight is model.encoder.weight  # tied
    words = torch.randint(0, 50, (7, 3))
    logits, hidden, raw, dropped = model(words, model.init_hidden(3))
    assert logits.shape == (7, 3, 50)
    assert raw[-1].shape == dropped[-1].shape == (7, 3, 8)
    assert hidden[0][0].shape == (1, 3, 12)
    # Weight drop acts in training only: two training passes differ, eval passes agree.
    w_hh_before = model.rnns[0].weight_hh_l0.detach().clone()
    model.eval()
    a, b = model(words, model.init_hidden(3))[0], model(words, model.init_hidden(3))[0]
    assert torch.equal(a, b)
    model.train()
    assert not torch.equal(model(words, model.init_hidden(3))[0], model(words, model.init_hidden(3))[0])
    assert torch.equal(model.rnns[0].weight_hh_l0, w_hh_before)  # the mask never touches the parameter


def test_eval_gates_hard_reaches_every_layer_from_the_config():
    from g2lstm.lm.train import build_model, lm_config

    model = build_model(lm_config(["experiment=converge_bible", "model.eval_gates=hard"]).model, 30).eval()
    assert [r.eval_gates for r in model.rnns] == ["hard", "hard"]
    words = torch.randint(0, 30, (5, 2))
    _, _, raw, _ = model(words, model.init_hidden(2))
    soft = build_model(lm_config(["experiment=converge_bible"]).model, 30).eval()
    soft.load_state_dict(model.state_dict())
    assert not torch.allclose(soft(words, soft.init_hidden(2))[2][0], raw[0])  # hard gates change the output


def test_unknown_cell_kind_is_rejected():
    with pytest.raises(ValueError, match="model.cell must be one of .*got 'gru'"):
        AWDLSTM(10, cell="gru")


def test_nt_trigger_is_non_monotone():
    assert not nt_trigger([5.0, 4.0], 4.5, nonmono=2)  # too little history
    assert nt_trigger([5.0, 4.0, 3.9, 3.8], 4.5, nonmono=2)  # worse than the best before the last 2
    assert not nt_trigger([5.0, 4.0, 3.9, 3.8], 4.9, nonmono=3)  # 5.0 is the only older value


def test_patience_ends_the_training_stage_once_asgd_stops_improving():
    schedule = NTASGD()
    for loss in (5.0, 4.0, 3.0):  # SGD, improving
        schedule.improved(loss)
        assert schedule.end_epoch(loss, epochs=100, finetune_epochs=0, nonmono=2, asgd=True, patience=2) is None
    actions = []
    for loss in (3.5, 3.6, 3.7):  # 2 stale SGD epochs do not end it; the trigger fires on 3.7 (> 3.0)
        schedule.improved(loss)
        actions.append(schedule.end_epoch(loss, 100, 0, 2, True, patience=2))
    assert actions == [None, None, SWITCH_TO_ASGD] and schedule.stale == 0 and not schedule.done
    schedule.improved(2.9)
    schedule.end_epoch(2.9, 100, 0, 2, True, patience=2)
    assert schedule.stale == 0 and not schedule.done  # a better loss starts the count again
    for loss in (3.0, 3.1):
        schedule.improved(loss)
        schedule.end_epoch(loss, 100, 0, 2, True, patience=2)
    assert schedule.done and schedule.ended_by == "patience" and len(schedule.history) == 9
    assert schedule.extend(200, 0) is None and schedule.done  # converged: more epochs do not reopen it
    assert schedule.extend(200, 3) == START_FINETUNE  # a finetune may still follow


def test_min_delta_counts_a_tiny_gain_as_no_gain():
    schedule = NTASGD(optimizer_kind="asgd")
    for loss in (3.0, 2.9995, 2.999):  # better, but by less than 0.002 nats
        schedule.end_epoch(loss, epochs=100, finetune_epochs=0, nonmono=5, asgd=True, patience=2, min_delta=0.002)
    assert schedule.done and schedule.ended_by == "patience" and len(schedule.history) == 3
    strict = NTASGD(optimizer_kind="asgd")
    for loss in (3.0, 2.9995, 2.999):
        strict.end_epoch(loss, epochs=100, finetune_epochs=0, nonmono=5, asgd=True, patience=2)
    assert not strict.done and strict.stale == 0


def test_without_patience_the_stage_runs_its_epochs():
    schedule = NTASGD(optimizer_kind="asgd")
    for epoch in range(3):
        schedule.improved(5.0 + epoch)
        schedule.end_epoch(5.0 + epoch, epochs=3, finetune_epochs=0, nonmono=5, asgd=True)
    assert schedule.done and schedule.ended_by == "epochs" and schedule.stale == 2


# ----------------------------------------------------------------------------- cache pointer


def _naive_cache_loss(out, theta, lambdah, window):
    steps, batch = out.targets.shape
    total = 0.0
    for n in range(batch):
        for t in range(steps):
            p = out.target_logprob[t, n].double().exp()
            lo = max(0, t - window)
            if t > lo:
                scores = theta * out.hidden[lo:t, n] @ out.hidden[t, n]
                attention = torch.softmax(scores.double(), 0)
                p_cache = attention[out.targets[lo:t, n] == out.targets[t, n]].sum()
                p = (1 - lambdah) * p + lambdah * p_cache
            total -= math.log(p)
    return total / out.targets.numel()


def test_cache_pointer_matches_a_naive_loop_and_lambda_zero_is_the_model():
    torch.manual_seed(0)
    steps, batch, dim, vocab = 40, 3, 5, 6
    out = SplitOutputs(torch.randn(steps, batch, dim),
                       F.log_softmax(torch.randn(steps, batch, vocab), -1)[..., 0],
                       torch.randint(0, vocab, (steps, batch)))
    for window in (1, 7, 100):
        fast = cache_pointer_loss(out, theta=0.7, lambdah=0.3, window=window, chunk=16)
        assert fast == pytest.approx(_naive_cache_loss(out, 0.7, 0.3, window), rel=1e-6)
    plain = -out.target_logprob.double().mean().item()
    assert cache_pointer_loss(out, 1.0, 0.0, 10) == pytest.approx(plain, rel=1e-12)


def test_cache_pointer_helps_on_repeated_text():
    # Hidden states that identify the word: a repeated sequence is predicted well by the cache.
    words = torch.arange(8).repeat(5).unsqueeze(1)
    hidden = F.one_hot((words + 1) % 8, 8).float() * 5  # h_t points at the next word's key
    out = SplitOutputs(hidden, torch.full(words.shape, math.log(1 / 8)), (words + 1) % 8)
    assert cache_pointer_loss(out, 1.0, 0.5, window=20) < math.log(8) - 0.3


# ----------------------------------------------------------------------------- runs


def _same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("stage_overrides, stop_stage", [
    (["train.epochs=2"], "train"),  # stopped mid-way through the second SGD epoch
    (["train.epochs=1", "train.finetune_epochs=2"], "finetune"),  # stopped inside the ASGD finetune
])
@pytest.mark.slow
def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tiny_lm_config, tmp_path, stage_overrides, stop_stage):
    whole = train(tiny_lm_config(*stage_overrides), tmp_path / "whole")
    assert whole["stopped"] == "done"

    stop_at = int(whole["steps"] * 0.7)
    first = train(tiny_lm_config(*stage_overrides, f"train.max_steps={stop_at}"), tmp_path / "split")
    assert first["stopped"] == "max_steps" and first["steps"] == stop_at
    stopped = runtime.load_checkpoint(tmp_path / "split" / "last.pt")["trainer"]
    assert stopped["stage"] == stop_stage and stopped["epoch"] == 2 and stopped["position"] > 0
    resumed = train(tiny_lm_config(*stage_overrides), tmp_path / "split")
    assert resumed["steps"] == whole["steps"]

    a = runtime.load_checkpoint(tmp_path / "whole" / "last.pt")
    b = runtime.load_checkpoint(tmp_path / "split" / "last.pt")
    _same_weights(a["model"], b["model"])
    assert a["trainer"]["history"] == b["trainer"]["history"]
    assert resumed["test_ppl"] == whole["test_ppl"]
    assert resumed["cache"] == whole["cache"]


@pytest.mark.slow
def test_checkpoint_holds_what_resume_needs_and_loads_weights_only(tiny_lm_config, tmp_path):
    result = train(tiny_lm_config("train.epochs=1", "train.finetune_epochs=1", "train.nonmono=1"),
                   tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert set(ckpt) >= {"task", "model", "optimizer", "trainer", "run", "hidden", "rng", "vocab", "config"}
    assert ckpt["task"] == "lm" and ckpt["run"]["finished"]
    assert ckpt["trainer"]["optimizer_kind"] == "asgd"  # finetune runs averaged SGD
    assert any("ax" in s for s in ckpt["optimizer"]["state"].values())
    assert isinstance(ckpt["vocab"], list) and ckpt["vocab"][:2] == ["<eos>", "<unk>"]
    model, vocab, config = load_model(tmp_path / "run" / "best.pt")
    assert len(vocab) == model.encoder.num_embeddings and config["model"]["cell"] == "g2lstm"
    lines = runtime.MetricsLog(Path(result["run_dir"]) / "metrics.jsonl").read()
    assert [r["stage"] for r in lines if r["event"] == "epoch"] == ["train", "finetune"]
    assert lines[-1]["event"] == "final" and lines[-1]["test_ppl"] == result["test_ppl"]
    # learnt something: the untrained model (the same seed, no step) is near-uniform over the 300 words
    # (297 measured), 2 epochs bring the test perplexity to 55
    untrained = train(tiny_lm_config("train.max_minutes=1e-6", "eval.cache.enabled=false"), tmp_path / "untrained")
    assert untrained["steps"] == 0 and result["test_ppl"] < 0.5 * untrained["test_ppl"]
    rows = collect(tmp_path / "run")
    assert len(rows) == 1 and rows[0]["test_ppl"] == result["test_ppl"] and rows[0]["cell"] == "g2lstm"
    assert f"| g2lstm | 1 | {result['test_ppl']:.1f} |" in markdown(rows)


def test_resume_refuses_a_different_model(tiny_lm_config, tmp_path):
    train(tiny_lm_config("train.max_steps=3"), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=r"the config changed:\n  model.nhid: 12 in the checkpoint, 16 now"):
        train(tiny_lm_config("model.nhid=16"), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # refused before writing


def test_a_run_saved_before_a_key_existed_resumes_only_with_its_old_meaning():
    """model.train_gates came after runs were saved: a checkpoint without it resumes with 'soft'
    (what the code computed then) and is refused with 'hard'."""
    from g2lstm.config.resume import differences

    saved = {"cell": "g2lstm", "nhid": 12}
    assert differences(saved, {**saved, "train_gates": "soft"}, "model") == []
    assert differences(saved, {**saved, "train_gates": "hard"}, "model") == [
        "model.train_gates: None in the checkpoint, 'hard' now"]
    assert differences(saved, {**saved, "new_key": "x"}, "model") == ["model.new_key: None in the checkpoint, 'x' now"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_lm_config, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_cross_entropy = F.cross_entropy

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real_cross_entropy(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 10 else loss

    monkeypatch.setattr(F, "cross_entropy", poisoned)
    with pytest.raises(runtime.NonFiniteLossError, match="at step 9"):
        train(tiny_lm_config("train.epochs=1"), tmp_path)
    ckpt = runtime.load_checkpoint(tmp_path / "last.pt")
    assert ckpt["run"]["step"] == 7  # checkpoint_every=7: the last one before the NaN
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


@pytest.mark.slow
def test_main_job_entry_point_prints_perplexities_and_run_folder(lm_corpus, tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "train_lm.py"), "data=text", f"data.path={lm_corpus}",
         "data.vocab_size=300", "model.emsize=8", "model.nhid=8", "train.batch_size=4", "train.epochs=1",
         "eval.test_batch_size=4", "threads=1", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "results.json"} <= {p.name for p in run_dir.iterdir()}
    # the printed numbers are the run's own, its config the command line's
    result = json.loads((run_dir / "results.json").read_text())
    lines = proc.stdout.splitlines()
    assert f"valid perplexity {result['valid_ppl']:.2f}" in lines and f"test perplexity {result['test_ppl']:.2f}" in lines
    assert any(line.startswith(f"run folder: {run_dir} ") for line in lines)
    saved = runtime.load_checkpoint(run_dir / "last.pt")
    assert saved["run"]["finished"] and saved["run"]["step"] == result["steps"] > 0
    assert (saved["config"]["model"]["nhid"], saved["config"]["train"]["epochs"]) == (8, 1)


def test_time_budget_stops_validates_and_evaluates(tiny_lm_config, tmp_path):
    result = train(tiny_lm_config("train.max_minutes=1e-6", "eval.cache.enabled=false"), tmp_path)
    assert result["stopped"] == "max_minutes" and result["steps"] == 0
    assert (tmp_path / "best.pt").exists() and result["cache"] is None
    assert math.isfinite(result["test_ppl"])
    again = train(tiny_lm_config("train.max_minutes=1e-6", "eval.cache.enabled=false"), tmp_path)
    assert again["steps"] == 0 and again["test_ppl"] == result["test_ppl"]  # spent budget: only re-evaluates


@pytest.mark.slow
@pytest.mark.parametrize("more", ["train.epochs=2", "train.finetune_epochs=1"])
def test_a_finished_run_resumed_with_a_raised_budget_goes_on_like_a_straight_run(tiny_lm_config, tmp_path, more):
    straight = train(tiny_lm_config("train.epochs=2" if more == "train.epochs=2" else "train.epochs=1",
                                 more), tmp_path / "straight")
    first = train(tiny_lm_config("train.epochs=1"), tmp_path / "raised")
    assert first["steps"] < straight["steps"]
    raised = train(tiny_lm_config("train.epochs=1", more), tmp_path / "raised")
    assert raised["steps"] == straight["steps"]
    a = runtime.load_checkpoint(tmp_path / "straight" / "last.pt")
    b = runtime.load_checkpoint(tmp_path / "raised" / "last.pt")
    _same_weights(a["model"], b["model"])
    assert raised["test_ppl"] == straight["test_ppl"]
