"""PyTorch's own test cases for nn.LSTM and nn.LSTMCell, run on G2LSTM and G2LSTMCell.

The samples and error inputs are imported from the installed torch
(``torch.testing._internal.common_modules``); the checks of ``test/test_nn.py``,
``test/test_modules.py`` and ``test/test_autograd.py`` that the wheel does not ship are written
here. Every case runs through G2's own implementations (``impl='reference'``, ``'cpu'``, ``'bptt'``)
in each mode where G2 has code of its own (``MODES``) against the torch module with the same
weights: outputs, every gradient, and the exception TYPE and MESSAGE of bad input, compared as
they come (torch's module is run on the same input; nothing is rewritten). Where G2 hands the call
to torch (``impl='auto'`` on an ordinary LSTM), one test checks the hand-over.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.testing._internal import common_modules
from torch.testing._internal.common_modules import ModuleErrorEnum

from g2lstm import G2LSTM, G2LSTMCell, rnn

# name -> (training, G2 options). Every mode runs G2's own code: with impl='auto', a layer that
# computes an ordinary LSTM (evaluation with soft gates, or gates='sigmoid') hands the call to
# nn.LSTM.forward, so these modes name an implementation (test_auto_hands_an_ordinary_lstm_to_torch
# checks that hand-over once). With noise_p=0 the gumbel gates are sigmoids: an LSTM again.
IMPLS = ("reference", "cpu", "bptt")
MODES = {
    **{f"eval-{impl}": (False, dict(impl=impl)) for impl in IMPLS},
    **{f"train-sigmoid-{impl}": (True, dict(gates="sigmoid", impl=impl)) for impl in IMPLS},
    **{f"train-gumbel-p0-{impl}": (True, dict(noise_p=0.0, impl=impl)) for impl in IMPLS + ("auto",)},
}
# G2LSTMCell has no impl: it runs its own step where it computes what nn.LSTMCell cannot (gumbel in
# training, 'sharpened' gates); sharpened with tau=1 is sigmoid(a), an LSTM cell, in both modes.
CELL_MODES = {"eval-sharpened-tau1": (False, dict(gates="sharpened")),
              "train-sharpened-tau1": (True, dict(gates="sharpened")),
              "train-gumbel-p0": (True, dict(noise_p=0.0))}
# Bad input raises torch's errors in modes whose values no torch module computes, too: hard gates at
# evaluation, straight-through gates in training.
ERROR_MODES = {**MODES, "eval-hard-auto": (False, dict(eval_gates="hard")),
               "train-straight-through-auto": (True, dict(train_gates="hard"))}
CELL_ERROR_MODES = {**CELL_MODES, "eval-hard": (False, dict(eval_gates="hard")),
                    "train-straight-through": (True, dict(train_gates="hard"))}
G2_PATH_MODES = [m for m in MODES if m.startswith("train-gumbel")]

_INFO = {info.module_cls: info for info in common_modules.module_db
         if info.module_cls in (nn.LSTM, nn.LSTMCell)}


def _pair(torch_cls, mode_table, mode, args, kwargs):
    """A torch module and the G2 module of ``mode`` with the same weights."""
    training, options = mode_table[mode]
    torch.manual_seed(0)
    module = torch_cls(*args, **kwargs).train(training)
    if torch_cls is nn.LSTM:
        g2 = G2LSTM.from_lstm(module, **options)
    else:
        g2 = G2LSTMCell.from_lstm_cell(module, **options)
    return module, g2.train(training)


def _leaves(value):
    """The tensors of a (nested) input, as new leaves requiring grad where floating point."""
    if isinstance(value, torch.nn.utils.rnn.PackedSequence):
        data = value.data.detach().clone().requires_grad_(value.data.requires_grad)
        return value._replace(data=data)
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, (tuple, list)):
        return type(value)(_leaves(v) for v in value)
    return value


def _flat(value):
    if isinstance(value, torch.nn.utils.rnn.PackedSequence):
        return [value.data]
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat(v)]
    return []


def _run(module, args, kwargs):
    """Outputs and the gradients of inputs and parameters of a loss touching every output."""
    args, kwargs = _leaves(args), _leaves(kwargs)
    outputs = _flat(module(*args, **kwargs))
    inputs = [t for t in _flat(args) + _flat(kwargs) if t.requires_grad]
    params = list(module.parameters())
    loss = sum((y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum() for y in outputs)
    grads = torch.autograd.grad(loss, inputs + params, allow_unused=True)
    return outputs, grads


def _assert_same_results(module, g2, args, kwargs):
    want_out, want_grads = _run(module, args, kwargs)
    got_out, got_grads = _run(g2, args, kwargs)
    assert len(got_out) == len(want_out)
    for got, want in zip(got_out + list(got_grads), want_out + list(want_grads)):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want)


def _samples(torch_cls, training, requires_grad=True):
    info = _INFO[torch_cls]
    return info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                   requires_grad=requires_grad, training=training)


SAMPLE_CASES = [(nn.LSTM, MODES, mode, 32) for mode in sorted(MODES)] + [
    (nn.LSTMCell, CELL_MODES, mode, 2) for mode in sorted(CELL_MODES)]


@pytest.mark.parametrize("torch_cls, modes, mode, count", SAMPLE_CASES,
                         ids=[f"{c.__name__}-{m}" for c, _, m, _ in SAMPLE_CASES])
def test_torch_samples(torch_cls, modes, mode, count):
    """module_inputs_torch_nn_LSTM / _LSTMCell: every sample, forward and backward, equals torch's."""
    samples = _samples(torch_cls, modes[mode][0])
    assert len(samples) == count
    for sample in samples:
        ctor = sample.constructor_input
        module, g2 = _pair(torch_cls, modes, mode, ctor.args, dict(ctor.kwargs, dtype=torch.float64))
        _assert_same_results(module, g2, sample.forward_input.args, sample.forward_input.kwargs)
        # and torch's own reference of the sample: the unbatched input run as a batch of one
        with torch.no_grad():
            args = _leaves(sample.forward_input.args)
            torch.testing.assert_close(_flat(g2(*args)), _flat(sample.reference_fn(g2, *args)))


