"""TensorBoard events next to metrics.jsonl: the scalars, the gate histograms and the hparams of a
run, read back with TensorBoard's own reader; a resumed run hides the steps it replays."""

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from g2lstm.mt.train import train as train_mt
from g2lstm.train import MetricsLog, tensorboard

COMMON = ["model.cell=g2lstm", "eval.beam=1", "train.max_epochs=2", "train.log_every=1", "train.saturation_every=4"]


def _events(run_dir):
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events


def test_every_metrics_line_and_gate_probe_is_an_event(tiny_mt_config, tmp_path):
    result = train_mt(tiny_mt_config(*COMMON), tmp_path / "run")
    events = _events(tmp_path / "run")
    records = MetricsLog(tmp_path / "run" / "metrics.jsonl").read()
    train = [r for r in records if r.get("split") == "train"]
    assert [e.step for e in events.Scalars("train/loss")] == [r["step"] for r in train] == list(range(1, result["steps"] + 1))
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([r["loss"] for r in train])
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([r["lr"] for r in train])
    assert all(e.value > 0 for e in events.Scalars("train/tokens_per_s"))
    valid = [r for r in records if r.get("split") == "valid"]
    assert [e.value for e in events.Scalars("valid/ppl")] == pytest.approx([r["ppl"] for r in valid])

    probes = [r for r in records if r.get("event") == "gates"]
    histograms = events.Histograms("gates/encoder.rnn/l0/forget")
    assert [h.step for h in histograms] == [r["step"] for r in probes] == list(range(0, result["steps"] + 1, 4))
    for h, probe in zip(histograms, probes):
        below, above = probe["layers"]["encoder.rnn/l0"]["forget"]
        counts = h.histogram_value.bucket
        assert len(counts) == 10 and sum(counts) == h.histogram_value.num > 0
        assert counts[0] / h.histogram_value.num == pytest.approx(below)  # the < 0.1 bin is the share below 0.1

    # the hparams of the run: its config and final results, for comparing the runs of a sweep
    hparams = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "hparams"))
    hparams.Reload()
    assert hparams.Scalars("final/bleu")[0].value == pytest.approx(result["bleu"])
    plugin = hparams.PluginTagToContent("hparams")
    assert b"model.cell" in b"".join(plugin.values())


def test_a_resumed_run_hides_the_events_of_the_steps_it_replays(tiny_mt_config, tmp_path):
    straight = train_mt(tiny_mt_config(*COMMON, "train.max_steps=9"), tmp_path / "straight")
    train_mt(tiny_mt_config(*COMMON, "train.max_steps=5", "train.checkpoint_every=3"), tmp_path / "resumed")
    # as after a kill inside the save at step 5: only last.prev.pt (step 3) is left, so steps 4-5
    # are replayed while their events are already written
    (tmp_path / "resumed" / "last.pt").unlink()
    resumed = train_mt(tiny_mt_config(*COMMON, "train.max_steps=9", "train.checkpoint_every=3"), tmp_path / "resumed")
    assert resumed["steps"] == straight["steps"] == 9
    a, b = _events(tmp_path / "straight"), _events(tmp_path / "resumed")
    assert [e.step for e in b.Scalars("train/loss")] == list(range(1, 10))
    assert [e.value for e in b.Scalars("train/loss")] == pytest.approx([e.value for e in a.Scalars("train/loss")])


def test_tensorboard_off_or_required(tiny_mt_config, tmp_path, monkeypatch):
    train_mt(tiny_mt_config(*COMMON, "train.max_steps=2", "train.tensorboard=false"), tmp_path / "off")
    assert not (tmp_path / "off" / "tensorboard").exists()
    monkeypatch.setattr(tensorboard, "available", lambda: False)
    with pytest.raises(ValueError, match=r"train.tensorboard=true needs the tensorboard package: pip install"):
        train_mt(tiny_mt_config(*COMMON, "train.max_steps=2", "train.tensorboard=true"), tmp_path / "required")
    train_mt(tiny_mt_config(*COMMON, "train.max_steps=2"), tmp_path / "auto")  # null: none where it is missing
    assert not (tmp_path / "auto" / "tensorboard").exists()
