"""Running a stopped or finished run's command again changes nothing, in every trainer: the same
files byte for byte, the same result, and (stopped) the same "stopped at step N"."""

import pytest

from g2lstm.classify.train import classify_config, train as train_classifier
from g2lstm.lm.train import train as train_lm
from g2lstm.mt.train import train as train_mt
from g2lstm.translit.train import train as train_translit, translit_config
from test_classify_train import TINY, needs_data
from test_translit_train import SMALL


def _files(folder):
    """Every file under ``folder`` (TensorBoard events included), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _twice(capsys, train, make_config, run_dir, steps):
    """Run ``make_config()`` in ``run_dir`` twice; the second run must change nothing."""
    first = train(make_config(), run_dir)
    before = _files(run_dir)
    capsys.readouterr()
    again = train(make_config(), run_dir)
    printed = capsys.readouterr().out
    assert _files(run_dir) == before
    # the same result; train_minutes counts this session's start-up too
    assert {k: v for k, v in again.items() if k != "train_minutes"} == {k: v for k, v in first.items() if k != "train_minutes"}
    if steps is not None:
        assert first["stopped"] == "max_steps" and first["steps"] == steps
        assert f"stopped at step {steps} (train.max_steps)" in printed
    else:
        assert "is a finished run" in printed
    return first


@pytest.mark.parametrize("steps", [7, None])
def test_lm_rerun_changes_nothing(tiny_lm_config, tmp_path, capsys, steps):
    budget = [f"train.max_steps={steps}"] if steps else []
    _twice(capsys, train_lm, lambda: tiny_lm_config("train.epochs=1", "eval.cache.enabled=false", *budget),
           tmp_path, steps)


@pytest.mark.parametrize("steps", [5, None])
def test_mt_rerun_changes_nothing(tiny_mt_config, tmp_path, capsys, steps):
    budget = [f"train.max_steps={steps}"] if steps else []
    _twice(capsys, train_mt, lambda: tiny_mt_config("train.max_epochs=1", "model.cell=g2lstm", "eval.beam=1",
                                                   "train.checkpoint_every=2", *budget), tmp_path / "run", steps)


@needs_data
@pytest.mark.parametrize("steps", [5, None])
def test_classifier_rerun_changes_nothing(tmp_path, capsys, steps):
    budget = [f"train.max_steps={steps}"] if steps else ["train.max_epochs=1", "train.batch_size=512"]
    _twice(capsys, train_classifier, lambda: classify_config([*TINY, "model.cell=g2lstm", "train.eval_every=3", *budget]),
           tmp_path, steps)


@pytest.mark.parametrize("steps", [4, None])
def test_transliterator_rerun_changes_nothing(tmp_path, capsys, steps):
    budget = [f"train.max_steps={steps}"] if steps else []
    _twice(capsys, train_translit, lambda: translit_config([*SMALL, "model.cell=g2lstm", "train.max_epochs=2",
                                                            "train.eval_every=3", *budget]), tmp_path, steps)