def _outcome(fn):
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - the exception itself is what is compared
        return type(error), str(error)
    return None, None


def _error_inputs(torch_cls, training):
    info = _INFO[torch_cls]
    return info.module_error_inputs_func(info, device="cpu", dtype=torch.float32, requires_grad=False,
                                         training=training)


def _assert_same_error(module_call, g2_call):
    want_type, want_text = _outcome(module_call)
    got_type, got_text = _outcome(g2_call)
    assert (got_type, got_text) == (want_type, want_text)


@pytest.mark.parametrize("torch_cls, g2_cls, modes", [(nn.LSTM, G2LSTM, ERROR_MODES),
                                                      (nn.LSTMCell, G2LSTMCell, CELL_ERROR_MODES)],
                         ids=["LSTM", "LSTMCell"])
def test_torch_error_inputs(torch_cls, g2_cls, modes):
    """module_error_inputs_torch_nn_RNN_GRU / _LSTMCell: torch's type and message, as they come."""
    for mode, (training, options) in modes.items():
        errors = _error_inputs(torch_cls, training)
        assert len(errors) >= 4
        for error in errors:
            ctor, forward = error.module_error_input.constructor_input, error.module_error_input.forward_input
            if error.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
                _assert_same_error(lambda: torch_cls(*ctor.args, **ctor.kwargs),
                                   lambda: g2_cls(*ctor.args, **ctor.kwargs, **options))
                continue
            module, g2 = _pair(torch_cls, modes, mode, ctor.args, ctor.kwargs)
            with pytest.raises(error.error_type, match=error.error_regex):
                g2(*forward.args, **forward.kwargs)
            _assert_same_error(lambda: module(*forward.args, **forward.kwargs),
                               lambda: g2(*forward.args, **forward.kwargs))


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(1))


