"""The run lifecycle (g2lstm.runtime.Run) as every trainer uses it."""

import json

import pytest
import torch
from torch import nn

from g2lstm import runtime
from g2lstm.train import DivergedError, DivergenceGuard
from g2lstm.mt.train import train as train_mt

CFG = {"seed": 3, "threads": None, "data": {"name": "toy"}, "model": {"size": 4},
       "train": {"max_steps": 5, "max_minutes": None, "resume": True}}


def _files(folder):
    """Every file under ``folder`` (TensorBoard events included), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_steps(run, model, optimizer, until):
    while not run.budget_reached() and run.step < until:
        optimizer.zero_grad()
        model(torch.randn(2, 4)).pow(2).sum().backward()
        optimizer.step()
        run.step += 1
        run.metrics.write(step=run.step, loss=1.0)
        run.save(model, optimizer, {"note": run.step})


def test_a_run_saves_resumes_with_its_rng_and_budget(tmp_path):
    run = runtime.Run(CFG, "toy", tmp_path)
    run.start()
    model = nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert run.restore(model, optimizer) is None and not run.resumed
    _run_steps(run, model, optimizer, until=3)
    after_three = torch.rand(1)  # the RNG as it is after step 3
    run.metrics.write(step=4, loss=9.0)  # written after the checkpoint: replayed on resume

    again = runtime.Run(CFG, "toy", tmp_path)
    again.start()
    fresh = nn.Linear(4, 4)
    opt = torch.optim.SGD(fresh.parameters(), lr=0.1)
    assert again.restore(fresh, opt) == {"note": 3} and again.step == 3
    assert torch.equal(torch.rand(1), after_three)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert [r["step"] for r in again.metrics.read()] == [1, 2, 3]  # the log is cut back to the checkpoint
    _run_steps(again, fresh, opt, until=10)
    assert again.step == 5 and again.budget_reached() == "max_steps"  # the step budget counts across resumes
    ckpt = runtime.load_checkpoint(tmp_path / "last.pt")
    assert ckpt["task"] == "toy" and ckpt["config"] == CFG and ckpt["run"]["step"] == 5


def test_a_changed_config_or_another_task_is_refused_before_anything_is_written(tmp_path):
    run = runtime.Run(CFG, "toy", tmp_path)
    run.start()
    model = nn.Linear(4, 4)
    run.save(model, torch.optim.SGD(model.parameters(), lr=0.1), {})
    (tmp_path / "last.pt.abc.tmp").write_bytes(b"")  # what a kill during a save leaves
    before = _files(tmp_path)
    changed = dict(CFG, model={"size": 8}, data={"name": "other"})
    with pytest.raises(ValueError, match=r"the config changed:\n  data.name: 'toy' in the checkpoint, 'other' now\n"
                                         r"  model.size: 4 in the checkpoint, 8 now"):
        runtime.Run(changed, "toy", tmp_path)
    with pytest.raises(ValueError, match="is a checkpoint of task 'toy', this trainer is 'lm'"):
        runtime.Run(CFG, "lm", tmp_path)
    assert _files(tmp_path) == before
    runtime.Run(dict(CFG, train=dict(CFG["train"], max_steps=9)), "toy", tmp_path).start()  # train settings may change
    assert not list(tmp_path.glob("*.tmp"))  # leftovers of a killed save are removed


def test_mt_resume_refuses_another_model_and_a_finished_run_is_left_alone(tiny_mt_config, tmp_path):
    run_dir = tmp_path / "run"
    first = train_mt(tiny_mt_config("train.max_epochs=1", "model.cell=lstm", "eval.beam=1"), run_dir)
    assert json.loads((run_dir / "results.json").read_text())["bleu"] == first["bleu"]
    before = _files(run_dir)
    again = train_mt(tiny_mt_config("train.max_epochs=1", "model.cell=lstm", "eval.beam=1"), run_dir)
    assert again["bleu"] == first["bleu"] and _files(run_dir) == before  # nothing retrained or rewritten
    with pytest.raises(ValueError, match=r"model.cell: 'lstm' in the checkpoint, 'g2lstm' now"):
        train_mt(tiny_mt_config("train.max_epochs=1", "model.cell=g2lstm", "eval.beam=1"), run_dir)
    assert _files(run_dir) == before


@pytest.mark.slow
def test_mt_metrics_have_no_replayed_steps_after_a_staged_resume(tiny_mt_config, tmp_path):
    overrides = ["train.max_epochs=2", "model.cell=g2lstm", "eval.beam=1", "train.log_every=1",
                 "train.checkpoint_every=3"]
    run_dir = tmp_path / "run"
    staged = train_mt(tiny_mt_config(*overrides, "train.max_steps=4"), run_dir)
    assert staged["stopped"] == "max_steps" and staged["steps"] == 4
    assert not (run_dir / "results.json").exists()
    done = train_mt(tiny_mt_config(*overrides), run_dir)
    steps = [r["step"] for r in runtime.MetricsLog(run_dir / "metrics.jsonl").read() if r.get("split") == "train"]
    assert steps == list(range(1, done["steps"] + 1))


# ----------------------------------------------------------------------------- divergence and resume


def test_divergence_guard_stops_before_the_step_and_keeps_the_checkpoints_before_it(tmp_path):
    cfg = dict(CFG, train=dict(CFG["train"], max_steps=None, divergence_factor=4.0))
    run = runtime.Run(cfg, "toy", tmp_path)
    run.start()
    model = nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(22):
        run.guard.check_loss(1.0 + 0.01 * step, run.step)
        run.step += 1
        run.save(model, optimizer, {})
    run.guard.check_loss(3.0, run.step)  # 3x the running average: allowed at factor 4
    with pytest.raises(runtime.DivergedError, match=r"loss 9 is more than train.divergence_factor=4.0 times its "
                                                    r"running average 1.\d+ at step 22; the step was not applied"):
        run.guard.check_loss(9.0, run.step)
    with pytest.raises(runtime.DivergedError, match=r"gradient norm became nan at step 22.*Kept: .*last.pt \(step 22\), "
                                                    r".*last.prev.pt \(step 21\)"):
        run.guard.check_grad_norm(torch.tensor(float("nan")), run.step)
    with pytest.raises(runtime.NonFiniteLossError, match="loss became inf"):  # DivergedError is one
        run.guard.check_loss(float("inf"), run.step)
    assert runtime.exp_or_inf(1e6) == float("inf") and runtime.exp_or_inf(0.0) == 1.0


def test_divergence_guard_lets_a_converged_model_have_a_hard_batch(tmp_path):
    """A training loss of 0.013 that jumps to 0.18 on one batch (a converged transliterator, step
    4839) is noise: 14x the average, but far below any diverged loss. A jump to 1.5 is refused."""
    guard = DivergenceGuard(10.0, (), loss_average=0.0133)
    guard.check_loss(0.1821, step=4839)
    assert 0.0133 < guard.loss_average < 0.0173  # counted into the average
    with pytest.raises(DivergedError, match=r"loss 1.5 is more than train.divergence_factor=10.0"):
        guard.check_loss(1.5, step=4840)


def test_mt_training_that_diverges_stops_with_finite_kept_weights(tiny_mt_config, tmp_path):
    with pytest.raises(runtime.DivergedError, match="the step was not applied"):
        train_mt(tiny_mt_config("train.lr=1e6", "train.warmup_steps=1", "train.checkpoint_every=1",
                                "train.max_epochs=30", "model.cell=g2lstm"), tmp_path / "run")
    kept = runtime.load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.isfinite(t).all() for t in kept["model"].values())
    assert not (tmp_path / "run" / "results.json").exists()


def test_empty_validation_split_is_refused_at_start(tiny_mt_config, mt_corpus, tmp_path):
    (mt_corpus / "valid.de").write_text("")
    (mt_corpus / "valid.en").write_text("")
    with pytest.raises(ValueError, match=r"the valid split \(data.splits.valid='valid', data.name=folder, data.path=.*corpus\) has no sentence pairs"):
        train_mt(tiny_mt_config("model.cell=lstm"), tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resuming_a_run_folder_takes_its_saved_config(tiny_mt_config, tmp_path):
    """`train_mt.py hydra.run.dir=<run>` with no overrides resumes a run trained with overrides."""
    run_dir = tmp_path / "run"
    trained_with = ["model.cell=g2lstm", "model.tau=0.5", "train.max_steps=3", "eval.beam=1"]
    train_mt(tiny_mt_config(*trained_with), run_dir, overrides=trained_with)
    # the config a plain `hydra.run.dir=<run>` composes: the defaults (cell lstm, tau 0.9)
    go_on = ["train.max_steps=null", "train.max_epochs=1"]
    resumed = train_mt(tiny_mt_config(*go_on), run_dir, overrides=go_on)
    assert resumed["cell"] == "g2lstm" and resumed["steps"] > 3
    saved = runtime.load_checkpoint(run_dir / "best.pt")["config"]
    assert saved["model"]["tau"] == 0.5 and saved["train"]["max_epochs"] == 1 and saved["train"]["max_steps"] is None
    assert saved["eval"]["beam"] == 1  # kept from the first command
    with pytest.raises(ValueError, match=r"model.tau: 0.5 in the checkpoint, 0.9 now"):
        train_mt(tiny_mt_config("model.tau=0.9"), run_dir, overrides=["model.tau=0.9"])


def test_init_from_starts_a_fresh_run_from_another_runs_weights_and_checks_task_and_data(tmp_path):
    first = runtime.Run(CFG, "toy", tmp_path / "first")
    first.start()
    model = nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    first.restore(model, optimizer)
    _run_steps(first, model, optimizer, until=2)
    first.save_best(model)
    trained = {k: v.clone() for k, v in model.state_dict().items()}

    finetune_cfg = dict(CFG, train=dict(CFG["train"], init_from=str(tmp_path / "first" / "best.pt")))
    finetune = runtime.Run(finetune_cfg, "toy", tmp_path / "finetune")
    finetune.start()
    fresh = nn.Linear(4, 4)
    assert not torch.equal(fresh.weight, trained["weight"])
    assert finetune.restore(fresh, torch.optim.SGD(fresh.parameters(), lr=0.1)) is None and finetune.step == 0
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in trained.items())

    with pytest.raises(ValueError, match=r"train.init_from=.*task 'toy', this trainer is 'lm'"):
        runtime.Run(finetune_cfg, "lm", tmp_path / "other_task").restore(nn.Linear(4, 4))
    other_data = dict(finetune_cfg, data={"name": "other"})
    with pytest.raises(ValueError, match=r"other data.*\n  data.name: 'toy' in the checkpoint, 'other' now"):
        runtime.Run(other_data, "toy", tmp_path / "other_data").restore(nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"do not fit this model"):
        runtime.Run(finetune_cfg, "toy", tmp_path / "other_model").restore(nn.Linear(4, 5))


def test_init_from_given_to_a_folder_that_resumes_is_refused_not_ignored(tmp_path):
    run = runtime.Run(CFG, "toy", tmp_path)
    run.start()
    model = nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run.restore(model, optimizer)
    _run_steps(run, model, optimizer, until=2)
    with_init = dict(CFG, train=dict(CFG["train"], init_from=str(tmp_path / "other.pt")))
    with pytest.raises(ValueError, match=r"config changed:\n  train.init_from: None in the checkpoint, '.*other.pt' now"):
        runtime.Run(with_init, "toy", tmp_path)
