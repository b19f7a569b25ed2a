"""The attention encoder-decoder, decoding and scoring, on tiny random models."""

import pytest
import torch

from g2lstm import G2LSTM
from g2lstm.mt.batching import source_batch
from g2lstm.mt.decode import beam_search, greedy_decode, translate
from g2lstm.mt.evaluate import score, tokenized_bleu
from g2lstm.mt.model import ModelConfig, Seq2Seq
from g2lstm.mt.tokenizer import BOS, EOS, train_tokenizers

V = 40


def model(**kw) -> Seq2Seq:
    torch.manual_seed(0)
    vocab = {"src_vocab": kw.pop("src_vocab", V), "tgt_vocab": kw.pop("tgt_vocab", V)}
    cfg = dict(embed_dim=16, hidden_dim=12, dropout=0.0)
    cfg.update(kw)
    return Seq2Seq(ModelConfig(**cfg), **vocab)


def batch():
    src, lengths = source_batch([[5, 6, 7, 8], [9, 10], [11, 12, 13]])
    tgt_in = torch.tensor([[BOS, 5, 6], [BOS, 7, 0], [BOS, 8, 9]])
    return src, lengths, tgt_in


@pytest.mark.parametrize("cell,gates", [("lstm", "sigmoid"), ("sharpened", "sharpened"), ("g2lstm", "gumbel")])
def test_one_switch_sets_every_recurrent_layer(cell, gates):
    m = model(cell=cell, encoder_layers=2, decoder_layers=2)
    layers = [mod for mod in m.modules() if isinstance(mod, torch.nn.LSTM)]
    assert len(layers) == 2 and all(isinstance(layer, G2LSTM) and layer.gates == gates for layer in layers)
    assert m.encoder.rnn.bidirectional and m.encoder.rnn.num_layers == 2
    assert m.decoder.output.weight is m.decoder.embedding.weight  # tied
    with pytest.raises(ValueError, match=r"cell=.gru.: expected one of"):
        model(cell="gru")


@pytest.mark.parametrize("attention", ["dot", "general", "bahdanau"])
@pytest.mark.parametrize("input_feeding", [True, False])
def test_teacher_forcing_matches_step_by_step_decoding(attention, input_feeding):
    """The logits of the whole-sequence forward equal those of one-token decoder steps, so training
    and beam search compute the same model."""
    m = model(attention=attention, input_feeding=input_feeding, decoder_layers=2, cell="g2lstm").eval()
    src, lengths, tgt_in = batch()
    logits = m(src, lengths, tgt_in)
    assert logits.shape == (3, 3, V)
    state = m.encode(src, lengths)
    for t in range(tgt_in.size(1)):
        logp, state = m.decoder.step(tgt_in[:, t], state)
        torch.testing.assert_close(logp, torch.log_softmax(logits[:, t], -1), rtol=1e-5, atol=1e-5)


def test_padding_does_not_change_a_sentence_translation():
    m = model(attention="bahdanau").eval()
    src, lengths, tgt_in = batch()
    alone_src, alone_len = source_batch([[9, 10]])
    both = m(src, lengths, tgt_in)[1]
    alone = m(alone_src, alone_len, tgt_in[1:2])[0]
    torch.testing.assert_close(both, alone, rtol=1e-5, atol=1e-5)


def test_g2_gate_noise_is_fresh_at_every_decoder_step_in_training():
    m = model(cell="g2lstm", noise_p=1.0).train()
    src, lengths, _ = batch()
    state = m.encode(src, lengths)
    tokens = torch.full((3,), BOS)
    a, _ = m.decoder.step(tokens, state)
    b, _ = m.decoder.step(tokens, state)
    assert not torch.allclose(a, b)  # same input and state, different noise
    m.eval()
    a, _ = m.decoder.step(tokens, state)
    b, _ = m.decoder.step(tokens, state)
    torch.testing.assert_close(a, b)


def test_shared_embeddings_need_a_joint_vocabulary():
    m = model(share_embeddings=True)
    assert m.encoder.embedding is m.decoder.embedding
    with pytest.raises(ValueError, match="joint vocabulary"):
        model(share_embeddings=True, tgt_vocab=V + 1)


@torch.no_grad()
def sequence_logprob(m, src, length, hyp):
    state = m.encode(src, length)
    total = 0.0
    for prev, nxt in zip([BOS] + hyp, hyp + [EOS]):
        logp, state = m.decoder.step(torch.tensor([prev]), state)
        total += float(logp[0, nxt])
    return total


def test_beam_search_is_batch_independent_and_scores_at_least_as_well_as_greedy():
    m = model(attention="general").eval()
    src, lengths, _ = batch()
    beams = beam_search(m, src, lengths, beam=4, length_penalty=0.0, max_len_a=1.0, max_len_b=3)
    greedy = greedy_decode(m, src, lengths, max_len_a=1.0, max_len_b=3)
    assert beam_search(m, src, lengths, beam=1, max_len_a=1.0, max_len_b=3) == greedy
    for i in range(3):
        one_src, one_len = src[i : i + 1, : lengths[i]], lengths[i : i + 1]
        assert beam_search(m, one_src, one_len, beam=4, length_penalty=0.0, max_len_a=1.0, max_len_b=3)[0] == beams[i]
        limit = int(lengths[i]) + 3
        assert len(beams[i]) < limit and len(greedy[i]) < limit  # EOS counts towards the limit
        assert EOS not in beams[i] and BOS not in beams[i]
        assert sequence_logprob(m, one_src, one_len, beams[i]) >= sequence_logprob(m, one_src, one_len, greedy[i]) - 1e-5


def test_translate_keeps_order_handles_empty_and_overlong_lines():
    toks = train_tokenizers([("ein hund .", "a dog ."), ("zwei katzen .", "two cats .")] * 5, vocab_size=40)
    m = model(src_vocab=toks.src.vocab_size, tgt_vocab=toks.tgt.vocab_size)
    lines = ["ein hund .", "", "   ", "zwei katzen . " * 30, "ein hund ."]
    with pytest.warns(UserWarning, match="truncated"):
        out = translate(m, toks, lines, beam=3, max_src_tokens=20, max_len_b=4)
    assert len(out) == 5 and out[1] == "" and out[2] == ""
    assert out[0] == out[4]
    assert m.training  # translate restores the mode it found


def test_scores_and_signature():
    refs = ["A dog runs in the park.", "Two cats sleep."]
    perfect = score(refs, refs)
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    assert "tok:13a" in perfect["bleu_signature"] and "nrefs:1" in perfect["bleu_signature"]
    worse = score(["A dog runs.", "Two dogs sleep."], refs)
    assert 0 < worse["bleu"] < 100 and 0 < worse["chrf"] < 100
    # lowercased tokenized BLEU ignores case; sacreBLEU does not
    assert tokenized_bleu(["a dog runs in the park .", "two cats sleep ."], refs) == pytest.approx(100.0)
    assert score(["a dog runs in the park.", "two cats sleep."], refs)["bleu"] < 100
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        score(["x"], refs)