def _packed(features=4, dtype=torch.float32):
    return pack_padded_sequence(_x(5, 3, features, dtype=dtype), torch.tensor([5, 2, 4]), enforce_sorted=False)


# More bad input for LSTM(4, 6), in the spirit of test_nn's test_rnn_args_check; name -> call
BAD_LAYER_CALLS = {
    "wrong feature size": lambda m: m(_x(5, 3, 2)),
    "wrong h0 batch": lambda m: m(_x(5, 3, 4), (torch.zeros(1, 2, 6), torch.zeros(1, 3, 6))),
    "wrong c0 size": lambda m: m(_x(5, 3, 4), (torch.zeros(1, 3, 6), torch.zeros(1, 3, 7))),
    "wrong layers in hx": lambda m: m(_x(5, 3, 4), (torch.zeros(2, 3, 6), torch.zeros(2, 3, 6))),
    "input dtype": lambda m: m(_x(5, 3, 4, dtype=torch.float64)),
    "4-D input": lambda m: m(_x(5, 3, 4, 1)),
    "1-D input": lambda m: m(_x(4)),
    "2-D hx for batched input": lambda m: m(_x(5, 3, 4), (torch.zeros(3, 6), torch.zeros(3, 6))),
    "4-D hx": lambda m: m(_x(5, 3, 4), (torch.zeros(1, 1, 3, 6), torch.zeros(1, 1, 3, 6))),
    "3-D hx for unbatched input": lambda m: m(_x(5, 4), (torch.zeros(1, 1, 6), torch.zeros(1, 1, 6))),
    "empty sequence": lambda m: m(_x(0, 3, 4)),
    "empty unbatched sequence": lambda m: m(_x(0, 4)),
    "empty sequence with bad hx": lambda m: m(_x(0, 3, 4), (torch.zeros(1, 2, 6), torch.zeros(1, 2, 6))),
    "three hidden states": lambda m: m(_x(5, 3, 4), (torch.zeros(1, 3, 6),) * 3),
    "three hidden states, bad input": lambda m: m(_x(5, 3, 2), (torch.zeros(1, 3, 6),) * 3),
    "one tensor as hx": lambda m: m(_x(5, 3, 4), torch.zeros(1, 3, 6)),
    "one 2x3x6 tensor as hx": lambda m: m(_x(5, 3, 4), torch.zeros(2, 3, 6)),
}
# Cases where torch's message is an accident of its backend (oneDNN's dtype table, an index error
# of its permutation, an argument parser listing overloads): G2 raises the same exception type
# with a message naming what was expected and what was given.
BACKEND_MESSAGES = {
    "float64 h0": (lambda m: m(_x(5, 3, 4), (torch.zeros(1, 3, 6, dtype=torch.float64), torch.zeros(1, 3, 6))),
                   r"hx\[0\] dtype \(torch.float64\) does not match input dtype \(torch.float32\)"),
    "float64 c0": (lambda m: m(_x(5, 3, 4), (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6, dtype=torch.float64))),
                   r"hx\[1\] dtype \(torch.float64\) does not match input dtype \(torch.float32\)"),
    "one 2x1x3x6 tensor as hx": (lambda m: m(_x(5, 3, 4), torch.zeros(2, 1, 3, 6)),
                                 r"argument 'hx' must be tuple of Tensors, not Tensor"),
    "packed input, wrong h0 batch": (lambda m: m(_packed(), (torch.zeros(1, 2, 6), torch.zeros(1, 3, 6))),
                                     r"Expected hidden\[0\] size \(1, 3, 6\), got \[1, 2, 6\]"),
    "packed input, wrong c0 size": (lambda m: m(_packed(), (torch.zeros(1, 3, 6), torch.zeros(1, 3, 7))),
                                    r"Expected hidden\[1\] size \(1, 3, 6\), got \[1, 3, 7\]"),
    "packed input, wrong feature size": (lambda m: m(_packed(2)), r"Expected 4, got 2"),
    "packed float64 input": (lambda m: m(_packed(dtype=torch.float64)),
                             r"input dtype \(torch.float64\) does not match weight dtype \(torch.float32\)"),
}
BAD_CELL_CALLS = {
    "wrong input size": lambda m: m(_x(3, 11), (torch.zeros(3, 20), torch.zeros(3, 20))),
    "3-D input": lambda m: m(_x(1, 3, 10)),
    "wrong h0 size": lambda m: m(_x(3, 10), (torch.zeros(3, 21), torch.zeros(3, 20))),
    "wrong c0 size": lambda m: m(_x(3, 10), (torch.zeros(3, 20), torch.zeros(3, 21))),
    "wrong h0 batch": lambda m: m(_x(3, 10), (torch.zeros(5, 20), torch.zeros(5, 20))),
    "wrong c0 batch": lambda m: m(_x(3, 10), (torch.zeros(3, 20), torch.zeros(5, 20))),
    "4-D hx": lambda m: m(_x(3, 10), (torch.zeros(3, 1, 1, 20), torch.zeros(3, 1, 1, 20))),
    "2-D hx for unbatched input": lambda m: m(_x(10), (torch.zeros(3, 20), torch.zeros(3, 20))),
    "1-D hx for batched input": lambda m: m(_x(3, 10), (torch.zeros(20), torch.zeros(20))),
    "float64 input": lambda m: m(_x(3, 10, dtype=torch.float64)),
    "float64 h0": lambda m: m(_x(3, 10), (torch.zeros(3, 20, dtype=torch.float64), torch.zeros(3, 20))),
    "one tensor as hx": lambda m: m(_x(3, 10), torch.zeros(3, 20)),
    "three hidden states": lambda m: m(_x(3, 11), (torch.zeros(3, 20),) * 3),
}


