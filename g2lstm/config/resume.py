"""Which config a resumed run takes, and what it must keep: a run folder resumes only with the
same task, ``data`` and ``model`` (and the trainer's ``fixed_keys``), checked before anything in
the folder is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COMPARED_SECTIONS = ("data", "model")  # a resumed run must keep these exactly

# Keys of a compared section added after runs were saved, with the value that computes what the
# code computed before the key existed: a checkpoint without the key resumes when it has that value.
ADDED_KEYS = {"model.train_gates": "soft"}


def differences(saved: Any, current: Any, prefix: str) -> list[str]:
    """One line per key whose value differs between two nested configs (``prefix.key: a in the
    checkpoint, b now``)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current))
        return [d for k in keys
                if not (k not in saved and k in current and ADDED_KEYS.get(f"{prefix}.{k}", _ABSENT) == current[k])
                for d in differences(saved.get(k), current.get(k), f"{prefix}.{k}")]
    return [] if saved == current else [f"{prefix}: {saved!r} in the checkpoint, {current!r} now"]


def config_for_resume(saved: dict, current: dict, overrides: list[str]) -> dict[str, Any]:
    """The config of a resumed run: the run's saved one with the command line's ``key=value``
    overrides applied (their values as composed in ``current``), so that resuming a run folder
    needs no overrides. A config-group choice (``data=brown``, ``experiment=...``) makes it the
    whole ``current`` config, whose data and model are then compared with the saved ones."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    resumed = json.loads(json.dumps(saved))
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        parts, node = key.split("."), current
        for part in parts:
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if override.is_delete() or node is _ABSENT or isinstance(node, dict):
            return current
        target = resumed
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = node
    return resumed


_ABSENT = object()


def value_at(cfg: dict, dotted: str) -> Any:
    """``cfg['a']['b']`` for ``'a.b'``; None where a part is missing."""
    for part in dotted.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def check_resumable(saved_task: str, saved_config: dict, task: str, cfg: dict, path: Path,
                    fixed_keys: tuple[str, ...] = ()) -> None:
    """Refuse to resume from ``path`` (a checkpoint of ``saved_task`` with ``saved_config``) with
    another task or another data / model config (or another value of one of ``fixed_keys``)."""
    if saved_task != task:
        raise ValueError(f"cannot resume: {path} is a checkpoint of task {saved_task!r}, this trainer is "
                         f"{task!r}; use a new run folder")
    changed = [d for section in COMPARED_SECTIONS
               for d in differences(saved_config.get(section), cfg.get(section), section)]
    changed += [d for key in fixed_keys for d in differences(value_at(saved_config, key), value_at(cfg, key), key)]
    if changed:
        raise ValueError(f"cannot resume from {path}: the config changed:\n  " + "\n  ".join(changed)
                         + "\nuse a new run folder, or train.resume=false to start this folder afresh (its run is kept in "
                         "previous-N/ inside it)")
