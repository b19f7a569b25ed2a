"""The run folder itself: which files make a g2lstm run (a folder holding anything else is not
one, and is refused), the lock that keeps a second process out, and ``previous-N/``, where
``train.resume=false`` keeps the run it replaces."""

from __future__ import annotations

import os
import socket
import weakref
from pathlib import Path

import yaml

LOCK = ".lock"
# what a run writes into its folder (trainers' extras included: test.hyp, saturation.png)
RUN_FILES = {"config.yaml", "metrics.jsonl", "metrics.jsonl.tmp", "last.pt", "last.prev.pt", "best.pt",
             "results.json", "test.hyp", "saturation.png", "tensorboard", LOCK}
CONFIG_KEYS = {"seed", "data", "model", "train"}  # every trainer's config.yaml has these


def _is_run_file(path: Path) -> bool:
    return path.name in RUN_FILES or path.name.startswith("previous-") or ".pt." in path.name  # *.pt.*.tmp


def run_files(folder: Path, task: str) -> list[Path]:
    """The files of the run in ``folder`` (none if it does not exist or is empty); a clear error if
    ``folder`` is a file, holds anything a run does not write, or a ``config.yaml`` that is not a
    g2lstm run's (someone else's folder must not be overwritten)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the run folder {folder} is a file, not a folder: use a new run folder")
    if not folder.is_dir():
        return []
    entries = sorted(folder.iterdir())
    foreign = [p.name for p in entries if not _is_run_file(p)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(f"{folder} is not a g2lstm run folder (it holds {shown}); a {task} run needs a new or "
                         "empty folder, or one of its own runs to resume")
    config = folder / "config.yaml"
    has_checkpoint = any((folder / name).exists() for name in ("last.pt", "last.prev.pt", "best.pt"))
    if config.is_file() and not has_checkpoint:  # (a checkpoint says whose run it is, and is checked on its own)
        try:
            keys = set(yaml.safe_load(config.read_text(encoding="utf-8")) or {})
        except (yaml.YAMLError, UnicodeDecodeError, TypeError, ValueError):
            keys = set()
        if not CONFIG_KEYS <= keys:
            raise ValueError(f"{config} is not a g2lstm run's config (no {sorted(CONFIG_KEYS - keys)} keys): "
                             "use a new run folder")
    return [p for p in entries if p.name != LOCK and not p.name.startswith("previous-")]


def set_aside(folder: Path, files: list[Path]) -> Path:
    """Move ``files`` of ``folder`` into its next free ``previous-N/``; returns that folder."""
    n = 1
    while (folder / f"previous-{n}").exists():
        n += 1
    kept = folder / f"previous-{n}"
    kept.mkdir()
    for path in files:
        if path.exists():
            os.replace(path, kept / path.name)
    return kept


class RunLock:
    """``<run>/.lock``, holding the pid and host of the process that trains in the folder. A
    second process is refused while that one lives; the lock of a process that died (a kill), or
    of this process (a run that raised), is taken over. Released when the run ends, or its
    :class:`~g2lstm.train.Run` is collected, or the process exits."""

    def __init__(self, path: Path):
        self.path = path
        self.owner = f"{os.getpid()} {socket.gethostname()}"
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if holder is not None:
                    raise ValueError(f"another process (pid {holder}) is training in {path.parent} (its lock is "
                                     f"{path}): wait for it to end, or use another run folder (if no process trains there, "
                                     f"delete {path})") from None
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner + "\n")
            break
        self._release = weakref.finalize(self, _unlink_if_owner, path, self.owner)

    def _holder(self) -> int | None:
        """The pid of a live other process holding the lock, or None if the lock is stale."""
        try:
            pid_text, host = self.path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None  # unreadable or half-written: stale
        if pid == os.getpid() or host != socket.gethostname():
            # this process (a run that raised), or another host: only the host that wrote it can tell
            return None if pid == os.getpid() else pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def release(self) -> None:
        self._release()


def _unlink_if_owner(path: Path, owner: str) -> None:
    try:
        if path.read_text().strip() == owner:
            path.unlink()
    except OSError:
        pass
