"""kill -9 at several points, then resume: the same final weights and a metrics log without
repeated steps, for every trainer."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from g2lstm import runtime
from g2lstm.config import compose_config
from g2lstm.tasks import trainer

REPO = Path(__file__).resolve().parents[1]
RUNNER = """
import json, sys
from g2lstm.config import compose_config
from g2lstm.tasks import trainer
task, run_dir, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
trainer(task)(compose_config(task, overrides), run_dir)
"""


def _start(task, run_dir, overrides):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", RUNNER, task, str(run_dir), json.dumps(overrides)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _train_steps(run_dir: Path) -> list[int]:
    records = runtime.MetricsLog(run_dir / "metrics.jsonl").read()
    return [r["step"] for r in records if r.get("event") == "train" or r.get("split") == "train"]


def _kill_when(proc, run_dir: Path, steps: int, timeout: float = 120.0) -> int:
    """kill -9 once the log shows ``steps`` training lines; returns how many it shows after the kill.

    Fails if the process ends by itself first or never gets there: then no kill was tested."""
    start = time.time()
    logged = 0
    while proc.poll() is None and time.time() - start < timeout:
        try:
            logged = len(_train_steps(run_dir))
        except (json.JSONDecodeError, FileNotFoundError):  # a line being written
            pass
        if logged >= steps:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before it logged {steps} steps: " + \
        proc.stderr.read()[-2000:]
    assert logged >= steps, f"the run logged {logged} steps in {timeout} s, not {steps}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return len(_train_steps(run_dir))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["lm", "mt"])
def test_kill_nine_then_resume_ends_like_a_straight_run(task, lm_corpus, mt_corpus, tmp_path):
    if task == "lm":
        overrides = ["data=text", f"data.path={lm_corpus}", "data.vocab_size=300", "model.emsize=8",
                     "model.nhid=12", "train.batch_size=4", "train.eval_batch_size=4", "train.bptt=12",
                     "train.max_minutes=null", "train.epochs=1", "train.log_every=1", "train.checkpoint_every=5",
                     "eval.test_batch_size=4", "eval.cache.enabled=false", "threads=1"]
        kill_points = (3, 14)
    else:
        overrides = ["data=iwslt14", f"data.path={mt_corpus}", "data.tokenizer.vocab_size=60", "model.embed_dim=16",
                     "model.hidden_dim=16", "train.max_tokens=60", "train.warmup_steps=3", "train.log_every=1",
                     "train.checkpoint_every=4", "train.max_epochs=3", "eval.beam=1", "model.cell=g2lstm"]
        kill_points = (3, 10)
    trainer(task)(compose_config(task, overrides), tmp_path / "straight")  # in this process
    total = len(_train_steps(tmp_path / "straight"))

    crashed = tmp_path / "crashed"
    for steps in kill_points:  # each restart resumes, then is killed further on
        logged = _kill_when(_start(task, crashed, overrides), crashed, steps)
        assert steps <= logged < total  # killed mid-way, not after the run had finished
        assert not (crashed / "results.json").exists()
    last = _start(task, crashed, overrides)
    assert last.wait() == 0, last.stderr.read()[-2000:]

    a = runtime.load_checkpoint(tmp_path / "straight" / "last.pt")
    b = runtime.load_checkpoint(crashed / "last.pt")
    assert a["run"]["step"] == b["run"]["step"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    steps = _train_steps(crashed)
    assert steps == _train_steps(tmp_path / "straight") == list(range(1, len(steps) + 1))
    assert not list(crashed.glob("*.tmp"))
