"""Compression of LSTM gate weights, as in the paper's robustness experiments.

Every function takes any module that contains ``nn.LSTM`` layers (``G2LSTM`` is a subclass, so it
counts), leaves the argument alone and returns ``(compressed deep copy, report)``.

- :func:`round_clip` rounds the chosen gate blocks to multiples of ``precision`` and optionally
  clips them to ``[-clip, clip]`` (paper: LM 0.2 / 0.4, MT 0.5 / 1.0);
- :func:`low_rank` replaces each chosen gate block by its best rank-``k`` approximation (SVD);
- :func:`gate_weight_stats` measures the blocks' magnitudes (is a rounding grid coarse for them?);
- :func:`quantize` (beyond the paper) replaces each chosen gate block by ``bits``-bit integer codes
  times one scale per row (symmetric, ``max |row| / (2**(bits-1) - 1)``), dequantised;
- :func:`quantize_int8` (beyond the paper) is PyTorch's int8 dynamic quantization of the LSTM
  layers, after turning each ``G2LSTM`` into the plain ``nn.LSTM`` it is at inference.

:func:`export` writes a model with its compressed gate blocks stored as packed codes, one file to
ship; :func:`load_export` (and :func:`g2lstm.load`, for a task checkpoint) reads it back to the
weights the in-memory compression gives, bit for bit.

A "gate block" is the ``hidden_size`` rows of one gate (order i, f, g, o as in ``nn.LSTM``) in one
``weight_ih_l{k}`` or ``weight_hh_l{k}`` (and ``_reverse``). Biases, projections
(``weight_hr_l{k}``), unchosen gates and every other parameter stay bit-identical.
"""

from __future__ import annotations

import copy
import math
import os
import re
import warnings
from pathlib import Path
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
        # + 0.0 turns the -0.0 of small negative weights into 0.0: one bit pattern per grid value,
        # so that an exported block's codebook (its distinct values) rebuilds it bit for bit.
        rounded = torch.round(w / step) * step + 0.0
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


QUANTIZE_BITS = range(2, 9)  # 1 bit would leave the symmetric codes {0} only


def _check_bits(bits) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in QUANTIZE_BITS:
        raise ValueError(f"bits must be an int from {QUANTIZE_BITS.start} to {QUANTIZE_BITS.stop - 1}, got {bits!r}")


