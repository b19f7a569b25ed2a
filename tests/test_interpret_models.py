"""g2lstm.interpret on models of the package's tasks (LM, MT), built small and untrained."""

import numpy as np
import pytest
import torch

from g2lstm.data.lm import Vocab
from g2lstm.interpret import token_attributions
from g2lstm.interpret.phi import layer_phi
from g2lstm.interpret.states import collect_states
from g2lstm.lm.model import AWDLSTM
from g2lstm.lm.task import LanguageModelTask
from g2lstm.mt.model import ModelConfig, Seq2Seq
from g2lstm.mt.task import TranslationTask
from g2lstm.mt.tokenizer import train_tokenizers

LM_TEXTS = ["the dog runs .", "a cat sleeps", "the cat runs and the dog sleeps ."]


def tiny_lm(cell: str, **options) -> LanguageModelTask:
    torch.manual_seed(0)
    vocab = Vocab(["<eos>", "<unk>"] + "the a dog cat runs sleeps and .".split())
    model = AWDLSTM(len(vocab), emsize=8, nhid=12, nlayers=2, cell=cell, **options).double()
    for p in model.parameters():  # larger weights than the init, so that logits move
        p.data.mul_(3)
    return LanguageModelTask(model, vocab, {"data": {"source": "text", "lowercase": True}}, "lm.pt", "cpu")


@pytest.fixture(scope="module")
def tokenizers(mt_pairs):
    return train_tokenizers(mt_pairs, joint=True, vocab_size=60, model_type="word")


def tiny_mt(cell: str, tokenizers) -> TranslationTask:
    torch.manual_seed(0)
    size = tokenizers.src.vocab_size
    model = Seq2Seq(ModelConfig(cell=cell, embed_dim=8, hidden_dim=8), size, size).double()
    return TranslationTask(model, tokenizers, {}, "mt.pt", "cpu")


@pytest.mark.parametrize("cell", ["lstm", "g2lstm"])
def test_lm_attributions_are_complete_and_batch_independent(cell):
    loaded = tiny_lm(cell)
    together = token_attributions(loaded, LM_TEXTS, position=-2, batch_size=3, internal_batch_size=40)
    alone = [token_attributions(loaded, [t], position=-2)[0] for t in LM_TEXTS]
    for a, b, text in zip(together, alone, LM_TEXTS):
        assert a.tokens["tokens"] == ["<eos>"] + text.split()
        assert a.position == len(text.split()) - 1  # predicts the last word
        assert a.target_id == loaded.vocab.index[text.split()[-1]]
        assert abs(a.delta) < 1e-6 and abs(a.logit - a.baseline_logit) > 1e-3
        assert a.scores["tokens"][-1] == 0.0  # the last word is not read before it is predicted
        np.testing.assert_allclose(a.scores["tokens"].sum(), a.logit - a.baseline_logit, atol=1e-6)
        np.testing.assert_allclose(a.scores["tokens"], b.scores["tokens"], atol=1e-9)


def test_mt_attributes_source_and_target_prefix(tokenizers, mt_pairs):
    loaded = tiny_mt("g2lstm", tokenizers)
    pairs = mt_pairs[:3]
    results = token_attributions(loaded, pairs, position=2)
    batch = loaded.encode(pairs)
    for n, r in enumerate(results):
        assert r.tokens == {side: batch.tokens[side][n] for side in ("source", "target")}
        assert r.scores["source"].shape == (len(r.tokens["source"]),)
        assert np.all(r.scores["target"][3:] == 0.0)  # tokens after the step are not read
        assert r.target_id == int(batch.targets[n, 2])
        assert abs(r.delta) < 1e-6
        total = r.scores["source"].sum() + r.scores["target"].sum()
        np.testing.assert_allclose(total, r.logit - r.baseline_logit, atol=1e-6)
    assert np.abs(results[0].scores["source"]).sum() > 0


def test_hard_gate_models_are_refused():
    loaded = tiny_lm("g2lstm")
    for layer in loaded.model.recurrent_layers().values():
        layer.eval_gates = "hard"
    with pytest.raises(ValueError, match="eval_gates='hard'"):
        token_attributions(loaded, LM_TEXTS)


def test_position_outside_a_text_is_an_error():
    with pytest.raises(ValueError, match="position 9 is outside example 0's 5 output steps"):
        token_attributions(tiny_lm("lstm"), LM_TEXTS[:1], position=9)


def test_layer_features_are_the_traced_hidden_states(tokenizers, mt_pairs):
    """The per-word information's phi (module output hook for a module's last layer, trace for
    inner layers) gives every layer direction's h as recorded by collect_states."""
    torch.manual_seed(0)
    size = tokenizers.src.vocab_size
    mt = TranslationTask(Seq2Seq(ModelConfig(embed_dim=8, hidden_dim=8, encoder_layers=2), size, size).double(),
                         tokenizers, {}, "mt.pt", "cpu")
    for loaded, texts in ((tiny_lm("g2lstm"), LM_TEXTS), (mt, mt_pairs[:3])):
        batch = loaded.encode(texts)
        side = list(batch.tokens)[0]
        states = collect_states(loaded, texts)
        checked = 0
        for key, layer in states.items():
            if layer.side != side:
                continue
            phi, x = layer_phi(loaded.model, batch, side, layer)
            h = phi(torch.cat([x, x]))  # two copies of the batch, as word_information calls it
            for n, tokens in enumerate(batch.tokens[side]):
                for copy in (n, n + len(texts)):
                    np.testing.assert_allclose(h[copy, : len(tokens)].detach().numpy(), layer.values["h"][n],
                                               atol=1e-6, err_msg=key)
            checked += 1
        assert checked == (2 if loaded is not mt else 4)  # LM: 2 layers; MT: 2 layers x 2 directions
