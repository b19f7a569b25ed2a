"""Bad input and bad options raise errors that name what was expected and what was given."""

import re

import pytest
import torch
from torch import nn

from g2lstm import G2LSTM, G2LSTMCell

# Every check runs through the fused path (eval) and the G2 path (training with noise).
MODES = {"eval": dict(train=False), "train-g2": dict(train=True)}


def _layers(**config):
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6, **config)
    g2 = G2LSTM.from_lstm(lstm, noise_p=0.5)
    return lstm, g2


def _message(fn):
    with pytest.raises(Exception) as info:
        fn()
    return type(info.value), str(info.value)


BAD_CALLS = {
    "wrong feature size": lambda m: m(torch.randn(5, 3, 2)),
    "wrong h0 batch": lambda m: m(torch.randn(5, 3, 4), (torch.zeros(1, 2, 6), torch.zeros(1, 3, 6))),
    "wrong c0 size": lambda m: m(torch.randn(5, 3, 4), (torch.zeros(1, 3, 6), torch.zeros(1, 3, 7))),
    "wrong layers in hx": lambda m: m(torch.randn(5, 3, 4), (torch.zeros(2, 3, 6), torch.zeros(2, 3, 6))),
    "input dtype": lambda m: m(torch.randn(5, 3, 4, dtype=torch.float64)),
    "4-D input": lambda m: m(torch.randn(5, 3, 4, 1)),
    "2-D hx for batched input": lambda m: m(torch.randn(5, 3, 4), (torch.zeros(3, 6), torch.zeros(3, 6))),
    "3-D hx for unbatched input": lambda m: m(torch.randn(5, 4), (torch.zeros(1, 1, 6), torch.zeros(1, 1, 6))),
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_errors_are_those_of_nn_lstm(case, mode):
    lstm, g2 = _layers()
    lstm.train(MODES[mode]["train"])
    g2.train(MODES[mode]["train"])
    kind_lstm, text_lstm = _message(lambda: BAD_CALLS[case](lstm))
    kind_g2, text_g2 = _message(lambda: BAD_CALLS[case](g2))
    assert issubclass(kind_g2, kind_lstm) or issubclass(kind_lstm, kind_g2)
    assert text_g2.replace("G2LSTM", "LSTM") == text_lstm


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("wrong feature size", r"Expected 4, got 2"),
        ("wrong h0 batch", r"Expected hidden\[0\] size \(1, 3, 6\), got \[1, 2, 6\]"),
        ("wrong c0 size", r"Expected hidden\[1\] size \(1, 3, 6\), got \[1, 3, 7\]"),
        ("input dtype", r"input dtype \(torch.float64\) does not match weight dtype \(torch.float32\)"),
    ],
)
def test_messages_name_expected_and_given(case, pattern):
    _, g2 = _layers()
    with pytest.raises((RuntimeError, ValueError), match=pattern):
        BAD_CALLS[case](g2.train())


@pytest.mark.parametrize("batch_first, shape", [(False, (0, 3, 4)), (True, (3, 0, 4)), (False, (0, 4))])
@pytest.mark.parametrize("training", [False, True])
def test_empty_sequence_is_rejected(batch_first, shape, training):
    g2 = G2LSTM(4, 6, batch_first=batch_first).train(training)
    with pytest.raises(ValueError, match=re.escape(f"at least one time step") + ".*" + re.escape(str(shape))):
        g2(torch.randn(*shape))


@pytest.mark.parametrize("training", [False, True])
def test_hx_dtype_and_type_are_checked(training):
    g2 = G2LSTM(4, 6).train(training)
    x = torch.randn(5, 3, 4)
    with pytest.raises(ValueError, match=r"hx\[1\] dtype \(torch.float64\) does not match input dtype \(torch.float32\)"):
        g2(x, (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6, dtype=torch.float64)))
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\) of two tensors, got Tensor"):
        g2(x, torch.zeros(1, 3, 6))


def test_packed_input_with_wrong_hx_batch():
    from torch.nn.utils.rnn import pack_padded_sequence

    g2 = G2LSTM(4, 6).train()
    packed = pack_padded_sequence(torch.randn(5, 3, 4), torch.tensor([5, 2, 4]), enforce_sorted=False)
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(1, 3, 6\), got \[1, 2, 6\]"):
        g2(packed, (torch.zeros(1, 2, 6), torch.zeros(1, 3, 6)))


@pytest.mark.parametrize(
    "options, pattern",
    [
        (dict(gates="binary"), r"gates must be one of \('gumbel', 'sigmoid', 'sharpened'\), got 'binary'"),
        (dict(tau=0.0), r"tau must be a positive temperature, got 0.0"),
        (dict(noise_p=1.2), r"noise_p must be a probability in \[0, 1\], got 1.2"),
        (dict(stochastic_gates=("input", "cell")), r"stochastic_gates must be a subset of \('input', 'forget', 'output'\), got \('input', 'cell'\)"),
        (dict(noise_mode="epoch"), r"noise_mode must be one of \('step', 'sequence', 'sequence_mask'\), got 'epoch'"),
        (dict(eval_gates="binary"), r"eval_gates must be one of \('soft', 'hard'\), got 'binary'"),
        (dict(weight_drop=1.0), r"weight_drop must be a probability in \[0, 1\), got 1.0"),
        (dict(impl="cuda"), r"impl must be 'auto' or one of \[.*'reference'.*\], got 'cuda'"),
    ],
)
def test_bad_options_are_rejected(options, pattern):
    with pytest.raises(ValueError, match=pattern):
        G2LSTM(4, 6, **options)


def test_cell_errors_name_expected_and_given():
    cell = G2LSTMCell(4, 6).train()
    with pytest.raises(ValueError, match=r"expected input with 4 features in the last dimension, got input of shape \(3, 5\)"):
        cell(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"Expected input to be 1D or 2D, got 3D instead"):
        cell(torch.randn(1, 3, 4))
    with pytest.raises(RuntimeError, match=r"Expected hx\[0\] size \(3, 6\), got \(2, 6\)"):
        cell(torch.randn(3, 4), (torch.zeros(2, 6), torch.zeros(3, 6)))
    with pytest.raises(ValueError, match=r"input dtype \(torch.float64\) does not match weight dtype \(torch.float32\)"):
        cell(torch.randn(3, 4, dtype=torch.float64))


def test_from_lstm_rejects_other_modules():
    with pytest.raises(TypeError, match="from_lstm expects a torch.nn.LSTM, got GRU"):
        G2LSTM.from_lstm(nn.GRU(4, 6))