def _row_codes(block: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row codes of a 2-D block: integers in ``[-q, q]`` (``q = 2**(bits-1) - 1``)
    and one scale per row, ``max |row| / q``. :func:`quantize` and :func:`export` both use this, so
    the file holds the codes of exactly the weights the in-memory compression gives."""
    q = 2 ** (bits - 1) - 1
    scales = block.abs().amax(dim=1) / q
    # An all-zero row has scale 0; dividing it by 1 instead gives its codes, 0.
    divisor = torch.where(scales > 0, scales, torch.ones_like(scales)).unsqueeze(1)
    codes = torch.round(block / divisor).clamp_(-q, q).to(torch.int64)
    return codes, scales


def _from_row_codes(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return codes.to(scales.dtype) * scales.unsqueeze(1)


@torch.no_grad()
def quantize(model: nn.Module, bits: int = 8, gates: Iterable[str] = ("input", "forget")) -> tuple[nn.Module, dict]:
    """Replace each row of the chosen gate blocks by ``bits``-bit symmetric integer codes times the
    row's scale ``max |row| / (2**(bits-1) - 1)`` (beyond the paper; int8 for ``bits=8``).

    Unlike :func:`quantize_int8` it touches only the chosen gate blocks, keeps a float model that
    runs anywhere, and is what :func:`export` stores. Report: the bits per weight of the codes and
    of the scales (one float per row), per block the largest error ``max |w' - w|``.
    """
    _check_bits(bits)
    compressed = copy.deepcopy(model)
    blocks = []
    for b in gate_blocks(compressed, gates):
        w = b["block"]
        original = w.clone()
        w.copy_(_from_row_codes(*_row_codes(w, bits)))
        blocks.append({"module": b["module"], "param": b["param"], "gate": b["gate"], "shape": list(w.shape),
                       "max_error": float((w - original).abs().max())})
    weights = sum(math.prod(b["shape"]) for b in blocks)
    rows = sum(b["shape"][0] for b in blocks)
    report = {
        "method": "quantize", "bits": bits, "gates": list(gates) if not isinstance(gates, str) else [gates],
        "blocks": blocks, "weights": weights, "bits_per_weight": bits,
        "scale_bits_per_weight": 32 * rows / weights if weights else 0.0,
        "max_error": max((b["max_error"] for b in blocks), default=0.0),
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


METHODS = ("round", "round_clip", "round_relative", "svd", "quantize", "int8")


def compress(model: nn.Module, method: str, **options) -> tuple[nn.Module, dict]:
    """Dispatch by name, used by configs: ``round`` / ``round_clip`` / ``svd`` / ``quantize`` /
    ``int8``, and ``round_relative`` (round & clip with ``precision`` and ``clip`` in block
    standard deviations)."""
    if method in ("round", "round_clip", "round_relative"):
        if method == "round":
            options["clip"] = None
        return round_clip(model, relative=method == "round_relative", **options)
    if method == "svd":
        return low_rank(model, **options)
    if method == "quantize":
        return quantize(model, **options)
    if method == "int8":
        return quantize_int8(model)
    raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")


def evaluate_under_compression(model: nn.Module, evaluate, methods: dict[str, dict],
                               gates: Iterable[str] = ("input", "forget"), int8: bool = False,
                               export_to: str | os.PathLike | None = None, source=None) -> list[dict]:
    """``evaluate(model)`` uncompressed and under each of ``methods`` (``{label: {"method": ...,
    **options}}``, see :func:`compress`), and optionally int8. One row per label: ``value``,
    ``change`` against the uncompressed value and a summary of the compression report.

    With ``export_to`` (a folder), each method with a packed form (:data:`PACKED_METHODS`) is
    written there by :func:`export` as ``<label>.pt``, read back by :func:`load_export`, and it is
    the model read back from the file that is evaluated; the row gets ``bytes``: ``file``,
    ``float32`` (the same model exported with nothing packed, ``float32.pt``), ``ratio`` (file /
    float32), ``blocks_packed`` and ``blocks_float32`` (the chosen gate blocks as stored and in
    float32) and ``checkpoint`` (the file ``source`` was loaded from, if any). ``source``: what to
    export, when ``model`` came from a checkpoint (the path, or the model :func:`g2lstm.load`
    returned, whose ``.model`` is ``model``), so that the file carries what loading it needs.
    """
    rows = [{"method": "original", "value": float(evaluate(model)), "change": 0.0}]
    gates = [gates] if isinstance(gates, str) else list(gates)
    runs = [(label, dict(options)) for label, options in methods.items()]
    if int8:
        runs.append(("int8", {"method": "int8"}))
    float32_bytes = None
    for label, options in runs:
        method = options.pop("method", None)
        if method is None:
            raise ValueError(f"compression {label!r} needs a 'method' (one of {', '.join(map(repr, METHODS))})")
        sizes = None
        if export_to is not None and method in PACKED_METHODS:
            what = model if source is None else source
            if float32_bytes is None:
                float32_bytes = export(what, Path(export_to) / "float32.pt")["bytes"]
            sizes = export(what, Path(export_to) / f"{label}.pt", method, gates=gates, **options)
            small, report = load_export(sizes["path"], model=copy.deepcopy(model)), sizes["report"]
        else:
            if method != "int8":
                options["gates"] = gates
            small, report = compress(model, method, **options)
        value = float(evaluate(small))
        summary = {k: v for k, v in report.items() if k != "blocks"}
        row = {"method": label, "value": value, "change": value - rows[0]["value"], "report": summary}
        if sizes is not None:
            row["bytes"] = {"file": sizes["bytes"], "float32": float32_bytes, "ratio": sizes["bytes"] / float32_bytes,
                            "blocks_packed": sizes["blocks_packed_bytes"], "blocks_float32": sizes["blocks_float32_bytes"],
                            "checkpoint": sizes["checkpoint_bytes"]}
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- shipping a compressed model
#
# An export is one file written by torch.save (read back with weights_only=True, so it unpickles no
# code): a dict with "format", "version", "compression" (the compress() spec it was made with),
# "rest_dtype", "source" (what rebuilds the model) and "tensors", one entry per key of the model's
# state_dict, in its order (see docs/compression.md, "Shipping a compressed model").

EXPORT_FORMAT = "g2lstm-export"
EXPORT_VERSION = 1
PACKED_METHODS = ("round", "round_clip", "round_relative", "quantize")  # what a file stores as codes
_PACKED_OPTIONS = {"round": ("precision",), "round_clip": ("precision", "clip"),
                   "round_relative": ("precision", "clip"), "quantize": ("bits",)}
REST_DTYPES = ("float32", "float16")
# A last.pt's resume state: no use to whoever runs the model, and the optimizer's moments are twice
# the weights.
TRAINING_STATE = ("model", "optimizer", "trainer", "rng", "run", "hidden")
_EXPORT_WAY_ON = "export again"


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes in ``[0, 2**bits)`` as a bit stream in bytes (uint8): code ``k`` is bits
    ``k*bits`` to ``(k+1)*bits - 1`` of the stream, least significant bit first, and stream bit
    ``j`` is bit ``j % 8`` of byte ``j // 8``. ``bits=0`` (one value) stores nothing."""
    if bits == 0:
        return torch.empty(0, dtype=torch.uint8)
    codes = codes.reshape(-1).to(torch.int64)
    stream = ((codes.unsqueeze(1) >> torch.arange(bits, device=codes.device)) & 1).to(torch.uint8).reshape(-1)
    stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)])
    return (stream.reshape(-1, 8) << torch.arange(8, dtype=torch.uint8, device=codes.device)).sum(1, dtype=torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The ``count`` codes (int64) that :func:`pack_codes` packed with ``bits`` bits each."""
    if bits == 0:
        return torch.zeros(count, dtype=torch.int64, device=packed.device)
    if packed.numel() * 8 < count * bits:
        raise ValueError(f"{packed.numel()} bytes hold {packed.numel() * 8 // bits} codes of {bits} bits, "
                         f"expected {count}")
    stream = (packed.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8, device=packed.device)) & 1
    stream = stream.reshape(-1)[:count * bits].to(torch.int64).reshape(count, bits)
    return (stream << torch.arange(bits, device=packed.device)).sum(1)


def _check_export_method(method: str | None, options: dict) -> None:
    if method is None:
        if options:
            raise ValueError(f"options {sorted(options)} need a method; expected one of {PACKED_METHODS}")
        return
    if method not in PACKED_METHODS:
        why = {"svd": "its factors would not rebuild the same weights bit for bit",
               "int8": "it is torch's runtime quantization; method='quantize' with bits=8 stores int8 codes"}.get(method)
        raise ValueError(f"method must be None (nothing packed) or one of {PACKED_METHODS}, got {method!r}"
                         + (f" ({why})" if why else ""))
    allowed = _PACKED_OPTIONS[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method {method!r} takes the options {list(allowed)}, got {unknown}")
    if method != "quantize" and "precision" not in options:
        raise ValueError(f"method {method!r} needs a precision (the grid step), got options {sorted(options)}")


def _stored(tensor: torch.Tensor, rest_dtype: torch.dtype) -> dict:
    """A tensor as the file keeps it: on the CPU, in its own storage (torch.save writes a view's
    whole storage, e.g. all of a cuDNN-flattened LSTM's weights), floats in ``rest_dtype``."""
    value = tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    if value.is_floating_point() and value.dtype != rest_dtype:
        return {"tensor": value.to(rest_dtype), "dtype": str(value.dtype).removeprefix("torch.")}
    return {"tensor": value}


def _packed_block(original: torch.Tensor, compressed: torch.Tensor, method: str, options: dict) -> dict:
    """The codes of one compressed gate block: per-row scales for ``quantize``, else the block's
    few distinct values (its codebook, sorted) and each weight's index into them."""
    if method == "quantize":
        bits = options.get("bits", 8)
        codes, scales = _row_codes(original, bits)
        return {"bits": bits, "scales": scales.cpu(), "codes": pack_codes(codes + 2 ** (bits - 1) - 1, bits).cpu()}
    codebook = torch.unique(compressed)
    bits = math.ceil(math.log2(codebook.numel())) if codebook.numel() > 1 else 0
    codes = torch.searchsorted(codebook, compressed.reshape(-1))
    return {"bits": bits, "codebook": codebook.cpu(), "codes": pack_codes(codes, bits).cpu()}


def _unpacked_block(segment: dict, shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    count = math.prod(shape)
    codes = unpack_codes(segment["codes"], segment["bits"], count)
    if "codebook" in segment:
        return segment["codebook"].to(dtype)[codes].reshape(shape)
    q = 2 ** (segment["bits"] - 1) - 1
    return _from_row_codes((codes - q).reshape(shape), segment["scales"].to(dtype))


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def _unpacked_tensor(entry: dict) -> torch.Tensor:
    if "tensor" in entry:
        return entry["tensor"].to(_dtype(entry["dtype"])) if "dtype" in entry else entry["tensor"]
    dtype = _dtype(entry["dtype"])
    parts = []
    for segment in entry["segments"]:
        start, stop = segment["rows"]
        shape = [stop - start, *entry["shape"][1:]]
        parts.append(segment["tensor"].to(dtype) if "tensor" in segment else _unpacked_block(segment, shape, dtype))
    value = torch.cat(parts)
    if list(value.shape) != list(entry["shape"]):
        raise ValueError(f"its segments make a tensor of shape {list(value.shape)}, expected {entry['shape']}")
    return value


def is_export(state: dict) -> bool:
    """Whether a dict read from a file is an export written by :func:`export`."""
    return isinstance(state, dict) and state.get("format") == EXPORT_FORMAT


def unpacked_state(contents: dict, path: str | os.PathLike = "<export>") -> dict[str, torch.Tensor]:
    """The state dict an export holds: its packed gate blocks decoded, the rest cast back to the
    dtypes they were exported from, tied weights tied again (one tensor under both keys)."""
    from .train.checkpoint import CheckpointError

    if not is_export(contents):
        raise ValueError(f"{path} is not an export written by g2lstm.compress.export (no format {EXPORT_FORMAT!r}); "
                         + ("it is a training checkpoint: load it with g2lstm.load(path)" if "model" in contents else
                            f"its keys are {sorted(contents)[:8]}"))
    if contents.get("version") != EXPORT_VERSION:
        raise ValueError(f"{path} is an export of format version {contents.get('version')!r}; this g2lstm reads "
                         f"version {EXPORT_VERSION}")
    state = {}
    try:
        for key, entry in contents["tensors"].items():
            state[key] = state[entry["alias"]] if "alias" in entry else _unpacked_tensor(entry)
    except (KeyError, IndexError, ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"{path} is a damaged export: tensor {key!r} cannot be rebuilt ({error}); "
                              "export the model again") from error
    return state


def exported_checkpoint(contents: dict, path: str | os.PathLike = "<export>") -> dict:
    """The checkpoint dict (task, config, vocabulary..., ``model``) of an export of a task
    checkpoint, its weights decoded: what :func:`g2lstm.load` reads from an export."""
    state = unpacked_state(contents, path)
    source = contents["source"]
    if source["kind"] != "checkpoint":
        raise ValueError(f"{path} is an export of a bare {source['class']}, not of a task checkpoint; load it with "
                         "g2lstm.compress.load_export(path)")
    return {**source["checkpoint"], "model": state}


def _export_source(source) -> tuple[nn.Module, dict, str | None]:
    """``(model, what rebuilds it, the checkpoint file it came from)`` of what :func:`export` takes."""
    from .rnn import G2LSTM, _lstm_config
    from .tasks import TaskModel, load
    from .train.checkpoint import load_checkpoint

    if isinstance(source, (str, os.PathLike)):
        source = load(source)
    if isinstance(source, TaskModel):
        state = load_checkpoint(source.path)
        if is_export(state):  # a model loaded from an export goes on with its checkpoint's metadata
            return source.model, dict(state["source"]), None
        metadata = {k: v for k, v in state.items() if k not in TRAINING_STATE}
        return source.model, {"kind": "checkpoint", "checkpoint": metadata}, source.path
    if isinstance(source, G2LSTM) or type(source) is nn.LSTM:
        arguments = _lstm_config(source)
        if isinstance(source, G2LSTM):
            arguments.update(gates=source.gates, tau=source.tau, noise_p=source.noise_p,
                             stochastic_gates=list(source.stochastic_gates), noise_mode=source.noise_mode,
                             eval_gates=source.eval_gates, train_gates=source.train_gates, weight_drop=source.weight_drop,
                             impl=source.impl)
        return source, {"kind": "layer", "class": type(source).__name__, "arguments": arguments}, None
    if isinstance(source, nn.Module):
        lstm_layers(source)  # an error now if there are no gate blocks to compress
        return source, {"kind": "module", "class": type(source).__name__}, None
    raise TypeError(f"export takes a checkpoint path, a model loaded by g2lstm.load, or an nn.Module containing "
                    f"LSTM layers, got {type(source).__name__}")


@torch.no_grad()
def export(source, path: str | os.PathLike, method: str | None = None, *,
           gates: Iterable[str] = ("input", "forget"), rest_dtype: str = "float32", **options) -> dict:
    """Write ``source`` compressed with ``method`` to ``path``, one file to ship, atomically.

    ``source``: a checkpoint path (``best.pt``; also an export), a model that :func:`g2lstm.load`
    returned, a bare ``nn.LSTM`` / ``G2LSTM``, or any module containing LSTM layers. ``method`` and
    ``options`` are those of :func:`compress` for the methods with a packed form: ``round``,
    ``round_clip``, ``round_relative`` (``precision``, ``clip``) and ``quantize`` (``bits``); None
    packs nothing. The chosen gate blocks are stored as codes: a grid's block as the indices into
    its few distinct values, ``ceil(log2(values))`` bits each; a quantized block as ``bits``-bit
    codes and a float scale per row. Every other tensor is stored in ``rest_dtype``
    (``'float32'`` or ``'float16'``). Before writing, the codes are decoded and checked to give
    the weights :func:`compress` gives, bit for bit.

    Read it back with :func:`g2lstm.load` (an export of a task checkpoint: that task's model) or
    :func:`load_export`. Returns the sizes in bytes: ``bytes`` (the file), ``checkpoint_bytes``
    (the checkpoint it came from, or None), ``blocks_float32_bytes`` and ``blocks_packed_bytes``
    (the chosen gate blocks before and as stored: codes with codebooks or scales), and the
    compression report without its per-block entries.
    """
    _check_export_method(method, options)
    if rest_dtype not in REST_DTYPES:
        raise ValueError(f"rest_dtype must be one of {REST_DTYPES}, got {rest_dtype!r}")
    gates = [gates] if isinstance(gates, str) else list(gates)
    _gate_indices(gates)
    model, rebuild, checkpoint_path = _export_source(source)
    if method is None:
        compressed, report, targeted = model, None, []
    else:
        compressed, report = compress(model, method, gates=gates, **options)
        targeted = list(zip(gate_blocks(model, gates), gate_blocks(compressed, gates)))
    blocks: dict[str, list] = {}
    for original, small in targeted:
        key = f"{small['module']}.{small['param']}" if small["module"] else small["param"]
        blocks.setdefault(key, []).append((small["rows"], original["block"], small["block"]))

    rest = _dtype(rest_dtype)
    tensors, first_key = {}, {}
    packed_bytes = float32_bytes = 0
    state = compressed.state_dict()
    for key, value in state.items():
        # Tied weights (an LM's decoder and embedding) are one tensor under two keys: stored once.
        identity = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.stride(),
                    value.dtype) if value.numel() else None
        if identity in first_key:
            tensors[key] = {"alias": first_key[identity]}
            continue
        if identity is not None:
            first_key[identity] = key
        if key not in blocks:
            tensors[key] = _stored(value, rest)
            continue
        segments, at = [], 0
        for rows, original, small in sorted(blocks[key], key=lambda b: b[0].start):
            if rows.start > at:
                segments.append({"rows": [at, rows.start], **_stored(value[at:rows.start], rest)})
            segment = _packed_block(original, small, method, options)
            decoded = _unpacked_block(segment, list(small.shape), small.dtype)
            if not torch.equal(decoded.flatten().view(torch.uint8), small.cpu().flatten().view(torch.uint8)):
                raise RuntimeError(f"the codes of {key} rows {rows.start}:{rows.stop} do not decode to the "
                                   f"weights of the {method} compression")
            segments.append({"rows": [rows.start, rows.stop], **segment})
            packed_bytes += sum(t.numel() * t.element_size() for t in segment.values() if isinstance(t, torch.Tensor))
            float32_bytes += small.numel() * 4
            at = rows.stop
        if at < value.shape[0]:
            segments.append({"rows": [at, value.shape[0]], **_stored(value[at:], rest)})
        tensors[key] = {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch."),
                        "segments": segments}

    from .train.checkpoint import save_checkpoint

    compression = None if method is None else {"method": method, **options, "gates": gates}
    save_checkpoint({"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "compression": compression,
                     "rest_dtype": rest_dtype, "source": rebuild, "tensors": tensors}, path, way_on=_EXPORT_WAY_ON)
    return {
        "path": str(path), "bytes": os.path.getsize(path),
        "checkpoint_bytes": os.path.getsize(checkpoint_path) if checkpoint_path else None,
        "compression": compression, "rest_dtype": rest_dtype,
        "blocks": sum(len(b) for b in blocks.values()),
        "blocks_float32_bytes": float32_bytes, "blocks_packed_bytes": packed_bytes,
        "report": None if report is None else {k: v for k, v in report.items() if k != "blocks"},
    }


def load_export(path: str | os.PathLike, device: str | torch.device = "cpu", model: nn.Module | None = None):
    """The model an export holds, its gate blocks decoded to the compressed weights, in eval mode.

    An export of a task checkpoint gives that task's model as :func:`g2lstm.load` does (which reads
    exports too); of a bare ``nn.LSTM`` / ``G2LSTM``, that layer. Given ``model`` (a module of the
    exported architecture), the weights are loaded into it and it is returned: the way to read an
    export of any other module.
    """
    from .rnn import G2LSTM
    from .tasks import from_checkpoint_state
    from .train.checkpoint import load_checkpoint

    contents = load_checkpoint(path, map_location=device)
    state = unpacked_state(contents, path)
    if model is not None:
        model.load_state_dict(state)
        return model.eval()
    source = contents["source"]
    if source["kind"] == "checkpoint":
        return from_checkpoint_state({**source["checkpoint"], "model": state}, path, device)
    if source["kind"] == "layer":
        layer = (G2LSTM if source["class"] == "G2LSTM" else nn.LSTM)(**source["arguments"])
        layer.load_state_dict(state)
        return layer.to(device).eval()
    raise ValueError(f"{path} is an export of a {source['class']}, which it cannot rebuild by itself; pass "
                     f"model=<a {source['class']}> to load its weights into it")