@pytest.mark.parametrize("mode", sorted(ERROR_MODES))
@pytest.mark.parametrize("case", sorted(BAD_LAYER_CALLS))
def test_layer_errors_are_torchs(case, mode):
    module, g2 = _pair(nn.LSTM, ERROR_MODES, mode, (4, 6), {})
    want_type, _ = _outcome(lambda: BAD_LAYER_CALLS[case](module))
    assert want_type is not None
    _assert_same_error(lambda: BAD_LAYER_CALLS[case](module), lambda: BAD_LAYER_CALLS[case](g2))


@pytest.mark.parametrize("mode", G2_PATH_MODES)
@pytest.mark.parametrize("case", sorted(BACKEND_MESSAGES))
def test_layer_errors_with_backend_messages(case, mode):
    module, g2 = _pair(nn.LSTM, MODES, mode, (4, 6), {})
    call, message = BACKEND_MESSAGES[case]
    want_type, _ = _outcome(lambda: call(module))
    with pytest.raises(want_type, match=message):
        call(g2)


@pytest.mark.parametrize("mode", sorted(CELL_ERROR_MODES))
@pytest.mark.parametrize("case", sorted(BAD_CELL_CALLS))
def test_cell_errors_are_torchs(case, mode):
    module, g2 = _pair(nn.LSTMCell, CELL_ERROR_MODES, mode, (10, 20), {})
    want_type, _ = _outcome(lambda: BAD_CELL_CALLS[case](module))
    assert want_type is not None
    _assert_same_error(lambda: BAD_CELL_CALLS[case](module), lambda: BAD_CELL_CALLS[case](g2))


