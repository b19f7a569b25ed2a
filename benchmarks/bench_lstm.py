"""Time a training step (forward + backward) of G2LSTM against torch.nn.LSTM.

For each size, every implementation is warmed up, then timed ``--repeats`` times with the
implementations and the CPU thread counts (``--threads``, default 1 and the machine's full width)
interleaved within each repeat (so load on a shared machine hits all of them alike); the median
(and the minimum, less sensitive to load from other processes) is reported with its ratio to
``nn.LSTM`` at the same thread count. Memory: peak CUDA memory allocated
during the step on GPU; on CPU the bytes saved for the backward (distinct storages seen by
``saved_tensors_hooks``), the memory a step holds beyond the weights and activations.

    python benchmarks/bench_lstm.py --device cpu --json benchmarks/results_cpu.json   # 1 and all threads
    python benchmarks/bench_lstm.py --device cuda --json benchmarks/results_gpu.json

G2LSTM runs in training mode with its defaults (Gumbel input and forget gates, p=0.2, step
noise), the workload of the paper; ``nn.LSTM`` runs torch's fused kernel (oneDNN / cuDNN).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from g2lstm import G2LSTM  # noqa: E402
from g2lstm import kernels  # noqa: E402

SIZES = {
    "T35-N20-H256-L2": dict(steps=35, batch=20, input_size=256, hidden_size=256, num_layers=2),
    "T70-N80-H1150-L1": dict(steps=70, batch=80, input_size=400, hidden_size=1150, num_layers=1),
    "T70-N80-H1150-L3": dict(steps=70, batch=80, input_size=400, hidden_size=1150, num_layers=3),
    "T100-N64-H512-L1": dict(steps=100, batch=64, input_size=512, hidden_size=512, num_layers=1),
}


def default_impls(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return ["triton", "reference"] if "triton" in kernels.IMPLEMENTATIONS else ["reference"]
    return ["cpu", "bptt", "reference"]


def make_models(size: dict, impls: list[str], device, dtype) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    shape = dict(input_size=size["input_size"], hidden_size=size["hidden_size"],
                 num_layers=size["num_layers"])
    lstm = nn.LSTM(**shape, device=device, dtype=dtype)
    models = {"nn.LSTM": lstm}
    for impl in impls:
        models[f"G2LSTM[{impl}]"] = G2LSTM.from_lstm(lstm, impl=impl)
    return {name: model.train() for name, model in models.items()}


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(model, x, autocast_dtype) -> None:
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out, (h, c) = model(x)
    (out.float().square().mean() + h.float().square().mean() + c.float().square().mean()).backward()


def timed_step(model, x, autocast_dtype) -> float:
    synchronize(x.device)
    start = time.perf_counter()
    train_step(model, x, autocast_dtype)
    synchronize(x.device)
    return time.perf_counter() - start


def step_memory(model, x, autocast_dtype) -> int:
    """Peak CUDA bytes above the start of the step, or bytes saved for backward on CPU."""
    if x.device.type == "cuda":
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train_step(model, x, autocast_dtype)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        train_step(model, x, autocast_dtype)
    return sum(storages.values())


def run_size(name, size, impls, device, dtype, autocast_dtype, warmup, repeats, widths,
             min_seconds=0.0) -> dict:
    """``widths``: the CPU thread counts to time (``[None]`` on GPU: torch's setting). At least
    ``repeats`` repeats, more if needed to time for ``min_seconds`` (estimated from the last
    warm-up), so that small sizes get as many samples as the load on a shared machine needs."""
    models = make_models(size, impls, device, dtype)
    torch.manual_seed(1)
    x = torch.randn(size["steps"], size["batch"], size["input_size"], device=device, dtype=dtype)
    per_repeat = 0.0
    for width in widths:
        set_width(width)
        for model in models.values():
            for _ in range(max(warmup, 1)):
                seconds = timed_step(model, x, autocast_dtype)
            per_repeat += seconds
    repeats = max(repeats, math.ceil(min_seconds / max(per_repeat, 1e-9)))
    times = {(width, label): [] for width in widths for label in models}
    for _ in range(repeats):
        for width in widths:  # interleaved: each repeat times every model at every width once
            set_width(width)
            for label, model in models.items():
                times[width, label].append(timed_step(model, x, autocast_dtype))
    memory = {label: step_memory(model, x, autocast_dtype) for label, model in models.items()}
    tables = []
    for width in widths:
        base_time = statistics.median(times[width, "nn.LSTM"])
        base_min, base_memory = min(times[width, "nn.LSTM"]), memory["nn.LSTM"]
        rows = {}
        for label in models:
            series = times[width, label]
            rows[label] = dict(
                median_s=statistics.median(series), times_s=series,
                ratio_vs_lstm=statistics.median(series) / base_time,
                min_s=min(series), min_ratio_vs_lstm=min(series) / base_min,
                memory_bytes=memory[label], memory_ratio_vs_lstm=memory[label] / max(base_memory, 1),
            )
        tables.append(dict(threads=width or torch.get_num_threads(), results=rows))
    return dict(size=name, **size, repeats=repeats, widths=tables)


def set_width(width: int | None) -> None:
    if width is not None:
        torch.set_num_threads(width)


def print_table(record: dict, memory_label: str) -> None:
    print(f"\n{record['size']}  (T={record['steps']}, N={record['batch']}, I={record['input_size']}, "
          f"H={record['hidden_size']}, layers={record['num_layers']}; {record['repeats']} repeats)")
    print(f"  {'threads':<8}{'implementation':<22}{'median ms':>11}{'x nn.LSTM':>11}{'min ms':>11}"
          f"{'x nn.LSTM':>11}{memory_label:>16}{'x nn.LSTM':>11}")
    for table in record["widths"]:
        for label, row in table["results"].items():
            print(f"  {table['threads']:<8}{label:<22}{row['median_s'] * 1e3:>11.1f}{row['ratio_vs_lstm']:>11.2f}"
                  f"{row['min_s'] * 1e3:>11.1f}{row['min_ratio_vs_lstm']:>11.2f}"
                  f"{row['memory_bytes'] / 2**20:>16.1f}{row['memory_ratio_vs_lstm']:>11.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--impls", nargs="+", default=None,
                        help=f"G2LSTM implementations to time, among {sorted(kernels.IMPLEMENTATIONS)}")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--autocast", default=None, choices=["bfloat16", "float16"],
                        help="run the step under torch.autocast with this dtype")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps per model and width (at least 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=0.0,
                        help="repeat more where needed to time each size for about this long")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="CPU thread counts to time, interleaved (default: 1 and os.cpu_count())")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cpu":
        widths = args.threads or sorted({1, os.cpu_count() or 1})
    else:
        widths = [None]
    impls = args.impls or default_impls(device)
    unknown = [i for i in impls if i not in kernels.IMPLEMENTATIONS]
    if unknown:
        parser.error(f"unknown --impls {unknown}; choose among {sorted(kernels.IMPLEMENTATIONS)}")
    dtype = getattr(torch, args.dtype)
    autocast_dtype = getattr(torch, args.autocast) if args.autocast else None
    machine = dict(
        platform=platform.platform(), processor=platform.processor() or platform.machine(),
        torch=torch.__version__, cpu_count=os.cpu_count(), device=str(device),
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    )
    print(json.dumps(machine))
    loadavg_start = os.getloadavg()  # the machine's other load, which the ratios' spread depends on
    memory_label = "peak MiB" if device.type == "cuda" else "saved MiB"
    records = []
    for name in args.sizes:
        record = run_size(name, SIZES[name], impls, device, dtype, autocast_dtype,
                          args.warmup, args.repeats, widths, args.min_seconds)
        print_table(record, memory_label)
        records.append(record)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = dict(machine=machine, args={k: str(v) for k, v in vars(args).items()}, sizes=records,
                      loadavg_start=loadavg_start, loadavg_end=os.getloadavg())
        args.json.write_text(json.dumps(report, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
