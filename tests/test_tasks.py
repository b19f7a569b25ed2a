"""g2lstm.load and the model protocol on checkpoints of every task."""

import pytest
import torch
from torch import nn

import g2lstm
from g2lstm.lm.train import train as train_lm
from g2lstm.mt.train import train as train_mt
from g2lstm.protocol import InspectableModel


@pytest.fixture(scope="module")
def lm_run(tiny_lm_config, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lm_run")
    train_lm(tiny_lm_config("train.epochs=1", "eval.cache.enabled=false"), run_dir)
    return run_dir


@pytest.fixture
def mt_run(tiny_mt_config, tmp_path):
    train_mt(tiny_mt_config("train.max_epochs=1", "model.cell=g2lstm", "eval.beam=1"), tmp_path / "mt")
    return tmp_path / "mt"


def _hooked_embeddings(model: nn.Module):
    """Record what every nn.Embedding returns during a forward (forward hooks must fire)."""
    seen = []
    handles = [m.register_forward_hook(lambda m, args, out: seen.append(out))
               for m in model.modules() if isinstance(m, nn.Embedding)]
    return seen, handles


def test_lm_checkpoint_loads_encodes_and_runs_through_the_seams(lm_run):
    loaded = g2lstm.load(lm_run / "best.pt")
    assert loaded.task == "lm" and not loaded.model.training and isinstance(loaded.model, InspectableModel)
    assert loaded.config["model"]["cell"] == "g2lstm" and len(loaded.vocab) == loaded.model.encoder.num_embeddings
    batch = loaded.encode(["In the beginning God created", "the heavens"])
    words, targets = batch.inputs["words"], batch.targets
    assert words.shape == (6, 2) and words[0].tolist() == [loaded.vocab.eos_id] * 2
    assert batch.tokens["tokens"][1] == ["<eos>", "the", "heavens"]
    assert targets[:3, 1].tolist() == [loaded.vocab.index["the"], loaded.vocab.index["heavens"], loaded.vocab.eos_id]
    assert (targets[3:, 1] == -100).all()  # padding is not scored

    seen, handles = _hooked_embeddings(loaded.model)
    with torch.no_grad():
        embedded = loaded.model.embed(batch)
        logits = loaded.model.output_layer(loaded.model.extract_features(batch, embedded))
        direct, _, _, _ = loaded.model(words, loaded.model.init_hidden(2))
    for h in handles:
        h.remove()
    assert len(seen) == 2 and torch.equal(seen[0], embedded["tokens"])  # the embedding module was called
    assert torch.equal(logits, direct)
    assert set(loaded.model.recurrent_layers()) == {"rnns.0", "rnns.1"}
    assert loaded.evaluate() == pytest.approx(loaded.evaluate(loaded.model))  # test ppl of the run's data


def test_lm_embedding_dropout_keeps_awd_lstm_values_and_gradients():
    """The embedding module is called (hooks fire) with AWD-LSTM's row-masked matrix, bit for bit."""
    from g2lstm.lm.model import embedding_dropout

    embed = nn.Embedding(20, 5)
    words = torch.randint(0, 20, (7, 3))
    seen, handles = _hooked_embeddings(embed)
    torch.manual_seed(3)
    ours = embedding_dropout(embed, words, 0.4)
    assert len(seen) == 1 and torch.equal(seen[0], ours)
    ours.pow(2).sum().backward()
    grad_ours, embed.weight.grad = embed.weight.grad.clone(), None
    torch.manual_seed(3)
    mask = embed.weight.new_empty(20, 1).bernoulli_(0.6) / 0.6
    theirs = nn.functional.embedding(words, embed.weight * mask)
    theirs.pow(2).sum().backward()
    assert torch.equal(ours, theirs) and torch.equal(grad_ours, embed.weight.grad)


def test_mt_checkpoint_loads_encodes_and_runs_through_the_seams(mt_run, mt_pairs):
    loaded = g2lstm.load(mt_run / "best.pt")
    assert loaded.task == "mt" and not loaded.model.training and isinstance(loaded.model, InspectableModel)
    batch = loaded.encode(mt_pairs[:2])
    src, tgt_in = batch.inputs["src"], batch.inputs["tgt_in"]
    assert [len(t) for t in batch.tokens["source"]] == batch.inputs["src_lengths"].tolist()
    assert batch.tokens["source"][0][-1] == "</s>" and batch.tokens["target"][0][0] == "<s>"
    assert len(batch.tokens["target"][1]) == int((batch.targets[1] != 0).sum())  # aligned to the scored steps

    seen, handles = _hooked_embeddings(loaded.model)
    with torch.no_grad():
        embedded = loaded.model.embed(batch)
        logits = loaded.model.output_layer(loaded.model.extract_features(batch, embedded))
        direct = loaded.model(src, batch.inputs["src_lengths"], tgt_in)
    for h in handles:
        h.remove()
    assert torch.equal(seen[0], embedded["source"]) and torch.equal(seen[1], embedded["target"])
    assert torch.equal(logits, direct)
    assert set(loaded.model.recurrent_layers()) == {"encoder.rnn", "decoder.rnn"}
    sources_only = loaded.encode([s for s, _ in mt_pairs[:2]])
    assert set(sources_only.inputs) == {"src", "src_lengths"} and sources_only.targets is None
    assert torch.equal(sources_only.inputs["src"], src)


def test_load_names_the_task_and_refuses_a_mismatch(lm_run, mt_run):
    assert g2lstm.load(mt_run / "last.pt").task == "mt"
    with pytest.raises(ValueError, match=r"best.pt is a checkpoint of task 'lm', expected a 'mt' checkpoint"):
        g2lstm.load(lm_run / "best.pt", task="mt")
    from g2lstm.mt.train import load_model

    with pytest.raises(ValueError, match="checkpoint of task 'lm'"):
        load_model(lm_run / "best.pt")
