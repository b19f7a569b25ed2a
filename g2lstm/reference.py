"""The pure-PyTorch reference: what a G2-LSTM computes, written for clarity, not speed.

Every fused kernel in :mod:`g2lstm.kernels` is tested against these functions.

One step of a layer, with the pre-activations ``a = x W_ih^T + b_ih + h W_hh^T + b_hh`` split into
the row blocks ``(a_i, a_f, a_g, a_o)`` of ``torch.nn.LSTM``::

    i = gate(a_i)   f = gate(a_f)   g = tanh(a_g)   o = gate(a_o)
    c' = f * c + i * g
    h' = o * tanh(c')            (h' = (o * tanh(c')) W_hr^T with a projection)

where ``gate`` is ``sigmoid`` for an ordinary gate and, for a stochastic gate (input and forget by
default), depends on the mode:

=============  ===================================  ==============================
mode           training                             evaluation
=============  ===================================  ==============================
``gumbel``     ``sigmoid((a + B * L) / tau)``        ``sigmoid(a)``
``sharpened``  ``sigmoid(a / tau)``                 ``sigmoid(a / tau)``
``sigmoid``    ``sigmoid(a)``                       ``sigmoid(a)``
=============  ===================================  ==============================

with ``L = log U - log(1 - U)`` and ``B ~ Bernoulli(p)`` from :mod:`g2lstm.noise`. With
``eval_gates='hard'`` the stochastic gates are ``a >= 0`` at evaluation, in every mode. With
``train_gates='hard'`` (``gumbel`` and ``sharpened``) a stochastic gate in training is its soft
value ``s`` above rounded, ``s >= 1/2``, and its gradient is that of ``s`` (the straight-through
estimator: Bengio et al. 2013, "Estimating or Propagating Gradients Through Stochastic Neurons";
the straight-through Gumbel estimator of Jang et al. 2017): the model trains with the binary gates
it is evaluated with under ``eval_gates='hard'``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch

from .noise import NoiseKey, gate_noise

GATE_NAMES = ("input", "forget", "cell", "output")  # the row blocks of W_ih / W_hh, in order
SIGMOID_GATES = (0, 1, 3)  # input, forget, output: the blocks that pass through a gate function
GATE_MODES = ("gumbel", "sigmoid", "sharpened")
EVAL_GATES = ("soft", "hard")
TRAIN_GATES = ("soft", "hard")  # hard: straight-through


@dataclass(frozen=True)
class GateSpec:
    """How the gates of a layer are computed.

    ``stochastic`` holds the indices into :data:`GATE_NAMES` of the gates that receive the
    Gumbel noise (``gumbel``), the temperature (``gumbel``, ``sharpened``) and the hard
    evaluation (``eval_gates='hard'``) and the straight-through training (``train_gates='hard'``);
    the cell candidate (index 2) is never one of them.
    """

    gates: str = "gumbel"
    tau: float = 1.0
    stochastic: tuple[int, ...] = (0, 1)
    eval_gates: str = "soft"
    train_gates: str = "soft"

    def __post_init__(self):
        if self.gates not in GATE_MODES:
            raise ValueError(f"gates must be one of {GATE_MODES}, got {self.gates!r}")
        if self.eval_gates not in EVAL_GATES:
            raise ValueError(f"eval_gates must be one of {EVAL_GATES}, got {self.eval_gates!r}")
        if self.train_gates not in TRAIN_GATES:
            raise ValueError(f"train_gates must be one of {TRAIN_GATES}, got {self.train_gates!r}")
        if self.train_gates == "hard" and self.gates == "sigmoid":
            raise ValueError("train_gates='hard' rounds the gates of gates='gumbel' or 'sharpened'; "
                             "gates='sigmoid' is a plain LSTM (use gates='gumbel' with noise_p=0 for "
                             "straight-through sigmoid gates)")
        if not self.tau > 0:
            raise ValueError(f"tau must be a positive temperature, got {self.tau}")
        if any(k not in SIGMOID_GATES for k in self.stochastic):
            raise ValueError(
                f"stochastic gates must be among input (0), forget (1), output (3); got {self.stochastic}"
            )

    def is_plain_lstm(self, training: bool) -> bool:
        """Whether the layer computes exactly ``torch.nn.LSTM`` in this mode."""
        if not self.stochastic:
            return True
        if not training and self.eval_gates == "hard":
            return False
        if training and self.train_gates == "hard":
            return False
        if self.gates == "sigmoid":
            return True
        return self.gates == "gumbel" and not training


def gate_activation(
    a: torch.Tensor, gate_index: int, spec: GateSpec, training: bool, noise: torch.Tensor | None
) -> torch.Tensor:
    """The value of gate ``gate_index`` (0 input, 1 forget, 3 output) from its pre-activation."""
    if gate_index in spec.stochastic:
        if not training and spec.eval_gates == "hard":
            return (a >= 0).to(a.dtype)
        if spec.gates == "sharpened" or (spec.gates == "gumbel" and training):
            if noise is not None:
                a = a + noise
            soft = torch.sigmoid(a / spec.tau)
            if training and spec.train_gates == "hard":
                return straight_through(soft)
            return soft
    return torch.sigmoid(a)


def straight_through(soft: torch.Tensor) -> torch.Tensor:
    """``soft >= 1/2`` as 0 or 1 in the forward pass, with the gradient of ``soft``: exactly the
    binary value (``hard + soft - soft`` adds a zero), differentiable as ``soft`` is."""
    hard = (soft >= 0.5).to(soft.dtype)
    return hard + (soft - soft.detach())


def cell_step(
    a: torch.Tensor,
    c: torch.Tensor,
    spec: GateSpec,
    training: bool,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One LSTM step from the pre-activations ``a`` (N, 4H) and cell ``c`` (N, H).

    ``noise`` is ``None`` or (N, G, H) for the G stochastic gates in the order of
    ``spec.stochastic``. Returns ``(o * tanh(c'), c', (i, f, g, o))`` (before any projection).
    """
    blocks = a.chunk(4, dim=-1)
    values = []
    for k in SIGMOID_GATES:
        gate_noise_k = None
        if noise is not None and k in spec.stochastic:
            gate_noise_k = noise[:, spec.stochastic.index(k)]
        values.append(gate_activation(blocks[k], k, spec, training, gate_noise_k))
    i, f, o = values
    g = torch.tanh(blocks[2])
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new, (i, f, g, o)


