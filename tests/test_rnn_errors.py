"""Bad G2 options raise errors that name what was expected and what was given.

Bad input raises torch's own errors: tests/test_torch_spec.py compares them with nn.LSTM's.
"""

import pytest
from torch import nn

from g2lstm import G2LSTM


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


def test_from_lstm_rejects_other_modules():
    with pytest.raises(TypeError, match="from_lstm expects a torch.nn.LSTM, got GRU"):
        G2LSTM.from_lstm(nn.GRU(4, 6))
