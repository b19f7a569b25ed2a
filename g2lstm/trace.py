"""Traces: the per-step states and gates of every LSTM inside a model, as the model ran.

    >>> with g2lstm.trace.record(model) as recorded:
    ...     model(batch)
    >>> t = recorded.layer("encoder.rnn", layer=0, direction=1)
    >>> t.f[t.mask].mean()          # mean forget gate over the real steps of that direction

While :func:`record` is active, every call of an ``nn.LSTM`` or ``G2LSTM`` inside the model is
computed a second time, recording every step, from the same random-number state: a G2LSTM in
training draws the same gate noise, weight drop and inter-layer dropout, so the recorded values
are those the module used. The recomputed outputs, final states included, are compared with the
module's own and a mismatch is an error naming the layer. Without gradients on the CPU (float32,
float64) the recomputation is the C++ op's fused forward (:mod:`g2lstm.kernels.cpu`), whose gates
and states saved for its backward are the record: a traced forward costs about one more forward of
the LSTM layers (``benchmarks/bench_trace.py``). Otherwise (``grad=True``, CUDA, other dtypes) it
is the pure-PyTorch reference (:mod:`g2lstm.reference`), whose steps autograd can differentiate.

With ``grad=False`` (default) the model's results are the module's own and the trace holds
detached tensors. With ``grad=True`` each module returns the recomputed output, so gradients flow
from any traced tensor to the model's inputs and parameters (e.g. the sensitivity of a gate to an
input token).

Calls of one module inside one block are joined along time, so a decoder stepping one token at a
time gives one ``(T, N, H)`` sequence per layer direction. On CUDA torch's fused LSTM (``nn.LSTM``,
or a ``G2LSTM`` that is a plain LSTM) draws its inter-layer dropout in training inside cuDNN,
which cannot be replayed (an error says so): trace such a model in evaluation.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Iterator

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import kernels
from .inputs import normalize
from .kernels import cpu
from .kernels.common import STRAIGHT, gate_plan
from .protocol import lstm_layers
from .reference import GATE_NAMES, StepRecord, lstm_direction, step_mask
from .rnn import gate_spec_of, run_layers

_FIELD_OF_GATE = dict(zip(GATE_NAMES, ("i", "f", "g", "o")))
_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}  # default atol for half types


@dataclass(eq=False)  # tensors: compare values with torch, not ==
class LayerTrace(StepRecord):
    """One direction of one layer of an LSTM module, over all its calls in a :func:`record` block.

    ``h`` is ``(T, N, H_out)`` (the projected state with ``proj_size``); ``c``, ``i``, ``f``,
    ``g``, ``o`` are ``(T, N, H)``: the cell state and the input, forget, cell-candidate and
    output gate values the layer used (Gumbel-sigmoid, sharpened or hard, per its options and
    mode); ``mask`` ``(T, N)`` is True at real steps. At padding steps ``h`` and ``c`` hold the
    state carried over and the gates are 0. Time runs forward in both directions: ``h[t]`` of the
    reverse direction is its state after reading steps ``T-1 .. t``.
    """

    name: str  # the module's path in the model ('' for the model itself)
    layer: int
    direction: int  # 0 forward, 1 reverse
    mask: torch.Tensor

    @property
    def key(self) -> str:
        """``"{module}/l{layer}"`` plus ``"_reverse"``: the layer keys of :class:`g2lstm.diagnostics.GateStats`."""
        return f"{self.name or 'lstm'}/l{self.layer}" + ("_reverse" if self.direction else "")

    @property
    def gates(self) -> dict[str, torch.Tensor]:
        """``{"input": i, "forget": f, "cell": g, "output": o}``."""
        return {name: getattr(self, field) for name, field in _FIELD_OF_GATE.items()}

    def gate(self, name: str) -> torch.Tensor:
        """The values of the gate ``name``, one of :data:`g2lstm.reference.GATE_NAMES`."""
        if name not in _FIELD_OF_GATE:
            raise KeyError(f"gate must be one of {GATE_NAMES}, got {name!r}")
        return getattr(self, _FIELD_OF_GATE[name])


class Trace:
    """What :func:`record` saw: ``layers``, a list of :class:`LayerTrace` in the model's module
    order, then layer, then direction. Filled when the ``with`` block ends."""

    def __init__(self):
        self.layers: list[LayerTrace] = []

    def by_name(self, name: str) -> list[LayerTrace]:
        """Every layer direction of the module at path ``name``."""
        return [t for t in self.layers if t.name == name]

    def layer(self, name: str, layer: int = 0, direction: int = 0) -> LayerTrace:
        for t in self.layers:
            if (t.name, t.layer, t.direction) == (name, layer, direction):
                return t
        raise KeyError(
            f"no trace of module {name!r} layer {layer} direction {direction}; traced: "
            f"{sorted({(t.name, t.layer, t.direction) for t in self.layers})}"
        )

    def __iter__(self) -> Iterator[LayerTrace]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)


def _rng_state(device: torch.device) -> list[torch.Tensor]:
    state = [torch.get_rng_state()]  # the CPU generator: gate-noise seeds, CPU dropout
    if device.type == "cuda":
        state.append(torch.cuda.get_rng_state(device))
    return state


def _set_rng_state(device: torch.device, state: list[torch.Tensor]) -> None:
    torch.set_rng_state(state[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state[1], device)


def _output_tensors(output) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out, (h_n, c_n) = output
    return (out.data if isinstance(out, PackedSequence) else out), h_n, c_n


def _recorded_by_cpu_op(x_proj, h0, c0, w_hh, w_hr, spec, training, noise=None, lengths=None, reverse=False):
    """:func:`g2lstm.reference.lstm_direction` with ``record=True``, from the C++ CPU op's forward.

    The op keeps the gate values of every step and the states ``cs``, ``hs`` when asked to save
    them for its backward (``save=True``); these are the record, so a replay costs one fused
    forward instead of the reference's per-step Python loop. Only without gradients: the op's
    saved tensors are not differentiable outputs.
    """
    out, h_n, c_n, gates, cs, hs = cpu.run_op(x_proj, h0, c0, w_hh, w_hr, spec, training, noise, lengths, reverse,
                                              save=True)
    steps = x_proj.shape[0]
    # slot t of cs / hs is the state entering step t of a forward pass, leaving it in a reverse one
    states = slice(0, steps) if reverse else slice(1, steps + 1)
    active = step_mask(lengths, steps, x_proj.device)
    hidden = cs.shape[-1]
    plan = gate_plan(spec, training, noise is not None and bool(spec.stochastic))
    for block, kind in zip((0, 1, 3), plan.kinds):  # the op saves a straight-through gate's soft value
        if kind in STRAIGHT:
            values = gates[..., block * hidden:(block + 1) * hidden]
            values.copy_(values >= 0.5)
    if active is not None:  # the op computes gates at padding steps too; the record holds 0 there
        gates.masked_fill_(~active.unsqueeze(-1), 0)
    return out, h_n, c_n, StepRecord(hs[states], cs[states], *gates.chunk(4, dim=-1))


def _recording_impl(grad: bool, x: torch.Tensor):
    """The function recording one layer direction: the C++ op where it runs these inputs without
    gradients, else the reference."""
    if not grad and kernels.unsupported("cpu", x.device, x.dtype) is None:
        return _recorded_by_cpu_op
    return partial(lstm_direction, record=True)


def _close(mine: torch.Tensor, theirs: torch.Tensor, atol: float, rtol: float) -> bool:
    """``torch.allclose(mine, theirs, atol=atol, rtol=rtol)``, in three passes over the data where
    allclose takes about ten (4x faster on a (35, 64, 400) output): the largest
    ``|mine - theirs| - rtol |theirs|`` is at most ``atol`` (a NaN fails it). Only when that fails is
    allclose asked, so equal infinities pass as there."""
    if mine.numel() == 0:
        return True
    excess = torch.sub(mine, theirs).abs_().sub_(theirs.abs().mul_(rtol)).max()
    return bool(excess <= atol) or torch.allclose(mine, theirs, atol=atol, rtol=rtol)


def _arguments(args, kwargs):
    input = args[0] if args else kwargs["input"]
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    return input, hx


class _ModuleRecorder:
    """The hooks of one LSTM module: replay each call with recording, check it, keep the steps."""

    def __init__(self, name: str, lstm: nn.LSTM, grad: bool, atol: float | None):
        gate_spec_of(lstm)  # an unknown LSTM subclass is an error before the model runs
        self.name, self.lstm, self.grad, self.atol = name, lstm, grad, atol
        self.calls: list[tuple[list[StepRecord], torch.Tensor]] = []  # per call: per index, mask
        self._rng_before: list[torch.Tensor] | None = None

    def before(self, module, args, kwargs):
        input, _ = _arguments(args, kwargs)
        self._rng_before = _rng_state(input.data.device)

    def after(self, module, args, kwargs, output):
        input, hx = _arguments(args, kwargs)
        device = input.data.device
        rng_after = _rng_state(device)
        _set_rng_state(device, self._rng_before)
        records: list[StepRecord] = []
        grad = self.grad and torch.is_grad_enabled()
        recorded_direction = _recording_impl(grad, input.data)

        def recording_direction(*direction_args):  # called once per layer direction, in order
            out, h, c, steps = recorded_direction(*direction_args)
            records.append(steps)
            return out, h, c

        with torch.set_grad_enabled(grad):
            batch = normalize(self.lstm, input, hx)
            replayed = batch.restore(*run_layers(self.lstm, batch, recording_direction))
        if not all(torch.equal(a, b) for a, b in zip(_rng_state(device), rng_after)):
            _set_rng_state(device, rng_after)
            raise RuntimeError(
                f"trace of '{self.name}': the replay drew random numbers differently from the module, "
                "so its gates would not be the module's (nn.LSTM dropout on CUDA cannot be replayed; "
                "trace in evaluation mode)"
            )
        self._check(replayed, output)
        if self.calls and self.calls[0][1].shape[1] != batch.x.shape[1]:
            raise ValueError(
                f"trace of '{self.name}': called with a batch of {batch.x.shape[1]} after a batch of "
                f"{self.calls[0][1].shape[1]} in one record() block; calls are joined along time, so "
                "they need one batch size (record each batch in its own block)"
            )
        self.calls.append((records, batch.mask))
        return replayed if self.grad else None

    def _check(self, replayed, output) -> None:
        for what, mine, theirs in zip(("output", "h_n", "c_n"), _output_tensors(replayed), _output_tensors(output)):
            mine, theirs = mine.detach(), theirs.detach()
            atol = self.atol if self.atol is not None else _TOLERANCE.get(theirs.dtype, 1e-4)
            if mine.shape != theirs.shape:
                difference = f"shape {tuple(mine.shape)}, the module's {tuple(theirs.shape)}"
            elif not _close(mine, theirs, atol=atol, rtol=1e-4):
                difference = f"max diff {(mine - theirs).abs().max().item():.3g}"
            else:
                continue
            raise RuntimeError(
                f"trace of '{self.name}' does not reproduce its {what} ({difference}); "
                "the recorded gates would not be the module's"
            )

    def layer_traces(self) -> list[LayerTrace]:
        """The calls joined along time, one :class:`LayerTrace` per layer direction."""
        if not self.calls:
            return []
        mask = torch.cat([m for _, m in self.calls])
        directions = 2 if self.lstm.bidirectional else 1
        traces = []
        for index, per_call in enumerate(zip(*(records for records, _ in self.calls))):
            joined = per_call[0] if len(per_call) == 1 else StepRecord.join(per_call)  # no copy of one call
            traces.append(LayerTrace(**vars(joined), name=self.name, layer=index // directions,
                                     direction=index % directions, mask=mask))
        return traces


@contextmanager
def record(model: nn.Module, grad: bool = False, *, atol: float | None = None) -> Iterator[Trace]:
    """Trace every ``nn.LSTM`` / ``G2LSTM`` inside ``model`` while the block runs.

    Args:
        model: any module containing LSTM layers (or an LSTM itself). Modes are not changed.
        grad: ``False``: the trace is recorded without gradients and the model's results are
            its own. ``True``: modules return the traced computation, so gradients flow from the
            traced tensors to the inputs and parameters.
        atol: absolute tolerance of the check that the trace reproduces each module's outputs
            (default 1e-4, 1e-2 for float16, 5e-2 for bfloat16; relative tolerance 1e-4).

    Yields:
        a :class:`Trace`, filled when the block ends.
    """
    recorders = [_ModuleRecorder(name, lstm, grad, atol) for name, lstm in lstm_layers(model).items()]
    handles = []
    for recorder in recorders:
        handles.append(recorder.lstm.register_forward_pre_hook(recorder.before, with_kwargs=True))
        handles.append(recorder.lstm.register_forward_hook(recorder.after, with_kwargs=True))
    trace = Trace()
    try:
        yield trace
    finally:
        for handle in handles:
            handle.remove()
    for recorder in recorders:
        trace.layers.extend(recorder.layer_traces())
