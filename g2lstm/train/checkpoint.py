"""Checkpoints on disk: atomic writes, reads that unpickle no code (``weights_only=True``), the
state of the random number generators for an exact resume, and the task that wrote a file."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import missing_device

LAST, BEST, PREVIOUS = "last.pt", "best.pt", "last.prev.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or written; the message names the path and the way on."""


RESUME_WAY_ON = "run again: the run resumes from its last checkpoint"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike,
                    keep_previous: str | os.PathLike | None = None, way_on: str = RESUME_WAY_ON) -> None:
    """Write ``state`` to ``path`` atomically: a crash leaves either the old file or the new one
    (with ``keep_previous``, the old one is moved there first: a crash between the two moves
    leaves it there only).

    ``state`` must hold only tensors and plain Python values so that it loads with
    ``torch.load(weights_only=True)``. ``way_on``: what to do after freeing space, for the error
    message (a training run resumes; another writer says its own).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # a full disk shows as either, from torch's zip writer
        _remove(tmp)
        kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
        raise CheckpointError(f"could not write the checkpoint {path} ({error}); {kept}. Free space in "
                              f"{path.parent} (or fix its permissions) and {way_on}") from error
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` without unpickling arbitrary code.

    A device this machine lacks is a ``ValueError`` naming it, before the file is read: torch's own
    error would read as a damaged file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if isinstance(map_location, (str, torch.device)):
        try:
            why = missing_device(map_location)
        except RuntimeError:
            raise ValueError(f"cannot load {path} onto device {str(map_location)!r}: expected a torch device "
                             "such as 'cpu', 'cuda' or 'cuda:1'") from None
        if why:
            raise ValueError(f"cannot load {path} onto device {str(map_location)!r}: {why}; load it with "
                             "device='cpu'")
    way_on = ("Load another checkpoint of the run (best.pt or last.pt), or start its run folder afresh "
              "with train.resume=false (the files there are kept in previous-N/ inside it)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is an empty file (0 bytes), not a checkpoint: a crash or a full disk "
                              f"while it was written? {way_on}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch's readers fail on garbage with many types (EOFError, IndexError, ...)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({first_line}): it is truncated, damaged "
                              f"or not written by torch.save. {way_on}") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a g2lstm checkpoint (a dict with "
                              f"'task', 'config' and 'model'). {way_on}")
    return state


def checkpoint_task(state: dict, path: str | os.PathLike = "<checkpoint>") -> str:
    """The task that wrote a checkpoint (older checkpoints are recognised by their contents)."""
    if "task" in state:
        return state["task"]
    if "tokenizers" in state:
        return "mt"
    if "vocab" in state:
        return "lm"
    raise ValueError(f"{path}: not a g2lstm checkpoint (no 'task' key; keys {sorted(state)})")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's generators, in a ``weights_only``-safe form."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_cached = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
