"""Compression of LSTM gate weights, as in the paper's robustness experiments.

Every function takes any module that contains ``nn.LSTM`` layers (``G2LSTM`` is a subclass, so it
counts), leaves the argument alone and returns ``(compressed deep copy, report)``.

- :func:`round_clip` rounds the chosen gate blocks to multiples of ``precision`` and optionally
  clips them to ``[-clip, clip]`` (paper: LM 0.2 / 0.4, MT 0.5 / 1.0);
- :func:`low_rank` replaces each chosen gate block by its best rank-``k`` approximation (SVD);
- :func:`gate_weight_stats` measures the blocks' magnitudes (is a rounding grid coarse for them?);
- :func:`quantize_int8` (beyond the paper) is PyTorch's int8 dynamic quantization of the LSTM
  layers, after turning each ``G2LSTM`` into the plain ``nn.LSTM`` it is at inference.

A "gate block" is the ``hidden_size`` rows of one gate (order i, f, g, o as in ``nn.LSTM``) in one
``weight_ih_l{k}`` or ``weight_hh_l{k}`` (and ``_reverse``). Biases, projections
(``weight_hr_l{k}``), unchosen gates and every other parameter stay bit-identical.
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from typing import Iterable, Iterator

import torch
from torch import nn

from .protocol import lstm_layers
from .reference import GATE_NAMES  # the row-block order of nn.LSTM's stacked weights

_GATE_WEIGHT = re.compile(r"^weight_(ih|hh)_l(\d+)(_reverse)?$")


def _gate_indices(gates: Iterable[str]) -> list[int]:
    if isinstance(gates, str):
        gates = (gates,)
    gates = tuple(gates)
    unknown = [g for g in gates if g not in GATE_NAMES]
    if unknown or not gates:
        raise ValueError(f"gates must be a non-empty subset of {GATE_NAMES}, got {gates!r}")
    return [GATE_NAMES.index(g) for g in gates]


def gate_blocks(model: nn.Module, gates: Iterable[str] = ("input", "forget")) -> Iterator[dict]:
    """Yield one dict per targeted gate block: names, the parameter, and the row slice.

    The ``block`` entry is a view into the parameter, so writing to it under ``torch.no_grad()``
    changes the model.
    """
    indices = _gate_indices(gates)
    for module_name, lstm in lstm_layers(model).items():
        hidden = lstm.hidden_size
        for param_name, param in lstm.named_parameters(recurse=False):
            if not _GATE_WEIGHT.match(param_name):
                continue
            for gi in indices:
                rows = slice(gi * hidden, (gi + 1) * hidden)
                yield {
                    "module": module_name,
                    "param": param_name,
                    "gate": GATE_NAMES[gi],
                    "rows": rows,
                    "block": param.data[rows],
                }


def _entropy_bits(values: torch.Tensor) -> float:
    """Empirical entropy of the values in bits: what an entropy coder could reach per weight."""
    _, counts = torch.unique(values, return_counts=True)
    p = counts.double() / counts.sum()
    return float(-(p * p.log2()).sum())


def _check_positive(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number{' or None' if allow_none else ''}, got {value!r}")


@torch.no_grad()
def gate_weight_stats(model: nn.Module, gates: Iterable[str] = ("input", "forget"),
                      precision: float | None = None) -> dict[str, dict[str, float]]:
    """Magnitudes of the chosen gate blocks, pooled over layers and directions, per gate.

    Per gate: ``weights``, ``mean_abs``, ``std``, ``max_abs`` and, given a rounding
    ``precision``, ``share_rounded_to_zero`` (``|w| < precision / 2``: what rounding zeroes).
    Tells whether a fixed rounding grid is coarse or fine for these weights.
    """
    _check_positive("precision", precision, allow_none=True)
    pooled: dict[str, list[torch.Tensor]] = {}
    for b in gate_blocks(model, gates):
        pooled.setdefault(b["gate"], []).append(b["block"].detach().flatten().double())
    result = {}
    for gate, parts in pooled.items():
        w = torch.cat(parts)
        result[gate] = {"weights": int(w.numel()), "mean_abs": float(w.abs().mean()), "std": float(w.std()),
                        "max_abs": float(w.abs().max())}
        if precision is not None:
            result[gate]["share_rounded_to_zero"] = float((w.abs() < precision / 2).double().mean())
    return result


@torch.no_grad()
def round_clip(model: nn.Module, precision: float, clip: float | None = None,
               gates: Iterable[str] = ("input", "forget"), relative: bool = False) -> tuple[nn.Module, dict]:
    """Round the chosen gate blocks to multiples of ``precision``, then clip to ``[-clip, clip]``.

    With ``relative=True`` (beyond the paper) ``precision`` and ``clip`` are in units of each
    block's standard deviation, so the grid follows the weights' scale instead of being fixed.
    Report: per block the number of distinct values left and the bits per weight they need
    (``ceil(log2(distinct))`` for a fixed-length code, and the empirical entropy), plus totals.
    """
    _check_positive("precision", precision)
    _check_positive("clip", clip, allow_none=True)
    compressed = copy.deepcopy(model)
    blocks = []
    all_values = []
    for b in gate_blocks(compressed, gates):
        w = b["block"]
        scale = float(w.double().std()) if relative else 1.0
        if not scale > 0:
            raise ValueError(f"relative rounding needs a block with spread; {b['module']}.{b['param']} "
                             f"{b['gate']} gate has standard deviation {scale}")
        step = precision * scale
        rounded = torch.round(w / step) * step
        if clip is not None:
            rounded = rounded.clamp(-clip * scale, clip * scale)
        w.copy_(rounded)
        distinct = int(torch.unique(w).numel())
        all_values.append(w.flatten())
        blocks.append({
            "module": b["module"], "param": b["param"], "gate": b["gate"],
            "shape": list(w.shape), "step": step,
            "distinct_values": distinct,
            "bits_per_weight": math.ceil(math.log2(distinct)) if distinct > 1 else 0,
            "entropy_bits_per_weight": _entropy_bits(w),
            "max_abs": float(w.abs().max()),
        })
    values = torch.cat(all_values)
    distinct = int(torch.unique(values).numel())
    report = {
        "method": "round_clip" if clip is not None else "round", "relative": relative,
        "precision": precision, "clip": clip, "gates": list(gates) if not isinstance(gates, str) else [gates],
        "blocks": blocks,
        "weights": int(values.numel()),
        "distinct_values": distinct,
        "bits_per_weight": math.ceil(math.log2(distinct)) if distinct > 1 else 0,
        "entropy_bits_per_weight": _entropy_bits(values),
    }
    return compressed, report


def best_rank_approximation(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """The best rank-``rank`` approximation of a 2-D tensor (Eckart-Young), computed in float64."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    k = min(rank, s.numel())
    return ((u[:, :k] * s[:k]) @ vh[:k]).to(matrix.dtype)