# ------------------------------------------------------------ test_modules / test_nn checks
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("layers", [1, 2])
def test_gradient_penalty_gradients_equal_nn_lstm(mode, layers):
    """Double backward (a gradient penalty on the input): the same gradients as nn.LSTM, never None."""
    module, g2 = _pair(nn.LSTM, MODES, mode, (3, 5, layers), dict(dtype=torch.float64, proj_size=2 if layers == 2 else 0))
    results = []
    for m in (module, g2):
        x = _x(4, 2, 3, dtype=torch.float64).requires_grad_()
        out, (h, c) = m(x)
        grad_x, = torch.autograd.grad(out.sum() + h.sum() + c.sum(), x, create_graph=True)
        penalty = grad_x.square().sum()
        second = torch.autograd.grad(penalty, [x, *m.parameters()])
        assert all(g is not None for g in second)
        results.append((grad_x.detach(), *second))
    for got, want in zip(*results[::-1]):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_gradgradcheck(mode):
    """test_modules' test_gradgrad: second derivatives against finite differences."""
    _, g2 = _pair(nn.LSTM, MODES, mode, (2, 2), dict(dtype=torch.float64, bidirectional=True))
    inputs = tuple(_x(*shape, dtype=torch.float64).requires_grad_() for shape in [(2, 1, 2), (2, 1, 2), (2, 1, 2)])
    assert torch.autograd.gradgradcheck(lambda x, h, c: tuple(_flat(g2(x, (h, c)))), inputs)


@pytest.mark.parametrize("impl", ["auto", "bptt", "reference"])
def test_gradgradcheck_with_gumbel_noise(impl):
    """Double backward with the noise on: the same seed for every evaluation."""
    torch.manual_seed(0)
    g2 = G2LSTM(2, 2, dtype=torch.float64, noise_p=0.5, tau=0.7, impl=impl).train()
    x = _x(2, 2, 2, dtype=torch.float64).requires_grad_()

    def seeded(x):
        torch.manual_seed(5)
        return tuple(_flat(g2(x)))

    assert torch.autograd.gradgradcheck(seeded, (x,))


