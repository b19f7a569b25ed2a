"""experiments/interpret.py: one report for two models of one task, every view written."""

import json
import sys
from pathlib import Path

import pytest

from g2lstm.lm.train import train as train_lm
from test_lm_train import tiny_config, tiny_corpus  # noqa: F401  (fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import interpret  # noqa: E402


@pytest.fixture(scope="module")
def lm_runs(tiny_corpus, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("interpret_runs")
    for cell in ("lstm", "g2lstm"):
        train_lm(tiny_config(tiny_corpus, "train.max_steps=6", f"model.cell={cell}", "eval.cache.enabled=false"),
                 root / cell)
    return root


def test_report_on_two_lm_models(lm_runs, tmp_path):
    out = tmp_path / "report"
    interpret.main([f"checkpoints=[{lm_runs}/lstm/last.pt,{lm_runs}/g2lstm/last.pt]", f"out_dir={out}",
                    "max_texts=6", "attribution.n_steps=20", "attribution.views=2"])
    report = (out / "report.md").read_text()
    numbers = json.loads((out / "report.json").read_text())
    assert "| top1_share_mean |" in report and "lstm | g2lstm" in report
    for name in ("lstm", "g2lstm"):
        summary = numbers["attribution"]["summary"][name]
        assert summary["texts"] == 6 and summary["abs_delta_max"] < 1e-4
        assert 0 < summary["top1_share_mean"] <= 1
    for view in ("attributions.png", "attributions.html"):
        assert (out / view).stat().st_size > 1000 and f"({view})" in report


def test_report_refuses_models_of_different_names(lm_runs, tmp_path):
    with pytest.raises(ValueError, match="distinct label per checkpoint"):
        interpret.main([f"checkpoints=[{lm_runs}/lstm/last.pt,{lm_runs}/lstm/last.pt]", f"out_dir={tmp_path}"])
