"""g2lstm.recipe_report: the convergence rows held against the task's LSTM, part by part."""

import json

import pytest

from g2lstm import recipe_report


def _row(config, seed, quality, share, round_clip, svd, task="lm", higher_is_better=False):
    return {"task": task, "config": config, "run": f"{config}_s{seed}", "cell": "g2lstm", "seed": seed,
            "converged": True, "steps": 100, "init_from": None, "quality": quality, "quality_name": "test perplexity",
            "higher_is_better": higher_is_better,
            "binary": {"l0": {"input": share, "forget": share}, "l1": {"input": 0.9, "forget": 0.9}},
            "compression": {"round_clip": round_clip, "svd": svd, "hard_gates": 0.0}, "bytes": {}}


LSTM = [_row("lstm", 1, 100.0, 0.2, 3.0, 9.0), _row("lstm", 2, 102.0, 0.2, 3.0, 9.0)]  # mean 101, losses 3 / 9


@pytest.mark.parametrize("runs, missing", [
    ([_row("r", 1, 102.0, 0.6, 1.0, 3.0), _row("r", 2, 103.0, 0.7, 0.5, 2.0)], None),  # +1.49%: met
    ([_row("r", 1, 103.0, 0.6, 1.0, 3.0), _row("r", 2, 104.0, 0.7, 0.5, 2.0)], "quality"),  # +2.48%
    ([_row("r", 1, 102.0, 0.6, 1.0, 3.0), _row("r", 2, 103.0, 0.49, 0.5, 2.0)], "binary"),  # one seed short
    ([_row("r", 1, 102.0, 0.6, 1.5, 3.0), _row("r", 2, 103.0, 0.7, 0.6, 2.0)], "robustness"),  # 1.05 > 3 / 3
    ([_row("r", 1, 102.0, 0.6, -5.0, 3.0), _row("r", 2, 103.0, 0.7, -5.0, 3.0)], None),  # a gain is no loss
    ([_row("r", 1, 102.0, 0.6, 1.0, 3.0)], "2 seeds"),
])
def test_each_part_of_the_target(runs, missing):
    entry = next(e for e in recipe_report.summarize(LSTM + runs) if e["config"] == "r")
    assert entry["meets_target"] is (missing is None)
    table = recipe_report.markdown(recipe_report.summarize(LSTM + runs))
    line = next(x for x in table.splitlines() if x.startswith("| r |"))
    assert line.endswith("| **yes** |") if missing is None else f"no: {missing}" in line


def test_cost_is_percent_perplexity_for_the_lm_and_points_otherwise():
    assert recipe_report.relative_cost("lm", 102.0, 100.0) == pytest.approx(2.0)
    assert recipe_report.relative_cost("mt", 30.5, 31.0) == pytest.approx(0.5)  # BLEU lost
    assert recipe_report.relative_cost("translit", 98.0, 97.0) == pytest.approx(-1.0)  # better
    higher = [_row("lstm", 1, 31.0, 0.2, -2.0, -3.0, task="mt", higher_is_better=True),
              _row("r", 1, 30.6, 0.6, -0.5, 1.0, task="mt", higher_is_better=True)]
    entry = next(e for e in recipe_report.summarize(higher) if e["config"] == "r")
    assert entry["cost"] == pytest.approx(0.4) and entry["within_tolerance"]
    assert entry["losses"]["round_clip"] == 0.5 and entry["losses"]["svd"] == 0.0  # BLEU gained: no loss
    assert entry["baseline_losses"] == {"round_clip": 2.0, "svd": 3.0, "hard_gates": 0.0}


def test_command_line_writes_the_tables_and_the_plot(tmp_path, figures):
    rows = LSTM + [_row("r", 1, 102.0, 0.6, 1.0, 3.0), _row("r", 2, 103.0, 0.7, 0.5, 2.0)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    summary = recipe_report.main([str(tmp_path / "rows.json"), "--markdown", str(tmp_path / "t.md"),
                                  "--plot", str(tmp_path / "p.png")])
    assert [e["config"] for e in summary] == ["lstm", "r"]
    assert "| lstm | 1,2 | yes | 101.00 ± 1.41 | +0.00 | 0.200 |" in (tmp_path / "t.md").read_text()
    ax = figures[tmp_path / "p.png"].axes[0]
    colours = [tuple(c.get_facecolor()[0][:3]) for c in ax.collections if len(c.get_offsets())][:2]
    assert len(set(colours)) == 2  # one colour per configuration
    figures.check_png(tmp_path / "p.png", colours=colours)
    points = [[tuple(xy) for xy in c.get_offsets()] for c in ax.collections if len(c.get_offsets())]
    # one point per run, at (smallest binary share, % perplexity over the LSTM's mean of 101)
    assert points[0] == [(0.2, pytest.approx(-100 / 101)), (0.2, pytest.approx(100 / 101))]
    assert points[1] == [(0.6, pytest.approx(100 / 101)), (0.7, pytest.approx(200 / 101))]
