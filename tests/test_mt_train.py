"""Training end to end on a tiny corpus: configs compose, checkpoints load, resume is exact."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from g2lstm.cli import translate_file as translate_main
from g2lstm.config import CONF_ROOT
from g2lstm.mt.evaluate import bleu_of
from g2lstm.mt.train import load_model, train
from g2lstm.runtime import NonFiniteLossError, load_checkpoint


CONF = str(CONF_ROOT / "mt")


@pytest.mark.parametrize("experiment", ["multi30k_cpu", "multi30k_gpu", "iwslt14_paper"])
def test_experiment_configs_compose(experiment, tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"])
    assert cfg.model.cell in ("lstm", "sharpened", "g2lstm")
    assert cfg.data.splits.test and cfg.train.max_tokens > 0


def test_resume_is_exact_and_the_checkpoint_translates(tiny_mt_config, mt_pairs, tmp_path):
    """Two epochs in one go equal one epoch, a stop, and a resumed second epoch, bit for bit."""
    straight = train(tiny_mt_config("train.max_epochs=2", "model.cell=g2lstm"), tmp_path / "a")
    first = train(tiny_mt_config("train.max_epochs=1", "model.cell=g2lstm"), tmp_path / "b")
    assert first["epochs"] == 1
    resumed = train(tiny_mt_config("train.max_epochs=2", "model.cell=g2lstm"), tmp_path / "b")
    assert resumed["steps"] == straight["steps"] > first["steps"]
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["trainer"]["best"] == b["trainer"]["best"]
    assert straight["bleu"] == resumed["bleu"]
    assert "nrefs:1" in straight["bleu_signature"] and Path(straight["run_dir"], "test.hyp").is_file()

    # the best checkpoint alone (weights_only) translates: tokenizer and config travel inside
    model, tokenizers, cfg = load_model(straight["checkpoint"])
    assert cfg["model"]["cell"] == "g2lstm" and not model.training
    again = bleu_of(model, tokenizers, mt_pairs[3:], beam=2)
    assert again["bleu"] == pytest.approx(straight["bleu"])

    # the translate command: same output as training's test decoding, empty lines kept in place
    source = tmp_path / "in.de"
    source.write_text("".join(s + "\n" for s, _ in mt_pairs[3:]) + "\n", encoding="utf-8")
    translate_main([straight["checkpoint"], "--input", str(source), "--output", str(tmp_path / "out.en"), "--beam", "2"])
    out = (tmp_path / "out.en").read_text(encoding="utf-8").split("\n")
    assert out[:-2] == Path(straight["run_dir"], "test.hyp").read_text(encoding="utf-8").split("\n")[:-1]
    assert out[-2:] == ["", ""]  # the empty source line, then the final newline


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_mt_config, tmp_path, monkeypatch):
    real = torch.nn.functional.cross_entropy
    calls = {"train": 0}

    def poisoned(*args, label_smoothing=0.0, **kw):
        loss = real(*args, label_smoothing=label_smoothing, **kw)
        if label_smoothing > 0:  # only the training loss is smoothed
            calls["train"] += 1
            if calls["train"] == 4:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 3"):
        train(tiny_mt_config("train.eval_every=2", "train.label_smoothing=0.1", "model.cell=lstm"), tmp_path / "nan")
    kept = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert kept["run"]["step"] == 2
    assert all(torch.isfinite(t).all() for t in kept["model"].values())