@torch.no_grad()
def low_rank(model: nn.Module, rank: int, gates: Iterable[str] = ("input", "forget")) -> tuple[nn.Module, dict]:
    """Replace each chosen gate block ``W`` (``hidden x in``) by its best rank-``rank`` approximation.

    The copy keeps dense weights (so it runs as before); the report counts the parameters of the
    factorised form ``U_k (hidden x k) @ V_k (k x in)``: per block and in total, against the dense
    blocks, and the ratio for the whole model's parameters.
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"rank must be a positive int, got {rank!r}")
    compressed = copy.deepcopy(model)
    blocks = []
    for b in gate_blocks(compressed, gates):
        w = b["block"]
        rows, cols = w.shape
        k = min(rank, rows, cols)
        w.copy_(best_rank_approximation(w, k))
        dense, factored = rows * cols, k * (rows + cols)
        blocks.append({
            "module": b["module"], "param": b["param"], "gate": b["gate"], "shape": [rows, cols],
            "rank": k, "params_dense": dense, "params_low_rank": factored,
            # Storing the factors only pays when k < rows*cols/(rows+cols); otherwise keep W.
            "params_stored": min(dense, factored),
        })
    dense = sum(b["params_dense"] for b in blocks)
    stored = sum(b["params_stored"] for b in blocks)
    model_params = sum(p.numel() for p in model.parameters())
    report = {
        "method": "svd", "rank": rank, "gates": list(gates) if not isinstance(gates, str) else [gates],
        "blocks": blocks,
        "params_targeted_dense": dense,
        "params_targeted_compressed": stored,
        "targeted_size_ratio": stored / dense,
        "model_params": model_params,
        "model_params_compressed": model_params - dense + stored,
        "model_size_ratio": (model_params - dense + stored) / model_params,
    }
    return compressed, report


@torch.no_grad()
def _inference_lstm(layer: nn.LSTM) -> nn.LSTM:
    """The ``nn.LSTM`` that computes what ``layer`` computes in evaluation mode."""
    return layer if type(layer) is nn.LSTM else layer.to_lstm()


def to_plain_lstm(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every ``G2LSTM`` replaced by the ``nn.LSTM`` it is at
    inference (for ``gates='sharpened'`` the temperature is folded into the gate rows)."""
    model = copy.deepcopy(model)
    if isinstance(model, nn.LSTM):
        return _inference_lstm(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.LSTM) and type(module) is not nn.LSTM:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, _inference_lstm(module))
    return model