@pytest.mark.parametrize("cls, args", [(G2LSTM, (3, 5, 2)), (G2LSTMCell, (3, 5))])
def test_pickle_and_repr(cls, args):
    torch.manual_seed(0)
    g2 = cls(*args, tau=0.5, noise_p=0.3).eval()
    copy = pickle.loads(pickle.dumps(g2))
    assert repr(copy) == repr(g2)
    torch_module = getattr(nn, cls.__name__[2:])(*args)
    assert repr(g2).startswith(f"{cls.__name__}({torch_module.extra_repr()}, gates='gumbel', tau=0.5")
    x = _x(4, 3) if cls is G2LSTMCell else _x(4, 2, 3)
    torch.testing.assert_close(_flat(copy(x)), _flat(g2(x)))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_non_contiguous_inputs(mode):
    """test_modules' test_non_contiguous_tensors: strided inputs (a transposed x, every other unit of
    a wider h and c) give the results of their contiguous copies, bit for bit, and torch's."""
    module, g2 = _pair(nn.LSTM, MODES, mode, (3, 4), dict(batch_first=True))

    def run(m, contiguous):
        bases = [_x(5, 2, 3).requires_grad_(), _x(1, 2, 8).requires_grad_(), (2 * _x(1, 2, 8)).requires_grad_()]
        inputs = [bases[0].transpose(0, 1), bases[1][..., ::2], bases[2][..., 1::2]]  # (2, 5, 3), (1, 2, 4) x 2
        assert not any(t.is_contiguous() for t in inputs)
        x, h, c = [t.contiguous() for t in inputs] if contiguous else inputs
        outputs = _flat(m(x, (h, c)))
        loss = sum((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum() for y in outputs)
        return outputs + list(torch.autograd.grad(loss, bases + list(m.parameters())))

    strided = run(g2, contiguous=False)
    for got, want in zip(strided, run(g2, contiguous=True), strict=True):
        assert torch.equal(got, want)
    for got, want in zip(strided, run(module, contiguous=False), strict=True):
        torch.testing.assert_close(got, want)


def test_auto_hands_an_ordinary_lstm_to_torch(monkeypatch):
    """With impl='auto' (the default), a layer that computes an ordinary LSTM (evaluation with soft
    gates, gates='sigmoid') and a cell that does (evaluation, gates='sigmoid') run torch's own
    forward, with torch's results bit for bit; G2's code runs wherever the gates are G2's."""
    def g2_code(*args, **kwargs):
        raise AssertionError("G2's code ran")

    monkeypatch.setattr(G2LSTM, "_forward_g2", g2_code)
    monkeypatch.setattr(rnn, "cell_step", g2_code)
    x = _x(5, 3, 4)
    torch.manual_seed(0)
    lstm, cell = nn.LSTM(4, 6, 2), nn.LSTMCell(4, 6)
    for training, options in ((False, {}), (False, dict(tau=0.5, noise_p=0.9)), (True, dict(gates="sigmoid"))):
        lstm.train(training), cell.train(training)
        torch.manual_seed(1)
        want = _flat(lstm(x))
        torch.manual_seed(1)
        assert all(map(torch.equal, _flat(G2LSTM.from_lstm(lstm, **options)(x)), want))
        g2_cell = G2LSTMCell.from_lstm_cell(cell, **options)
        assert all(map(torch.equal, _flat(g2_cell(x[0])), _flat(cell(x[0]))))
    for training, options in ((True, {}), (False, dict(eval_gates="hard")), (False, dict(impl="cpu"))):
        with pytest.raises(AssertionError, match="G2's code ran"):
            G2LSTM.from_lstm(lstm.train(training), **options)(x)
    for training, options in ((True, {}), (False, dict(eval_gates="hard")), (False, dict(gates="sharpened"))):
        with pytest.raises(AssertionError, match="G2's code ran"):
            G2LSTMCell.from_lstm_cell(cell.train(training), **options)(x[0])


@pytest.mark.parametrize("cls, args", [(G2LSTM, (3, 4, 2)), (G2LSTMCell, (3, 4))])
def test_factory_kwargs(cls, args):
    """test_modules' test_factory_kwargs: parameters on the requested device and dtype."""
    g2 = cls(*args, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in g2.parameters())
    assert sorted(n for n, _ in g2.named_parameters()) == sorted(
        n for n, _ in getattr(nn, cls.__name__[2:])(*args).named_parameters())


@pytest.mark.parametrize("mode", G2_PATH_MODES)
def test_initial_state_and_zero_sizes(mode):
    """test_nn: no hx is zero hx; a batch of zero rows works as in torch."""
    module, g2 = _pair(nn.LSTM, MODES, mode, (4, 6, 2), dict(proj_size=3))
    x = _x(5, 3, 4)
    zeros = (torch.zeros(2, 3, 3), torch.zeros(2, 3, 6))
    torch.testing.assert_close(_flat(g2(x)), _flat(g2(x, zeros)))
    _assert_same_results(module, g2, (_x(5, 0, 4).requires_grad_(),), {})


@pytest.mark.parametrize("mode", G2_PATH_MODES)
def test_backward_to_input_but_not_parameters(mode):
    """test_nn's test_rnn_backward_to_input_but_not_parameters, and a second backward."""
    module, g2 = _pair(nn.LSTM, MODES, mode, (4, 6, 2), {})
    grads = []
    for m in (module, g2):
        m.requires_grad_(False)
        x = _x(5, 3, 4).requires_grad_()
        out, _ = m(x)
        out.sum().backward(retain_graph=True)
        first = x.grad.clone()
        out.sum().backward()
        torch.testing.assert_close(x.grad, 2 * first)
        grads.append(first)
    torch.testing.assert_close(grads[1], grads[0])
