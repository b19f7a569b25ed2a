"""g2lstm.shard: a process that computes rows of a larger batch gets those rows' gate noise and
dropout masks, and a shard that is the whole batch changes nothing."""

import pytest
import torch
import torch.nn.functional as F

from g2lstm import G2LSTM, G2LSTMCell, shard


@pytest.mark.parametrize("shape,batch_dim", [((4, 6, 5), 1), ((6, 3), 0)])
def test_dropout_of_the_whole_batch_is_torch_dropout(shape, batch_dim):
    x = torch.randn(shape)
    torch.manual_seed(0)
    want = F.dropout(x, 0.3)
    torch.manual_seed(0)
    outside = shard.dropout(x, 0.3, batch_dim=batch_dim)
    torch.manual_seed(0)
    with shard.batch_shard(0, shape[batch_dim], shape[batch_dim]):
        inside = shard.dropout(x, 0.3, batch_dim=batch_dim)
    assert torch.equal(outside, want) and torch.equal(inside, want)


def test_dropout_of_a_shard_is_its_rows_of_the_global_mask_and_consumes_the_same_random_numbers():
    x = torch.randn(4, 6, 5)
    torch.manual_seed(0)
    whole = shard.Dropout(0.5, batch_dim=1)(x)
    after_whole = torch.rand(3)
    torch.manual_seed(0)
    with shard.batch_shard(2, 3, 6):
        part = shard.Dropout(0.5, batch_dim=1)(x[:, 2:5])
    assert torch.equal(part, whole[:, 2:5])
    assert torch.equal(torch.rand(3), after_whole)  # the generator moved as in the whole batch


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_g2lstm_in_a_shard_computes_its_rows_of_the_global_batch(impl):
    torch.manual_seed(1)
    layer = G2LSTM(3, 4, num_layers=2, dropout=0.4, weight_drop=0.3, noise_p=0.5, impl=impl)
    x = torch.randn(5, 6, 3)
    torch.manual_seed(7)
    whole, (h, _) = layer(x)
    torch.manual_seed(7)
    with shard.batch_shard(3, 3, 6):
        part, (h_part, _) = layer(x[:, 3:])
    torch.testing.assert_close(part, whole[:, 3:], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(h_part, h[:, 3:], atol=1e-6, rtol=1e-6)
    torch.manual_seed(7)
    alone, _ = layer(x[:, 3:])  # negative control: the rows alone draw other noise and masks
    assert (alone - whole[:, 3:]).abs().max() > 1e-3


def test_g2lstm_cell_in_a_shard_computes_its_rows_of_the_global_batch():
    torch.manual_seed(1)
    cell = G2LSTMCell(3, 4, noise_p=1.0)
    x = torch.randn(6, 3)
    torch.manual_seed(7)
    h, _ = cell(x)
    torch.manual_seed(7)
    with shard.batch_shard(4, 2, 6):
        h_part, _ = cell(x[4:])
    torch.testing.assert_close(h_part, h[4:], atol=1e-6, rtol=1e-6)


def test_a_shard_that_does_not_describe_the_batch_is_refused():
    layer = G2LSTM(3, 4)
    with shard.batch_shard(0, 2, 4), pytest.raises(ValueError, match="batch of 3 rows inside batch_shard.rows=2"):
        layer(torch.randn(5, 3, 3))
    with pytest.raises(ValueError, match="offset \\+ rows <= global_rows"):
        shard.BatchShard(3, 2, 4)


@pytest.mark.parametrize("gates", ["gumbel", "sigmoid"])
def test_inter_layer_dropout_over_packed_input_in_a_shard_is_the_global_packed_mask(gates):
    # the MT encoder: bidirectional, 2 layers, packed unsorted input; rows [3, 6) of 6
    torch.manual_seed(1)
    layer = G2LSTM(3, 4, num_layers=2, dropout=0.5, bidirectional=True, gates=gates, noise_p=0.5)
    x, lengths = torch.randn(5, 6, 3), torch.tensor([2, 5, 3, 4, 1, 3])
    pack = torch.nn.utils.rnn.pack_padded_sequence
    torch.manual_seed(7)
    whole, (h, _) = layer(pack(x, lengths, enforce_sorted=False))
    whole = torch.nn.utils.rnn.pad_packed_sequence(whole)[0]
    torch.manual_seed(7)
    with shard.batch_shard(3, 3, 6, lengths=lengths.tolist()):
        part, (h_part, _) = layer(pack(x[:, 3:], lengths[3:], enforce_sorted=False))
    part = torch.nn.utils.rnn.pad_packed_sequence(part)[0]
    torch.testing.assert_close(part, whole[:part.shape[0], 3:], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(h_part, h[:, 3:], atol=1e-6, rtol=1e-6)
    with shard.batch_shard(3, 3, 6), pytest.raises(ValueError, match="needs the global batch's lengths"):
        layer(pack(x[:, 3:], lengths[3:], enforce_sorted=False))


def test_a_plain_multilayer_lstm_in_a_shard_draws_the_fused_lstms_dropout_rows():
    # one process runs torch's fused LSTM; a shard runs the layer loop, which draws the same masks
    torch.manual_seed(1)
    layer = G2LSTM(3, 4, num_layers=2, dropout=0.5, gates="sigmoid")
    x = torch.randn(5, 6, 3)
    torch.manual_seed(7)
    whole, _ = layer(x)
    torch.manual_seed(7)
    with shard.batch_shard(2, 2, 6):
        part, _ = layer(x[:, 2:4])
    torch.testing.assert_close(part, whole[:, 2:4], atol=1e-6, rtol=1e-6)
