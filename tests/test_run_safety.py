"""No command destroys a run (issue: reliability, round two): nothing is written before everything
is checked, train.resume=false keeps the run it replaces, a folder that is not a run is refused,
a second process is locked out, resume and init_from compare the data itself, and the entry points
end on the package's errors with one line."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from g2lstm.lm.train import lm_config, train as train_lm
from g2lstm.mt.train import train as train_mt
from g2lstm.train.folder import LOCK

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


MT = ("model.cell=g2lstm", "eval.beam=1", "train.max_epochs=1")


def test_a_command_that_fails_on_its_data_writes_nothing(tiny_mt_config, mt_corpus, tmp_path):
    run_dir = tmp_path / "run"
    train_mt(tiny_mt_config(*MT, "train.max_steps=3"), run_dir)
    before = snapshot(run_dir)
    (mt_corpus / "test.de").write_text("")  # the data breaks after the config check passed
    (mt_corpus / "test.en").write_text("")
    with pytest.raises(ValueError, match="the test split"):
        train_mt(tiny_mt_config(*MT), run_dir)
    assert snapshot(run_dir) == before  # config.yaml, metrics.jsonl and the lock untouched
    with pytest.raises(ValueError, match="the test split"):
        train_mt(tiny_mt_config(*MT), tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_resume_false_keeps_the_run_it_replaces_in_previous(tiny_mt_config, mt_corpus, tmp_path):
    run_dir = tmp_path / "run"
    first = train_mt(tiny_mt_config(*MT), run_dir)
    before = snapshot(run_dir)
    second = train_mt(tiny_mt_config(*MT, "train.resume=false"), run_dir)
    assert second["bleu"] == first["bleu"]  # the same seed trains the same run afresh
    kept = {name[len("previous-1/"):]: data for name, data in snapshot(run_dir).items() if name.startswith("previous-1/")}
    assert kept == before  # every file of the first run, byte for byte
    train_mt(tiny_mt_config(*MT, "train.resume=false"), run_dir)
    assert (run_dir / "previous-2" / "last.pt").is_file() and (run_dir / "previous-1" / "last.pt").is_file()


@pytest.mark.parametrize("name, content", [("notes.txt", "mine"), ("config.yaml", "database: prod\n")])
def test_a_folder_that_is_not_a_run_is_refused_and_left_as_it_is(tiny_mt_config, tmp_path, name, content):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_text(content)
    with pytest.raises(ValueError, match="not a g2lstm run"):
        train_mt(tiny_mt_config(*MT), folder)
    assert snapshot(folder) == {name: content.encode()}
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        train_mt(tiny_mt_config(*MT), tmp_path / "file")


def test_a_second_process_is_locked_out_and_a_stale_lock_is_taken_over(tiny_mt_config, mt_corpus, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / LOCK).write_text(f"{other.pid} {socket.gethostname()}\n")
        with pytest.raises(ValueError, match=rf"another process \(pid {other.pid}\) is training in"):
            train_mt(tiny_mt_config(*MT, "train.max_steps=2"), run_dir)
        assert not (run_dir / "last.pt").exists()
    finally:
        other.kill()
        other.wait()
    # the process is gone: its lock is stale and taken over; the run releases it when it stops
    assert train_mt(tiny_mt_config(*MT, "train.max_steps=2"), run_dir)["steps"] == 2
    assert not (run_dir / LOCK).exists()
    (run_dir / LOCK).write_text("1 elsewhere.example\n")  # another host: its process cannot be checked here
    with pytest.raises(ValueError, match="another process"):
        train_mt(tiny_mt_config(*MT, "train.max_steps=4"), run_dir)


def test_resume_refuses_a_run_whose_data_changed(lm_corpus, lm_overrides, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (corpus / name).write_bytes((lm_corpus / name).read_bytes())
    train_lm(lm_config([*lm_overrides, f"data.path={corpus}", "train.max_steps=3"]), tmp_path / "run")
    before = snapshot(tmp_path / "run")
    (corpus / "train.txt").write_text("wolf " * 500 + "\n")  # the same file name, other text
    with pytest.raises(ValueError, match=r"the data changed since it was written:\n  the train split: "):
        train_lm(lm_config([*lm_overrides, f"data.path={corpus}"]), tmp_path / "run")
    assert snapshot(tmp_path / "run") == before


def test_init_from_refuses_a_checkpoint_of_another_vocabulary(tiny_mt_config, mt_corpus, tmp_path):
    train_mt(tiny_mt_config(*MT, "train.max_steps=2"), tmp_path / "base")
    (mt_corpus / "train.de").write_text("".join(f"wort{i} ist hier .\n" for i in range(40)))
    (mt_corpus / "train.en").write_text("".join(f"word{i} is here .\n" for i in range(40)))
    with pytest.raises(ValueError, match=r"train.init_from=.*its vocabulary is not this run's:\n  the vocabulary: "):
        train_mt(tiny_mt_config(*MT, f"train.init_from={tmp_path / 'base' / 'last.pt'}"), tmp_path / "finetune")


def test_an_entry_point_ends_on_a_data_error_with_one_line_and_no_folder(tiny_mt_config, mt_corpus, tmp_path):
    (mt_corpus / "valid.de").write_text("")
    (mt_corpus / "valid.en").write_text("")
    run_dir = tmp_path / "runs" / "day" / "run"
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "train_mt.py"), "data=iwslt14",
                           f"data.path={mt_corpus}", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the valid split (data.splits.valid='valid'") and "has no sentence pairs" in last
    assert not (tmp_path / "runs" / "day").exists()  # Hydra's folder (and its date folder) removed