@torch.no_grad()
def quantize_int8(model: nn.Module) -> tuple[nn.Module, dict]:
    """Int8 dynamic quantization (``torch.ao.quantization.quantize_dynamic``) of all LSTM layers.

    Unlike the other methods this quantizes every gate and runs on CPU only (PyTorch's quantized
    kernels). Report: bytes of the LSTM layers' parameters before (float32) and after (int8
    weights with a float scale and int zero point per tensor; biases stay float32).
    """
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    plain = to_plain_lstm(model).cpu().eval()
    layers = list(lstm_layers(plain).items())
    weights = sum(p.numel() for _, m in layers for n, p in m.named_parameters() if n.startswith("weight"))
    biases = sum(p.numel() for _, m in layers for n, p in m.named_parameters() if n.startswith("bias"))
    n_weight_tensors = sum(n.startswith("weight") for _, m in layers for n, _ in m.named_parameters())
    before = 4 * (weights + biases)
    after = weights + 8 * n_weight_tensors + 4 * biases
    # quantize_dynamic swaps children only, so a bare LSTM is wrapped for the swap.
    wrapped = plain if type(plain) is not nn.LSTM else nn.Sequential(plain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        quantized = quantize_dynamic(wrapped, {nn.LSTM: default_dynamic_qconfig}, dtype=torch.qint8)
        if wrapped is not plain:
            quantized = quantized[0]
        qlayers = [m for m in quantized.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.LSTM)]
    if len(qlayers) != len(layers):
        raise RuntimeError(f"quantize_dynamic converted {len(qlayers)} of {len(layers)} LSTM layers")
    report = {"method": "int8_dynamic", "layers": len(qlayers), "lstm_bytes_fp32": before,
              "lstm_bytes_int8": after, "size_ratio": after / before}
    return quantized, report


def compress(model: nn.Module, method: str, **options) -> tuple[nn.Module, dict]:
    """Dispatch by name, used by configs: ``round`` / ``round_clip`` / ``svd`` / ``int8``, and
    ``round_relative`` (round & clip with ``precision`` and ``clip`` in block standard deviations)."""
    if method in ("round", "round_clip", "round_relative"):
        if method == "round":
            options["clip"] = None
        return round_clip(model, relative=method == "round_relative", **options)
    if method == "svd":
        return low_rank(model, **options)
    if method == "int8":
        return quantize_int8(model)
    raise ValueError(f"method must be one of 'round', 'round_clip', 'round_relative', 'svd', 'int8', got {method!r}")


def evaluate_under_compression(model: nn.Module, evaluate, methods: dict[str, dict],
                               gates: Iterable[str] = ("input", "forget"), int8: bool = False) -> list[dict]:
    """``evaluate(model)`` uncompressed and under each of ``methods`` (``{label: {"method": ...,
    **options}}``, see :func:`compress`), and optionally int8. One row per label: ``value``,
    ``change`` against the uncompressed value and a summary of the compression report."""
    rows = [{"method": "original", "value": float(evaluate(model)), "change": 0.0}]
    gates = [gates] if isinstance(gates, str) else list(gates)
    runs = [(label, dict(options)) for label, options in methods.items()]
    if int8:
        runs.append(("int8", {"method": "int8"}))
    for label, options in runs:
        method = options.pop("method", None)
        if method is None:
            raise ValueError(f"compression {label!r} needs a 'method' ('round', 'round_clip', 'round_relative', "
                             "'svd' or 'int8')")
        if method != "int8":
            options["gates"] = gates
        small, report = compress(model, method, **options)
        value = float(evaluate(small))
        summary = {k: v for k, v in report.items() if k != "blocks"}
        rows.append({"method": label, "value": value, "change": value - rows[0]["value"], "report": summary})
    return rows
