"""Hand-written backpropagation through time, with the per-step pointwise work pluggable.

The loop is the one of ``cpu_lstm.cpp`` written in Python: per step one GEMM (``torch.addmm``)
and one pointwise update; the backward mirrors it and computes the weight gradients as one large
GEMM each after the loop. :class:`TorchPointwise` does the pointwise work with torch operations
(the portable fallback, any device and dtype); :mod:`g2lstm.kernels.triton_lstm` plugs in fused
Triton kernels. Layout of the saved tensors: see ``cpu_lstm.cpp``.
"""

from __future__ import annotations

from functools import partial

import torch

from .. import reference
from ..noise import gate_noise
from .common import (HARD, NOISY, PLAIN, SCALED, STRAIGHT, STRAIGHT_NOISY, STRAIGHT_SCALED,
                     GatePlan, check_direction_args, differentiable_grads, gate_plan)


def _up(x: torch.Tensor) -> torch.Tensor:
    """At least float32, for the pointwise math of half-precision tensors."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class TorchPointwise:
    """The pointwise step with torch operations; noise materialised by :func:`gate_noise`."""

    def __init__(self, plan: GatePlan, noise_values: torch.Tensor | None):
        self.plan, self.noise_values = plan, noise_values

    def _gate(self, a, k, t):
        """The saved value of gate ``k``: for a straight-through gate its soft value."""
        kind = self.plan.kinds[k]
        if kind == HARD:
            return (a >= 0).to(a.dtype)
        if kind in (SCALED, STRAIGHT_SCALED):
            return torch.sigmoid(a / self.plan.tau)
        if kind in (NOISY, STRAIGHT_NOISY):
            noise = self.noise_values[t if self.noise_values.shape[0] > 1 else 0, :, self.plan.slots[k]]
            return torch.sigmoid((a + noise) / self.plan.tau)
        return torch.sigmoid(a)

    def _value(self, saved, k):
        """The value gate ``k`` takes in the step, from its saved value."""
        return (saved >= 0.5).to(saved.dtype) if self.plan.kinds[k] in STRAIGHT else saved

    def forward_step(self, gates, c_prev, c_new, r_out, t):
        """In place: ``gates`` (N, 4H) pre-activations -> saved gate values; ``c_new``, ``r_out`` written."""
        a_i, a_f, a_g, a_o = gates.chunk(4, dim=-1)
        i, f, o = self._gate(a_i, 0, t), self._gate(a_f, 1, t), self._gate(a_o, 2, t)
        g = torch.tanh(a_g)
        c = self._value(f, 1) * c_prev + self._value(i, 0) * g
        torch.mul(self._value(o, 2), torch.tanh(c), out=r_out)
        c_new.copy_(c)
        a_i.copy_(i), a_f.copy_(f), a_g.copy_(g), a_o.copy_(o)

    def _slope(self, v, k):
        kind = self.plan.kinds[k]
        if kind == HARD:
            return torch.zeros_like(v)
        slope = v * (1 - v)
        return slope if kind == PLAIN else slope / self.plan.tau

    def backward_step(self, gates, c_prev, c_new, dr, dc, da, r_out, active):
        """``da`` (N, 4H) written, ``dc`` updated in place; rows with ``active`` False pass dc."""
        saved_i, saved_f, g, saved_o = _up(gates).chunk(4, dim=-1)
        i, f, o = self._value(saved_i, 0), self._value(saved_f, 1), self._value(saved_o, 2)
        dr = _up(dr)
        tc = torch.tanh(_up(c_new))
        dc_total = _up(dc) + dr * o * (1 - tc * tc)
        d = torch.cat([
            dc_total * g * self._slope(saved_i, 0),
            dc_total * _up(c_prev) * self._slope(saved_f, 1),
            dc_total * i * (1 - g * g),
            dr * tc * self._slope(saved_o, 2),
        ], dim=-1)
        dc_prev = dc_total * f
        if r_out is not None:
            r = o * tc
            r_out.copy_(r if active is None else r * active.unsqueeze(-1))
        if active is not None:
            d = d * active.unsqueeze(-1)
            dc_prev = torch.where(active.unsqueeze(-1), dc_prev, _up(dc))
        da.copy_(d)
        dc.copy_(dc_prev)


class BPTTFunction(torch.autograd.Function):
    """One direction of one layer with a hand-written backward; ``pointwise`` does the gate math.

    ``x_proj``'s dtype is the dtype of the GEMMs and of the saved gates and hidden states (the
    autocast dtype on GPU); the cell state is kept in ``state_dtype``. ``recompute(x_proj, h0,
    c0, w_hh, w_hr)`` is the reference of the same direction, differentiated instead of the
    hand-written backward under ``create_graph=True``.
    """

    @staticmethod
    def forward(ctx, x_proj, h0, c0, w_hh, w_hr, lengths, reverse, pointwise, state_dtype, recompute):
        steps, batch, four_h = x_proj.shape
        hidden = four_h // 4
        dtype = x_proj.dtype
        h_out = h0.shape[-1]
        w_hh_t = w_hh.to(dtype).t()
        w_hr_t = None if w_hr is None else w_hr.to(dtype).t()
        active = reference.step_mask(lengths, steps, x_proj.device)
        save = any(ctx.needs_input_grad[:5])
        gates = x_proj.new_empty((steps if save else 1, batch, four_h))
        cs = x_proj.new_empty((steps + 1, batch, hidden), dtype=state_dtype)
        hs = x_proj.new_empty((steps + 1, batch, h_out))
        r = x_proj.new_empty((batch, hidden)) if w_hr is not None else None
        first = steps if reverse else 0
        cs[first].copy_(c0)
        hs[first].copy_(h0)
        # per-step views made once: indexing inside the loop costs Python time on every step
        x_t, g_t, h_t, c_t = x_proj.unbind(0), gates.unbind(0), hs.unbind(0), cs.unbind(0)
        keep_t = None if active is None else active.unsqueeze(-1).unbind(0)
        for s in range(steps):
            t = steps - 1 - s if reverse else s
            t_in, t_out = (t + 1, t) if reverse else (t, t + 1)
            gate = g_t[t if save else 0]
            torch.addmm(x_t[t], h_t[t_in], w_hh_t, out=gate)
            pointwise.forward_step(gate, c_t[t_in], c_t[t_out], r if r is not None else h_t[t_out], t)
            if w_hr_t is not None:
                torch.mm(r, w_hr_t, out=h_t[t_out])
            if keep_t is not None:
                h_t[t_out].copy_(torch.where(keep_t[t], h_t[t_out], h_t[t_in]))
                c_t[t_out].copy_(torch.where(keep_t[t], c_t[t_out], c_t[t_in]))
        out = (hs[:-1] if reverse else hs[1:]).clone()
        if active is not None:
            out.mul_(active.unsqueeze(-1))
        last = 0 if reverse else steps
        if save:
            ctx.save_for_backward(gates, cs, hs, w_hh, w_hr, active, x_proj, h0, c0)
        ctx.reverse, ctx.pointwise, ctx.recompute = reverse, pointwise, recompute
        return out, hs[last].clone(), cs[last].clone()

    @staticmethod
    def backward(ctx, grad_out, grad_h, grad_c):
        gates, cs, hs, w_hh, w_hr, active, x_proj, h0, c0 = ctx.saved_tensors
        batched = any(g is not None and torch._C._functorch.is_legacy_batchedtensor(g)
                      for g in (grad_out, grad_h, grad_c))
        # create_graph=True: the gradients must be differentiable; vmap over the backward
        # (is_grads_batched=True): the in-place loop below cannot take batched gradients
        if torch.is_grad_enabled() or batched:
            grads = differentiable_grads(ctx.recompute, (x_proj, h0, c0, w_hh, w_hr),
                                         (grad_out, grad_h, grad_c))
            return (*grads, None, None, None, None, None)
        reverse, pointwise = ctx.reverse, ctx.pointwise
        steps, batch, four_h = gates.shape
        dtype = gates.dtype
        w_hh_c = w_hh.to(dtype)
        w_hr_c = None if w_hr is None else w_hr.to(dtype)
        grad_out = torch.zeros_like(hs[1:]) if grad_out is None else grad_out.to(dtype)
        if active is not None:  # outputs past a row's end are constant zeros
            grad_out = grad_out * active.unsqueeze(-1)
        dh = (torch.zeros_like(hs[0]) if grad_h is None else grad_h.to(dtype))
        dc = (torch.zeros_like(cs[0]) if grad_c is None else grad_c.to(cs.dtype)).clone()
        da = torch.empty_like(gates)
        dr = None
        dh_all = r_all = None
        if w_hr is not None:
            dh_all = torch.empty_like(hs[1:])
            r_all = gates.new_empty((steps, batch, cs.shape[-1]))
        t_last = 0 if reverse else steps - 1
        dh = dh + grad_out[t_last]
        g_t, c_t, da_t, go_t = gates.unbind(0), cs.unbind(0), da.unbind(0), grad_out.unbind(0)
        keep_t = [None] * steps if active is None else active.unbind(0)
        for s in range(steps - 1, -1, -1):
            t = steps - 1 - s if reverse else s
            t_in, t_out = (t + 1, t) if reverse else (t, t + 1)
            keep = keep_t[t]
            if w_hr is not None:
                dh_all[t] = dh if keep is None else dh * keep.unsqueeze(-1)
                dr = dh @ w_hr_c
            pointwise.backward_step(g_t[t], c_t[t_in], c_t[t_out], dr if dr is not None else dh,
                                    dc, da_t[t], None if r_all is None else r_all[t], keep)
            if s > 0:
                dh_next = torch.addmm(go_t[t + 1 if reverse else t - 1], da_t[t], w_hh_c)
            else:
                dh_next = da_t[t] @ w_hh_c
            if keep is not None:
                dh_next = dh_next + dh * (~keep).unsqueeze(-1)
            dh = dh_next
        flat = da.view(steps * batch, four_h)
        h_prev = (hs[1:] if reverse else hs[:-1]).reshape(steps * batch, hs.shape[-1])
        dw_hh = (flat.t() @ h_prev).to(w_hh.dtype)
        dw_hr = None
        if w_hr is not None:
            dw_hr = (dh_all.view(steps * batch, hs.shape[-1]).t()
                     @ r_all.view(steps * batch, cs.shape[-1])).to(w_hr.dtype)
        return da, dh, dc, dw_hh, dw_hr, None, None, None, None, None


def run_bptt(x_proj, h0, c0, w_hh, w_hr, lengths, reverse, pointwise, state_dtype, spec, training,
             noise):
    """Apply :class:`BPTTFunction` with outputs in the dtypes the reference would give."""
    recompute = partial(reference.lstm_direction, spec=spec, training=training, noise=noise,
                        lengths=lengths, reverse=reverse)
    out, h_n, c_n = BPTTFunction.apply(x_proj, h0, c0, w_hh, w_hr, lengths, reverse, pointwise,
                                       state_dtype, recompute)
    result_dtype = torch.promote_types(x_proj.dtype, torch.promote_types(h0.dtype, c0.dtype))
    return out.to(result_dtype), h_n.to(result_dtype), c_n.to(result_dtype)


def lstm_direction(x_proj, h0, c0, w_hh, w_hr, spec, training, noise=None, lengths=None,
                   reverse=False, record=False):
    """:func:`g2lstm.reference.lstm_direction` with the hand-written BPTT (torch pointwise ops)."""
    if record:
        raise ValueError("the BPTT kernel cannot record states and gates; only the reference records them")
    check_direction_args(x_proj, h0, c0, w_hh, w_hr, lengths)
    plan = gate_plan(spec, training, noise is not None and bool(spec.stochastic))
    noise_values = None
    if plan.noisy:
        steps, batch = x_proj.shape[:2]
        noise_values = gate_noise(noise, steps, batch, len(spec.stochastic), c0.shape[-1],
                                  x_proj.device, x_proj.dtype)
    dtype = x_proj.dtype
    return run_bptt(x_proj, h0.to(dtype), c0.to(dtype), w_hh, w_hr, lengths, reverse,
                    TorchPointwise(plan, noise_values), dtype, spec, training, noise)
