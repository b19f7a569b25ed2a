"""Time the parts of one G2LSTM layer on the C++ path: the input projection, the op's forward, its
backward (with dW_hh), and the projection's backward (dx, dW_ih, db), at 1 thread and full width.

    python benchmarks/bench_cpu_parts.py                        # an upper layer of T70-N80-H1150
    python benchmarks/bench_cpu_parts.py --input-size 400 --first-layer   # x needs no gradient

Medians of ``--repeats`` after one warm-up; the machine's other load adds to every part alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from g2lstm.kernels import cpu
from g2lstm.noise import NoiseKey
from g2lstm.reference import GateSpec


def time_parts(steps, batch, input_size, hidden, input_grad) -> list[float]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(steps, batch, input_size, generator=gen).requires_grad_(input_grad)
    w_ih = (torch.randn(4 * hidden, input_size, generator=gen) * 0.03).requires_grad_()
    bias = torch.zeros(4 * hidden, requires_grad=True)
    w_hh = (torch.randn(4 * hidden, hidden, generator=gen) * 0.03).requires_grad_()
    h0 = c0 = torch.zeros(batch, hidden)
    marks = [time.perf_counter()]
    x_proj = cpu.input_projection(x, w_ih, bias)
    marks.append(time.perf_counter())
    out, h, c = cpu.lstm_direction(x_proj, h0, c0, w_hh, None, GateSpec(), True, NoiseKey(1, 0, 0.2, "step"))
    marks.append(time.perf_counter())
    loss = out.square().mean() + h.square().mean() + c.square().mean()
    grad_x_proj, _ = torch.autograd.grad(loss, (x_proj, w_hh), retain_graph=True)
    marks.append(time.perf_counter())
    torch.autograd.grad(x_proj, [t for t in (x, w_ih, bias) if t.requires_grad], grad_x_proj)
    marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:])]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=70)
    parser.add_argument("--batch", type=int, default=80)
    parser.add_argument("--input-size", type=int, default=1150)
    parser.add_argument("--hidden-size", type=int, default=1150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument("--first-layer", action="store_true",
                        help="the layer input needs no gradient (no dx in the projection backward)")
    args = parser.parse_args(argv)
    if not cpu.load_extension():
        parser.error(f"the C++ extension is not available: {cpu.build_error()}")
    names = ("projection forward", "op forward", "op backward (+dW_hh)", "projection backward")
    for threads in args.threads:
        torch.set_num_threads(threads)
        sizes = (args.steps, args.batch, args.input_size, args.hidden_size, not args.first_layer)
        time_parts(*sizes)
        runs = [time_parts(*sizes) for _ in range(args.repeats)]
        medians = [statistics.median(run[k] for run in runs) * 1e3 for k in range(len(names))]
        parts = ", ".join(f"{name} {ms:.0f} ms" for name, ms in zip(names, medians))
        print(f"{threads} thread(s): {parts}; total {sum(medians):.0f} ms")


if __name__ == "__main__":
    main()