def step_mask(lengths: torch.Tensor | None, steps: int, device) -> torch.Tensor | None:
    """``(T, N)`` bool, True where step ``t`` is inside row ``n``'s sequence; None for no lengths.

    The one definition of which padded steps are real: the reference, the fused kernels and
    :mod:`g2lstm.trace` all use it.
    """
    if lengths is None:
        return None
    return torch.arange(steps, device=device).unsqueeze(1) < lengths.to(device).unsqueeze(0)


@dataclass(eq=False)  # tensors: compare values with torch, not ==
class StepRecord:
    """The per-step values of one layer direction, each time-major ``(T, N, ·)``.

    ``h`` (projected when the layer has a projection) and ``c`` are the states after each step;
    ``i, f, g, o`` the values of the input, forget, cell-candidate and output gates that step
    used. At padding steps the states are carried unchanged and the gates are 0.
    """

    h: torch.Tensor
    c: torch.Tensor
    i: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    o: torch.Tensor

    @classmethod
    def join(cls, records: Sequence[StepRecord], stack: bool = False) -> StepRecord:
        """The records concatenated along time (``stack``: stacked, each record one step)."""
        combine = torch.stack if stack else torch.cat
        return cls(**{f.name: combine([getattr(r, f.name) for r in records]) for f in fields(cls)})


def lstm_direction(
    x_proj: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    w_hh: torch.Tensor,
    w_hr: torch.Tensor | None,
    spec: GateSpec,
    training: bool,
    noise: NoiseKey | None = None,
    lengths: torch.Tensor | None = None,
    reverse: bool = False,
    record: bool = False,
):
    """Run one direction of one layer over a whole (padded) sequence.

    Args:
        x_proj: ``(T, N, 4H)``, the input projections ``x W_ih^T + b_ih + b_hh`` of all steps.
        h0, c0: ``(N, H_out)`` and ``(N, H)`` initial states.
        w_hh: ``(4H, H_out)``; w_hr: ``(H_out, H)`` or ``None`` (no projection).
        spec, training: see :class:`GateSpec`.
        noise: where the Gumbel noise comes from, or ``None`` for none.
        lengths: ``(N,)`` int64 lengths of padded sequences, or ``None`` when all are ``T`` long.
            Steps past a row's length leave its state unchanged and output zeros, so a reverse
            pass starts each row at its own last step.
        reverse: run from the last step to the first.
        record: also return a :class:`StepRecord` of every step's states and gates.

    Returns:
        ``(output (T, N, H_out), h_T (N, H_out), c_T (N, H))``, and the :class:`StepRecord` if
        ``record``.
    """
    steps, batch = x_proj.shape[:2]
    hidden = c0.shape[-1]
    noise_values = None
    if noise is not None and spec.stochastic:
        noise_values = gate_noise(
            noise, steps, batch, len(spec.stochastic), hidden, x_proj.device, x_proj.dtype
        )
    active = step_mask(lengths, steps, x_proj.device)

    h, c = h0, c0
    outputs: list[torch.Tensor | None] = [None] * steps
    records: list[StepRecord | None] = [None] * steps
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        a = torch.addmm(x_proj[t], h, w_hh.t())
        noise_t = None
        if noise_values is not None:
            noise_t = noise_values[t if noise_values.shape[0] > 1 else 0]
        h_new, c_new, gate_values = cell_step(a, c, spec, training, noise_t)
        if w_hr is not None:
            h_new = h_new @ w_hr.t()
        if active is None:
            h, c, outputs[t] = h_new, c_new, h_new
        else:
            keep = active[t].unsqueeze(-1)
            h = torch.where(keep, h_new, h)
            c = torch.where(keep, c_new, c)
            outputs[t] = torch.where(keep, h_new, torch.zeros_like(h_new))
            if record:
                gate_values = tuple(torch.where(keep, v, torch.zeros_like(v)) for v in gate_values)
        if record:
            records[t] = StepRecord(h, c, *gate_values)
    result = (torch.stack(outputs), h, c)
    if record:
        return result + (StepRecord.join(records, stack=True),)
    return result
