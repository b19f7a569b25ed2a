"""``g2lstm.trace.record``: a model's forward under the trace against its own forward, side by side.

Each case times the model's forward alone and the same forward inside ``trace.record(model)``
(default ``grad=False``), interleaved within every repeat and at every thread width
(``torch.set_num_threads``), so load from other processes hits both alike. Cases:

- ``lm_eval``: an AWD-LSTM language model (``g2lstm.lm.model.AWDLSTM``, G2 cell, tied weights) of
  ``--layers`` x ``--hidden`` units (embedding ``--hidden``), a ``--vocab`` word softmax, on
  ``--steps`` x ``--batch`` words, in evaluation mode;
- ``lm_train``: the same model in training mode: Gumbel gate noise (p = 0.2), weight drop and
  dropouts on;
- ``lstm_eval`` / ``lstm_train`` (not run by default): the model's recurrent layers alone, where
  the trace's share of the time is largest (no embedding, no softmax).

All forwards run under ``torch.no_grad()``. The table gives per case and width the medians of the
repeats and the ratio traced / untraced (of medians; of minima in brackets); ``--json`` writes them
with every repeat's time and the load average at the start and end of the run.

    python benchmarks/bench_trace.py --repeats 7 --json benchmarks/results_trace.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from g2lstm import trace  # noqa: E402
from g2lstm.lm.model import AWDLSTM  # noqa: E402

CASES = ("lm_eval", "lm_train", "lstm_eval", "lstm_train")


def make_case(name: str, args) -> tuple[torch.nn.Module, callable]:
    """The model of a case (in its mode) and a function running one forward of it."""
    torch.manual_seed(0)
    model = AWDLSTM(args.vocab, emsize=args.hidden, nhid=args.hidden, nlayers=args.layers, cell="g2lstm")
    model.train(name.endswith("_train"))
    words = torch.randint(args.vocab, (args.steps, args.batch))
    hidden = model.init_hidden(args.batch)
    if name.startswith("lm"):
        return model, lambda: model(words, hidden)
    rnns = model.rnns
    x = torch.randn(args.steps, args.batch, args.hidden)

    def recurrent():
        out = x
        for k, rnn in enumerate(rnns):
            out, _ = rnn(out, hidden[k])
        return out

    return rnns, recurrent


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def traced(model, forward):
    def run():
        with trace.record(model):
            forward()

    return run


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=["lm_eval", "lm_train"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--vocab", type=int, default=10000, help="the softmax's words (Brown's 10k)")
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7, help="at least 5")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats must be at least 5 (medians of >= 5), got {args.repeats}")

    load_start = os.getloadavg()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    cases = {name: make_case(name, args) for name in args.cases}
    runs = {(name, width, kind): [] for name in cases for width in args.threads for kind in ("forward", "traced")}
    with torch.no_grad():
        for repeat in range(-args.warmup, args.repeats):
            for width in args.threads:
                torch.set_num_threads(width)
                for name, (model, forward) in cases.items():
                    pair = (("forward", forward), ("traced", traced(model, forward)))
                    for kind, function in pair if repeat % 2 == 0 else pair[::-1]:  # alternate the order
                        seconds = timed(function)
                        if repeat >= 0:
                            runs[name, width, kind].append(seconds)
    load_end = os.getloadavg()

    results = []
    print(f"{'case':<11} {'threads':>7} {'forward ms':>11} {'traced ms':>10} {'ratio (of minima)':>18}")
    for name in cases:
        for width in args.threads:
            forward, with_trace = runs[name, width, "forward"], runs[name, width, "traced"]
            ratio = statistics.median(with_trace) / statistics.median(forward)
            ratio_min = min(with_trace) / min(forward)
            print(f"{name:<11} {width:>7} {1e3 * statistics.median(forward):>11.1f} "
                  f"{1e3 * statistics.median(with_trace):>10.1f} {ratio:>8.2f}x ({ratio_min:.2f}x)")
            results.append(dict(case=name, threads=width, forward_median_s=statistics.median(forward),
                                traced_median_s=statistics.median(with_trace), ratio_of_medians=ratio,
                                ratio_of_minima=ratio_min, forward_s=forward, traced_s=with_trace))
    print(f"load average: start {load_start[0]:.2f}, end {load_end[0]:.2f}")
    if args.json is not None:
        report = dict(
            command="python " + " ".join(sys.argv), started_utc=started, commit=git_commit(),
            torch=torch.__version__, machine=platform.machine(), processor=platform.processor(),
            cpu_count=os.cpu_count(), load_average_start=load_start, load_average_end=load_end,
            args={k: str(v) for k, v in vars(args).items()}, results=results,
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
