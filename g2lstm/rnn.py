"""``G2LSTM`` and ``G2LSTMCell``: drop-in replacements for ``torch.nn.LSTM`` and ``nn.LSTMCell``.

They subclass the torch modules, so constructor arguments, parameter names and shapes, gate order,
inputs, outputs and errors are those of torch; the G2 options are keyword-only and come after.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import kernels, shard
from .inputs import SequenceBatch, normalize
from .noise import NOISE_MODES, NoiseKey, draw_seed, gate_noise
from .recipes import recipe_options
from .reference import GATE_NAMES, GateSpec, cell_step

_STOCHASTIC_CHOICES = ("input", "forget", "output")

_G2_DOC = r"""
    G2 options (keyword-only):
        gates: ``'gumbel'`` (default): the stochastic gates are the Gumbel-sigmoid
            ``sigmoid((a + B * (log U - log(1 - U))) / tau)`` in training and ``sigmoid(a)`` at
            evaluation. ``'sigmoid'``: a plain LSTM. ``'sharpened'``: ``sigmoid(a / tau)`` in
            training and evaluation, the paper's other baseline.
        tau: the temperature of ``'gumbel'`` and ``'sharpened'``. Default: 1.0
        noise_p: the probability ``p`` that a gate element is perturbed by noise in a step
            (the paper's 0.2). Default: 0.2. In the runs measured in this package, short and
            converged (results/binarization), 0.2 trains to the LSTM's quality but leaves the
            gates about as soft as the LSTM's; for gates that end near 0 or 1 use the recipe
            ``from_recipe('binary', ...)`` (``noise_p=1, tau=0.5``; ``g2lstm.recipes`` says what it
            cost: nothing on a transliterator, 5-18% perplexity on a small LM).
        stochastic_gates: which gates get the noise, temperature and hard evaluation, among
            ``'input'``, ``'forget'``, ``'output'``. Default: ``('input', 'forget')``
        eval_gates: ``'soft'`` (``sigmoid``) or ``'hard'`` (``a >= 0``) stochastic gates at
            evaluation. Default: ``'soft'``
        train_gates: ``'soft'``, or ``'hard'``: in training each stochastic gate of ``'gumbel'``
            or ``'sharpened'`` is its value above rounded to 0 or 1 (``>= 1/2``), with the gradient
            of that value (straight-through; Bengio et al. 2013, Jang et al. 2017), so the model
            trains with the binary gates that ``eval_gates='hard'`` evaluates. Default: ``'soft'``
"""


def _stochastic_indices(stochastic_gates: Sequence[str]) -> tuple[int, ...]:
    if isinstance(stochastic_gates, str):
        stochastic_gates = (stochastic_gates,)
    unknown = [g for g in stochastic_gates if g not in _STOCHASTIC_CHOICES]
    if unknown:
        raise ValueError(
            f"stochastic_gates must be a subset of {_STOCHASTIC_CHOICES}, got {tuple(stochastic_gates)}"
        )
    return tuple(sorted({GATE_NAMES.index(g) for g in stochastic_gates}))


class _G2Options:
    """The G2 options shared by the layer and the cell, checked when set."""

    @classmethod
    def from_recipe(cls, recipe: str, *args, **kwargs):
        """The module with the G2 options of a named recipe (:mod:`g2lstm.recipes`), e.g.
        ``G2LSTM.from_recipe('binary', 10, 20, num_layers=2)``; the other arguments as the
        constructor's. An option the recipe sets may not be passed as well (``ValueError``)."""
        options = recipe_options(recipe)
        clash = sorted(set(options) & set(kwargs))
        if clash:
            raise ValueError(f"recipe {recipe!r} sets {clash}; drop them, or build without the recipe")
        return cls(*args, **kwargs, **options)

    def _set_g2_options(self, gates, tau, noise_p, stochastic_gates, eval_gates, train_gates):
        self.gates = gates
        self.tau = float(tau)
        self.noise_p = float(noise_p)
        self.stochastic_gates = tuple(
            GATE_NAMES[k] for k in _stochastic_indices(stochastic_gates)
        )
        self.eval_gates = eval_gates
        self.train_gates = train_gates
        if not 0.0 <= self.noise_p <= 1.0:
            raise ValueError(f"noise_p must be a probability in [0, 1], got {noise_p}")
        self.gate_spec  # validates gates, tau, eval_gates and train_gates

    def __setstate__(self, state):
        state.setdefault("train_gates", "soft")  # a module pickled before the option existed
        super().__setstate__(state)

    @property
    def gate_spec(self) -> GateSpec:
        """The :class:`~g2lstm.reference.GateSpec` of the current options."""
        return GateSpec(
            gates=self.gates,
            tau=self.tau,
            stochastic=_stochastic_indices(self.stochastic_gates),
            eval_gates=self.eval_gates,
            train_gates=self.train_gates,
        )

    @torch.no_grad()
    def _inference_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict of the torch module that computes what this one computes at evaluation."""
        spec = self.gate_spec
        if spec.stochastic and spec.eval_gates == "hard":
            raise ValueError(
                "a layer with eval_gates='hard' computes no torch LSTM at evaluation; "
                "use eval_gates='soft', or load its state_dict() into the torch module directly"
            )
        state = {name: value.clone() for name, value in self.state_dict().items()}
        if spec.gates == "sharpened" and spec.tau != 1.0:
            for name, value in state.items():
                if name.startswith(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
                    for k in spec.stochastic:
                        value[k * self.hidden_size : (k + 1) * self.hidden_size] /= spec.tau
        return state

    def _noise_active(self) -> bool:
        return self.training and self.gates == "gumbel" and self.noise_p > 0 and bool(self.stochastic_gates)

    def _g2_repr(self) -> str:
        return (
            f"gates={self.gates!r}, tau={self.tau}, noise_p={self.noise_p}, "
            f"stochastic_gates={self.stochastic_gates}, eval_gates={self.eval_gates!r}"
            + (f", train_gates={self.train_gates!r}" if self.train_gates != "soft" else "")
        )


class G2LSTM(_G2Options, nn.LSTM):
    __doc__ = (
        r"""A multi-layer LSTM whose gates can be trained towards binary values (G2-LSTM).

    A drop-in replacement for :class:`torch.nn.LSTM`: the same arguments with the same meaning and
    defaults, the same inputs (batched, unbatched, :class:`PackedSequence`, optional
    ``(h_0, c_0)``) and outputs, the same parameters (names, shapes, gate order ``i, f, g, o``),
    so ``load_state_dict`` works in both directions. With ``gates='gumbel'`` (the default) the
    input and forget gates are Gumbel-sigmoid samples in training (Li et al., "Towards
    Binary-Valued Gates for Robust LSTM Training", ICML 2018) and plain sigmoids at evaluation,
    where the module is an ordinary LSTM and runs on torch's fused LSTM kernel.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        proj_size, device, dtype: as :class:`torch.nn.LSTM`.
"""
        + _G2_DOC
        + r"""        noise_mode: ``'step'`` (default): ``U`` and ``B`` drawn fresh at every step;
            ``'sequence'``: drawn once per forward and reused at every step; ``'sequence_mask'``:
            ``B`` once per forward, ``U`` at every step (the official code's three options).
        weight_drop: DropConnect on every ``W_hh``, one mask per forward in training, as in
            AWD-LSTM. Default: 0.0
        impl: ``'auto'`` (default) picks the fastest correct implementation for the device;
            ``'reference'`` forces the pure-PyTorch reference loop.

    Examples::

        >>> rnn = G2LSTM(10, 20, 2)            # was: nn.LSTM(10, 20, 2)
        >>> output, (hn, cn) = rnn(torch.randn(5, 3, 10))
        >>> lstm = rnn.to_lstm()               # an nn.LSTM with the same weights
    """
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        gates: str = "gumbel",
        tau: float = 1.0,
        noise_p: float = 0.2,
        stochastic_gates: Sequence[str] = ("input", "forget"),
        noise_mode: str = "step",
        eval_gates: str = "soft",
        train_gates: str = "soft",
        weight_drop: float = 0.0,
        impl: str = "auto",
    ):
        super().__init__(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            proj_size=proj_size,
            device=device,
            dtype=dtype,
        )
        self._set_g2_options(gates, tau, noise_p, stochastic_gates, eval_gates, train_gates)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if not 0.0 <= weight_drop < 1.0:
            raise ValueError(f"weight_drop must be a probability in [0, 1), got {weight_drop}")
        if impl != "auto" and impl not in kernels.IMPLEMENTATIONS:
            raise ValueError(
                f"impl must be 'auto' or one of {sorted(kernels.IMPLEMENTATIONS)}, got {impl!r}"
            )
        self.noise_mode = noise_mode
        self.weight_drop = float(weight_drop)
        self.impl = impl

    # ----------------------------------------------------------------------------- conversion
    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, **options) -> G2LSTM:
        """A ``G2LSTM`` with the configuration, weights and train/eval mode of ``lstm``."""
        if not isinstance(lstm, nn.LSTM):
            raise TypeError(f"from_lstm expects a torch.nn.LSTM, got {type(lstm).__name__}")
        weight = lstm.weight_ih_l0
        layer = cls(**_lstm_config(lstm), device=weight.device, dtype=weight.dtype, **options)
        layer.load_state_dict(lstm.state_dict())
        return layer.train(lstm.training)

    def to_lstm(self) -> nn.LSTM:
        """The ordinary ``torch.nn.LSTM`` that computes what this layer computes at evaluation.

        Its weights are this layer's; for ``gates='sharpened'`` the stochastic gates' rows of
        ``W_ih``, ``W_hh`` and the biases are divided by ``tau``, since
        ``sigmoid(a / tau) = sigmoid(a')`` with ``a'`` from those rows. Hard evaluation gates
        (``eval_gates='hard'``) have no ``nn.LSTM`` equivalent and raise an error.
        """
        weight = self.weight_ih_l0
        lstm = nn.LSTM(**_lstm_config(self), device=weight.device, dtype=weight.dtype)
        lstm.load_state_dict(self._inference_state_dict())
        return lstm.train(self.training)

    def extra_repr(self) -> str:
        text = f"{super().extra_repr()}, {self._g2_repr()}, noise_mode={self.noise_mode!r}"
        if self.weight_drop:
            text += f", weight_drop={self.weight_drop}"
        if self.impl != "auto":
            text += f", impl={self.impl!r}"
        return text

    # -------------------------------------------------------------------------------- forward
    def forward(self, input, hx=None):
        if (self.impl == "auto" and self.gate_spec.is_plain_lstm(self.training)
                and not self._sharded_dropout()):
            # torch's fused LSTM computes exactly this (and checks the inputs itself).
            if self.training and self.weight_drop > 0:
                return self._fused_forward_with_weight_drop(input, hx)
            return super().forward(input, hx)
        self._check_g2_inputs(input, hx)
        return self._forward_g2(input, hx)

    def _sharded_dropout(self) -> bool:
        """Whether inter-layer dropout must be drawn for the global batch of a data-parallel shard
        (:mod:`g2lstm.shard`): then the layer loop runs, not torch's fused LSTM, which draws it
        inside its kernel (the loop draws what torch draws on the CPU)."""
        return shard.splitting() is not None and self.training and self.dropout > 0 and self.num_layers > 1

    def _check_g2_inputs(self, input, hx) -> None:
        """What ``nn.LSTM`` checks, in its order, with its exception types and messages.

        The checks of ``nn.LSTM.forward`` are repeated as they are; those of torch's C++ kernel
        too (hx count, empty sequence), except where torch's error is an accident of its backend
        (an ``hx`` that is a tensor, ``hx`` dtypes, the hidden sizes of a packed input, which
        torch reports from oneDNN or an index): there the exception type is torch's and the
        message says what was expected and what was given.
        """
        num_directions = 2 if self.bidirectional else 1
        if isinstance(input, PackedSequence):
            data, batch = input.data, int(input.batch_sizes[0])
            if data.dtype != self.weight_ih_l0.dtype and not torch.is_autocast_enabled(data.device.type):
                raise RuntimeError(  # torch: a matmul dtype error from inside its kernel
                    f"input dtype ({data.dtype}) does not match weight dtype ({self.weight_ih_l0.dtype})")
            self.check_input(data, input.batch_sizes)
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
            is_batched = input.dim() == 3
            if not is_batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
            batch = input.size(0 if self.batch_first else 1)
            if hx is None:
                self.check_input(input, None)
            else:
                expected_dim = 3 if is_batched else 2
                if hx[0].dim() != expected_dim or hx[1].dim() != expected_dim:
                    kind = "batched 3-D" if is_batched else "unbatched 2-D"
                    raise RuntimeError(
                        f"For {kind} input, hx and cx should also be {expected_dim}-D "
                        f"but got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                    )
                if not is_batched:
                    hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
                self.check_forward_args(input, hx, None)
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in hx):
                raise TypeError(f"lstm(): argument 'hx' must be tuple of Tensors, not {type(hx).__name__}")
            if len(hx) != 2:
                raise RuntimeError("lstm expects two hidden states")
            if isinstance(input, PackedSequence):
                real_hidden_size = self.proj_size if self.proj_size > 0 else self.hidden_size
                layers = self.num_layers * num_directions
                self.check_hidden_size(hx[0], (layers, batch, real_hidden_size), "Expected hidden[0] size {}, got {}")
                self.check_hidden_size(hx[1], (layers, batch, self.hidden_size), "Expected hidden[1] size {}, got {}")
        if not isinstance(input, PackedSequence) and input.size(1 if self.batch_first else 0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        if hx is not None:
            data = input.data if isinstance(input, PackedSequence) else input
            for k, state in enumerate(hx):
                if state.dtype != data.dtype and not torch.is_autocast_enabled(data.device.type):
                    raise RuntimeError(f"hx[{k}] dtype ({state.dtype}) does not match input dtype ({data.dtype})")
                if state.device != data.device:
                    raise RuntimeError(f"hx[{k}] is on {state.device} but the input is on {data.device}")

    def _fused_forward_with_weight_drop(self, input, hx):
        """nn.LSTM's forward with a DropConnect mask on every W_hh (drawn in the reference's order)."""
        self._update_flat_weights()
        flat_weights = self._flat_weights
        self._dropped_flat_weights = [
            F.dropout(w, self.weight_drop, training=True) if name.startswith("weight_hh") else w
            for name, w in zip(self._flat_weights_names, flat_weights)
        ]
        try:
            return super().forward(input, hx)
        finally:
            self._dropped_flat_weights = None
            self._flat_weights = flat_weights

    def _update_flat_weights(self):
        super()._update_flat_weights()
        if getattr(self, "_dropped_flat_weights", None) is not None:
            self._flat_weights = self._dropped_flat_weights

    def _forward_g2(self, input, hx):
        batch = normalize(self, input, hx)
        impl = kernels.select_impl(self.impl, batch.x.device, batch.x.dtype)
        return batch.restore(*run_layers(self, batch, kernels.IMPLEMENTATIONS[impl], kernels.input_projection(impl)))


class G2LSTMCell(_G2Options, nn.LSTMCell):
    __doc__ = (
        r"""An LSTM cell whose gates can be trained towards binary values: a drop-in for
    :class:`torch.nn.LSTMCell`, with fresh Gumbel noise at every call in training.

    Args:
        input_size, hidden_size, bias, device, dtype: as :class:`torch.nn.LSTMCell`.
"""
        + _G2_DOC
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        gates: str = "gumbel",
        tau: float = 1.0,
        noise_p: float = 0.2,
        stochastic_gates: Sequence[str] = ("input", "forget"),
        eval_gates: str = "soft",
        train_gates: str = "soft",
    ):
        super().__init__(input_size, hidden_size, bias=bias, device=device, dtype=dtype)
        self._set_g2_options(gates, tau, noise_p, stochastic_gates, eval_gates, train_gates)

    @classmethod
    def from_lstm_cell(cls, cell: nn.LSTMCell, **options) -> G2LSTMCell:
        """A ``G2LSTMCell`` with the sizes, weights and train/eval mode of ``cell``."""
        if not isinstance(cell, nn.LSTMCell):
            raise TypeError(f"from_lstm_cell expects a torch.nn.LSTMCell, got {type(cell).__name__}")
        w = cell.weight_ih
        g2 = cls(cell.input_size, cell.hidden_size, cell.bias, device=w.device, dtype=w.dtype, **options)
        g2.load_state_dict(cell.state_dict())
        return g2.train(cell.training)

    def to_lstm_cell(self) -> nn.LSTMCell:
        """The ordinary ``torch.nn.LSTMCell`` that computes what this cell computes at evaluation
        (see :meth:`G2LSTM.to_lstm`)."""
        w = self.weight_ih
        cell = nn.LSTMCell(self.input_size, self.hidden_size, self.bias, device=w.device, dtype=w.dtype)
        cell.load_state_dict(self._inference_state_dict())
        return cell.train(self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._g2_repr()}"

    def forward(self, input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        if self.gate_spec.is_plain_lstm(self.training):
            return super().forward(input, hx)
        # nn.LSTMCell's checks, then those of torch's lstm_cell kernel, with their types and
        # messages; dtype mismatches raise from the matmuls below, as in torch.
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for k, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(f"LSTMCell: Expected hx[{k}] to be 1D or 2D, got {value.dim()}D instead")
        batch = input.shape[0] if input.dim() == 2 else None
        x = input if batch is not None else input.unsqueeze(0)
        if hx is None:
            hx = (x.new_zeros(x.shape[0], self.hidden_size),) * 2
        elif batch is None:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        if not isinstance(hx, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in hx):
            raise TypeError(
                f"lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, not {type(hx).__name__}")
        if len(hx) != 2:
            raise RuntimeError("lstm_cell expects two hidden states")
        if x.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {x.size(1)} expected {self.input_size}")
        for k, state in enumerate(hx):
            if state.size(0) != x.size(0):
                raise RuntimeError(f"Input batch size {x.size(0)} doesn't match hidden{k} batch size {state.size(0)}")
            if state.size(1) != self.hidden_size:
                raise RuntimeError(
                    f"hidden{k} has inconsistent hidden_size: got {state.size(1)}, expected {self.hidden_size}")
        h, c = hx
        a = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        noise = None
        if self._noise_active():
            key = noise_key(draw_seed(), 0, self.noise_p, "step", x.shape[0])
            spec = self.gate_spec
            noise = gate_noise(key, 1, x.shape[0], len(spec.stochastic), self.hidden_size, x.device, a.dtype)[0]
        h, c, _ = cell_step(a, c, self.gate_spec, self.training, noise)
        if batch is None:
            return h.squeeze(0), c.squeeze(0)
        return h, c


def _lstm_config(lstm: nn.LSTM) -> dict:
    return dict(
        input_size=lstm.input_size,
        hidden_size=lstm.hidden_size,
        num_layers=lstm.num_layers,
        bias=lstm.bias,
        batch_first=lstm.batch_first,
        dropout=lstm.dropout,
        bidirectional=lstm.bidirectional,
        proj_size=lstm.proj_size,
    )


def noise_key(seed: int, stream: int, p: float, mode: str, batch: int) -> NoiseKey:
    """The noise key of a batch of ``batch`` rows: inside :func:`g2lstm.shard.batch_shard`, keyed by
    the rows' global index and the global batch size."""
    current = shard.current()
    if current is None:
        return NoiseKey(seed, stream, p, mode)
    current.check(batch, "a G2LSTM layer")
    return NoiseKey(seed, stream, p, mode, current.offset, current.global_rows)


def gate_spec_of(lstm: nn.LSTM) -> GateSpec:
    """How ``lstm`` computes its gates: a ``G2LSTM``'s own spec, else a plain LSTM's."""
    if isinstance(lstm, G2LSTM):
        return lstm.gate_spec
    if type(lstm) is not nn.LSTM:
        raise TypeError(f"cannot tell how {type(lstm).__name__} computes its gates: expected nn.LSTM or G2LSTM")
    return GateSpec(gates="sigmoid", stochastic=())


def layer_weights(lstm: nn.LSTM, layer: int, direction: int):
    """``(W_ih, W_hh, b_ih + b_hh or None, W_hr or None)`` of one layer direction."""
    suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    w_ih = getattr(lstm, "weight_ih" + suffix)
    w_hh = getattr(lstm, "weight_hh" + suffix)
    bias = getattr(lstm, "bias_ih" + suffix) + getattr(lstm, "bias_hh" + suffix) if lstm.bias else None
    w_hr = getattr(lstm, "weight_hr" + suffix) if lstm.proj_size > 0 else None
    return w_ih, w_hh, bias, w_hr


def run_layers(lstm: nn.LSTM, batch: SequenceBatch, run_direction, project=F.linear):
    """All layers and directions of ``lstm`` (an ``nn.LSTM`` or ``G2LSTM``) over ``batch``, with
    ``run_direction`` (an implementation of :func:`g2lstm.reference.lstm_direction`) for each
    layer direction, called in the order layer 0 forward, layer 0 reverse, layer 1 forward, ...,
    on the input projection ``project(layer_input, w_ih, bias)`` (``F.linear`` or its equivalent).

    Returns ``(output (T, N, D * H_out), h_n, c_n)``. Random numbers are drawn as torch's fused
    LSTM draws them on the CPU: the gate-noise seed, then the weight-drop masks of every ``W_hh``
    in parameter order, then inter-layer dropout on the layer output, in the packed layout when the
    input is packed; so a trace of an ``nn.LSTM`` in training reproduces its dropout.
    """
    spec = gate_spec_of(lstm)
    training = lstm.training
    num_directions = 2 if lstm.bidirectional else 1
    noisy = isinstance(lstm, G2LSTM) and lstm._noise_active()
    seed = draw_seed() if noisy else None
    weights = [layer_weights(lstm, layer, direction)
               for layer in range(lstm.num_layers) for direction in range(num_directions)]
    weight_drop = getattr(lstm, "weight_drop", 0.0) if training else 0.0
    if weight_drop > 0:
        weights = [(w_ih, F.dropout(w_hh, weight_drop, training=True), bias, w_hr)
                   for w_ih, w_hh, bias, w_hr in weights]
    layer_input = batch.x
    h_n, c_n = [], []
    for layer in range(lstm.num_layers):
        outputs = []
        for direction in range(num_directions):
            index = layer * num_directions + direction
            w_ih, w_hh, bias, w_hr = weights[index]
            x_proj = project(layer_input, w_ih, bias)
            key = None if seed is None else noise_key(seed, index, lstm.noise_p, lstm.noise_mode, batch.x.shape[1])
            out, h, c = run_direction(
                x_proj, batch.hx[0][index], batch.hx[1][index], w_hh, w_hr, spec, training,
                key, batch.lengths, direction == 1,
            )
            outputs.append(out)
            h_n.append(h)
            c_n.append(c)
        layer_input = outputs[0] if num_directions == 1 else torch.cat(outputs, dim=-1)
        if lstm.dropout > 0 and training and layer < lstm.num_layers - 1:
            if batch.packed is not None and shard.splitting() is not None:
                layer_input = shard.packed_dropout(layer_input, batch.lengths, lstm.dropout,
                                                   enforce_sorted=batch.packed.sorted_indices is None)
            elif batch.packed is not None:
                layer_input = batch.padded(F.dropout(batch.packed_data(layer_input), lstm.dropout, training=True))
            else:  # time-major (T, N, F): the batch rows are dimension 1
                layer_input = shard.dropout(layer_input, lstm.dropout, training=True, batch_dim=1)
    return layer_input, torch.stack(h_n), torch.stack(c_n)

