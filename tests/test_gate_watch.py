"""Gate saturation watched during training, and step schedules of the G2 options."""

import pytest
import torch

import g2lstm
from g2lstm import runtime
from g2lstm.lm.evaluate import gate_data
from g2lstm.lm.train import train as train_lm
from g2lstm.mt.train import train as train_mt
from g2lstm.train import GateSchedules


@pytest.mark.slow
def test_lm_logs_saturation_without_changing_training(tiny_lm_config, traced_gates, figures, tmp_path):
    common = ["train.epochs=1", "eval.cache.enabled=false", "train.saturation_tokens=200"]
    watched = train_lm(tiny_lm_config(*common, "train.saturation_every=4"), tmp_path / "watched")  # 148 steps
    plain = train_lm(tiny_lm_config(*common, "train.saturation_every=null"), tmp_path / "plain")
    a = runtime.load_checkpoint(tmp_path / "watched" / "last.pt")["model"]
    b = runtime.load_checkpoint(tmp_path / "plain" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the probe draws no random numbers
    assert watched["test_ppl"] == plain["test_ppl"]

    lines = [r for r in runtime.MetricsLog(tmp_path / "watched" / "metrics.jsonl").read() if r.get("event") == "gates"]
    assert [r["step"] for r in lines] == list(range(0, watched["steps"] + 1, 4))
    assert set(lines[0]["layers"]) == {"rnns.0/l0", "rnns.1/l0"}
    # the last line (step 148, the final weights) recomputed from the gates the trace records on the
    # probe: the first train.saturation_tokens validation tokens in eval batches
    assert lines[-1]["step"] == watched["steps"]
    loaded = g2lstm.load(tmp_path / "watched" / "last.pt")
    values = traced_gates(loaded.model, *gate_data(loaded.corpus.valid, 200, 4, 12, "cpu"))
    assert set(values) == set(lines[-1]["layers"])
    for key, per_gate in values.items():
        for gate, gate_values in per_gate.items():
            below, above = lines[-1]["layers"][key][gate]
            assert below == pytest.approx((gate_values < 0.1).double().mean().item(), abs=1e-5), (key, gate)
            assert above == pytest.approx((gate_values > 0.9).double().mean().item(), abs=1e-5), (key, gate)
    figures.check_saturation(tmp_path / "watched" / "saturation.png", lines)
    assert not (tmp_path / "plain" / "saturation.png").exists()


@pytest.mark.slow
def test_schedules_move_tau_and_noise_p_and_resume_exactly(tiny_mt_config, tmp_path):
    overrides = ["model.cell=g2lstm", "model.tau=1.0", "model.noise_p=0.2", "train.max_epochs=2", "eval.beam=1",
                 "train.schedules.tau={end: 0.1, steps: 10, shape: exponential}",
                 "train.schedules.noise_p={end: 1.0, steps: 4, shape: linear}"]
    straight = train_mt(tiny_mt_config(*overrides), tmp_path / "a")
    train_mt(tiny_mt_config(*overrides, "train.max_steps=3"), tmp_path / "b")
    resumed = train_mt(tiny_mt_config(*overrides), tmp_path / "b")
    assert straight["steps"] == resumed["steps"] > 10 and straight["bleu"] == resumed["bleu"]
    a = runtime.load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = runtime.load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the run moves the options of every recurrent layer
    from g2lstm.mt.model import ModelConfig, Seq2Seq

    model = Seq2Seq(ModelConfig(cell="g2lstm", tau=1.0, noise_p=0.2), src_vocab=10, tgt_vocab=10)
    saved = runtime.load_checkpoint(tmp_path / "a" / "last.pt")["config"]
    assert GateSchedules(saved["train"], saved["model"]).apply(model, 5) == pytest.approx({"tau": 0.1 ** 0.5, "noise_p": 1.0})
    assert model.encoder.rnn.tau == model.decoder.rnn.tau == pytest.approx(0.1 ** 0.5)
    assert model.decoder.rnn.noise_p == 1.0


def test_schedule_values_and_errors():
    assert runtime.schedule_value({"end": 0.0, "steps": 4, "shape": "linear"}, 1.0, 1) == 0.75
    assert runtime.schedule_value({"end": 0.01, "steps": 4, "shape": "exponential"}, 1.0, 2) == pytest.approx(0.1)
    assert runtime.schedule_value({"end": 0.5, "steps": 4, "shape": "linear"}, 1.0, 99) == 0.5  # held after
    with pytest.raises(ValueError, match=r"train.schedules.lr: only \('tau', 'noise_p'\)"):
        runtime.check_schedules({"lr": {"end": 1, "steps": 1, "shape": "linear"}}, {"tau": 1.0})
    with pytest.raises(ValueError, match="train.schedules.tau must be"):
        runtime.check_schedules({"tau": {"end": 0.1, "steps": 0, "shape": "linear"}}, {"tau": 1.0})
    with pytest.raises(ValueError, match="schedule tau for model.cell=g2lstm only"):
        runtime.check_schedules({"tau": {"end": 0.1, "steps": 5, "shape": "linear"}}, {"tau": 1.0, "cell": "sharpened"})
