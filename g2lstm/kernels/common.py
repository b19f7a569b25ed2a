"""What every fused implementation shares: how each gate is computed, shape checks, and the
differentiable backward (double backward) through the reference.

A fused kernel does not branch on ``GateSpec`` per element; it gets one small integer per gate
(input, forget, output) saying which formula of :func:`g2lstm.reference.gate_activation` applies,
and for a noisy gate which slice of the noise tensor it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch

from ..reference import EVAL_GATES, GATE_MODES, SIGMOID_GATES, TRAIN_GATES, GateSpec

# The formulas of a gate value v from its pre-activation a (n: the gate's noise, tau: temperature).
PLAIN = 0  # v = sigmoid(a)
SCALED = 1  # v = sigmoid(a / tau)
NOISY = 2  # v = sigmoid((a + n) / tau)
HARD = 3  # v = (a >= 0); no gradient flows through it
# Straight-through (train_gates='hard'): the kernel saves the soft value s of SCALED or NOISY, from
# which the backward takes the slope s (1 - s) / tau; the step uses (s >= 1/2), also in the backward.
STRAIGHT_SCALED = 4  # v = (sigmoid(a / tau) >= 1/2), gradient of sigmoid(a / tau)
STRAIGHT_NOISY = 5  # v = (sigmoid((a + n) / tau) >= 1/2), gradient of sigmoid((a + n) / tau)
STRAIGHT = (STRAIGHT_SCALED, STRAIGHT_NOISY)


@dataclass(frozen=True)
class GatePlan:
    """The formula of each of the input, forget and output gates and the noise slot it reads."""

    kinds: tuple[int, int, int]
    slots: tuple[int, int, int]  # index into the noise's G axis; 0 when the gate has no noise
    tau: float

    @property
    def noisy(self) -> bool:
        return NOISY in self.kinds or STRAIGHT_NOISY in self.kinds


def gate_plan(spec: GateSpec, training: bool, has_noise: bool) -> GatePlan:
    """Translate ``spec`` in one mode into per-gate formulas, as ``reference.gate_activation``."""
    kinds, slots = [], []
    for k in SIGMOID_GATES:
        kind, slot = PLAIN, 0
        if k in spec.stochastic:
            if not training and spec.eval_gates == "hard":
                kind = HARD
            elif spec.gates == "sharpened" or (spec.gates == "gumbel" and training):
                kind = NOISY if has_noise else SCALED
                slot = spec.stochastic.index(k)
                if training and spec.train_gates == "hard":
                    kind = STRAIGHT_NOISY if has_noise else STRAIGHT_SCALED
        kinds.append(kind)
        slots.append(slot)
    return GatePlan(tuple(kinds), tuple(slots), float(spec.tau))


def launched_gate_plans() -> list[GatePlan]:
    """Every gate plan a ``G2LSTM`` can hand a fused kernel, in a fixed order: :func:`gate_plan` of
    each gate mode, subset of stochastic gates (sorted, as ``G2LSTM`` keeps them), evaluation and
    training mode of the gates, training or not, with noise or without. The temperature only changes a float argument, so it
    is 1 here; a ``GateSpec`` built by hand with the gates in another order gives other slots."""
    plans = set()
    for gates in GATE_MODES:
        for size in range(len(SIGMOID_GATES) + 1):
            for stochastic in combinations(SIGMOID_GATES, size):
                for eval_gates in EVAL_GATES:
                    for train_gates in TRAIN_GATES:
                        if train_gates == "hard" and gates == "sigmoid":
                            continue  # refused by GateSpec
                        spec = GateSpec(gates, 1.0, stochastic, eval_gates, train_gates)
                        for training in (True, False):
                            for has_noise in (True, False):
                                plans.add(gate_plan(spec, training, has_noise and bool(stochastic)))
    return sorted(plans, key=lambda plan: (plan.kinds, plan.slots))


def check_direction_args(x_proj, h0, c0, w_hh, w_hr, lengths) -> None:
    """Shapes a fused implementation relies on; a clear error instead of a wrong result."""
    if x_proj.dim() != 3 or x_proj.shape[-1] % 4:
        raise ValueError(f"x_proj must be (T, N, 4H), got shape {tuple(x_proj.shape)}")
    steps, batch, four_h = x_proj.shape
    hidden = four_h // 4
    h_out = w_hr.shape[0] if w_hr is not None else hidden
    expected = {
        "h0": (h0, (batch, h_out)),
        "c0": (c0, (batch, hidden)),
        "w_hh": (w_hh, (four_h, h_out)),
    }
    if w_hr is not None:
        expected["w_hr"] = (w_hr, (h_out, hidden))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    if lengths is not None and tuple(lengths.shape) != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")


def differentiable_grads(recompute, inputs, grad_outputs) -> list:
    """The gradients of one direction's ``inputs`` as a differentiable function (double backward),
    or under vmap (``is_grads_batched=True``).

    The fused backwards are hand-written loops, not differentiable; under ``create_graph=True``
    they call this instead, which reruns the reference (``recompute(*inputs)``, the same noise)
    on the saved inputs and lets autograd differentiate it: the gradient of a gradient penalty is
    then exact, at the cost of a reference forward and backward.
    """
    wanted = [k for k, t in enumerate(inputs) if t is not None and t.requires_grad]
    grads = [None] * len(inputs)
    if not wanted:
        return grads
    create_graph = torch.is_grad_enabled()  # False for a vmapped backward (is_grads_batched)
    with torch.enable_grad():
        pairs = [(y, g) for y, g in zip(recompute(*inputs), grad_outputs) if g is not None]
        found = torch.autograd.grad([y for y, _ in pairs], [inputs[k] for k in wanted],
                                    [g for _, g in pairs], create_graph=create_graph,
                                    allow_unused=True)
    for k, grad in zip(wanted, found):
        grads[k] = grad if grad is not None else torch.zeros_like(inputs[k])
    return grads
