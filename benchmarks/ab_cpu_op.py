"""A/B of the C++ op: ``cpu_lstm.cpp`` of a git revision against the working tree's, both built
side by side (each under its own op namespace), one forward + backward of one layer direction
each, interleaved, at 1 thread and full width. Checks first that both give the same results.

    python benchmarks/ab_cpu_op.py --base HEAD~1                      # T70-N80-H1150, gumbel gates
    python benchmarks/ab_cpu_op.py --base 7977b7c --size 35,20,256 --repeats 15

Prints medians and the ratio new/old (and the ratio of minima). A kernel change is judged by this
op-level ratio first: the module benchmark (bench_lstm.py) adds the input projection and the
machine's noise around it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from g2lstm.kernels import cpu

REPO = Path(__file__).resolve().parents[1]


def build(source_text: str, namespace: str, folder: Path):
    """Compile the op's source with its library renamed to ``namespace``; its ops."""
    source = folder / f"{namespace}.cpp"
    renamed = source_text.replace("TORCH_LIBRARY(g2lstm_cpu, m)", f"TORCH_LIBRARY({namespace}, m)")
    if renamed == source_text:
        raise SystemExit("cpu_lstm.cpp no longer declares TORCH_LIBRARY(g2lstm_cpu, m)")
    source.write_text(renamed)
    library = folder / f"{namespace}.so"
    cpu._compile(library, source)
    torch.ops.load_library(str(library))
    return getattr(torch.ops, namespace)


def step(op, inputs, reverse=False):
    """Forward and backward of a gumbel-gated direction (input and forget gates noisy, p = 0.2)."""
    x_proj, h0, c0, w_hh, grads = inputs
    batch = x_proj.size(1)
    out = op.forward(x_proj, h0, c0, w_hh, None, None, reverse, [2, 2, 0], [0, 1, 0], 1.0, [123, 456],
                     0.2, 0, 2, 0, batch, True)
    back = op.backward(*grads, out[3], out[4], out[5], w_hh, None, None, reverse, [2, 2, 0], 1.0, True)
    return list(out[:3]) + list(back[:4])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="HEAD", help="git revision of the old cpu_lstm.cpp")
    parser.add_argument("--size", default="70,80,1150", help="T,N,H")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    args = parser.parse_args(argv)
    steps, batch, hidden = (int(v) for v in args.size.split(","))
    old_text = subprocess.run(["git", "show", f"{args.base}:g2lstm/kernels/cpu_lstm.cpp"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as folder:
        ops = {"old": build(old_text, "g2lstm_ab_old", Path(folder)),
               "new": build(cpu.SOURCE.read_text(), "g2lstm_ab_new", Path(folder))}
    gen = torch.Generator().manual_seed(0)
    x_proj = torch.randn(steps, batch, 4 * hidden, generator=gen)
    h0, c0 = (torch.randn(batch, hidden, generator=gen) * 0.1 for _ in range(2))
    w_hh = torch.randn(4 * hidden, hidden, generator=gen) * 0.03
    grads = (torch.randn(steps, batch, hidden, generator=gen) * 1e-3,
             torch.randn(batch, hidden, generator=gen) * 1e-3, torch.randn(batch, hidden, generator=gen) * 1e-3)
    inputs = (x_proj, h0, c0, w_hh, grads)
    names = ("out", "h", "c", "d_x_proj", "d_h0", "d_c0", "d_w_hh")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for reverse in (False, True):
            old, new = step(ops["old"], inputs, reverse), step(ops["new"], inputs, reverse)
            for name, a, b in zip(names, old, new):
                scale = a.abs().max().item() + 1e-30
                diff = (a - b).abs().max().item() / scale
                if diff > 1e-4:
                    raise SystemExit(f"{threads} thread(s), reverse={reverse}: {name} differs by {diff:.1e}")
        times = {name: [] for name in ops}
        for _ in range(args.repeats):
            for name, op in ops.items():
                start = time.perf_counter()
                step(op, inputs)
                times[name].append(time.perf_counter() - start)
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        print(f"{threads} thread(s): old {old * 1e3:.0f} ms, new {new * 1e3:.0f} ms, new/old {new / old:.3f} "
              f"(minima {min(times['new']) / min(times['old']):.3f})", flush=True)


if __name__ == "__main__":
    main()
