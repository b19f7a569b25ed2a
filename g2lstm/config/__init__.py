"""Hydra configs of the package's tasks: typed schemas, their checks, and composition from Python.

Every config group has a dataclass schema next to the code it configures (``LMModelConfig`` in
``g2lstm/lm/model.py``, ``ModelConfig`` in ``g2lstm/mt/model.py``, ...), registered in Hydra's
``ConfigStore`` by that module and named in the group's YAML defaults list (Hydra's "extending
configs" pattern). So a wrong type or an unknown key is refused when the config is composed, with
the full key and value, and :func:`validate` checks every value's range (each schema's
``__post_init__``) before any data is read, naming the full key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from pathlib import Path
from typing import Any, Callable, Iterable

from hydra.core.config_store import ConfigStore
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

CONF_ROOT = Path(__file__).resolve().parent.parent / "conf"  # shipped inside the package (pyproject package-data)

# config root -> the module whose import registers the root's schemas in the ConfigStore
SCHEMA_MODULES = {
    "lm": "g2lstm.lm.train",
    "mt": "g2lstm.mt.train",
    "classify": "g2lstm.classify.train",
    "translit": "g2lstm.translit.train",
    "interpret": "g2lstm.interpret.report",
    "paper": "g2lstm.paper",
    "explore": "g2lstm.explore.config",
}


# CompactHydraException: Hydra's entry points print the message alone, without a traceback.
class ConfigError(ValueError, CompactHydraException):
    """A config that cannot be composed (a wrong type, an unknown key); says which and why."""


class ConfigValueError(ValueError, CompactHydraException):
    """A config value outside what its key allows; names the full key, the value and the range."""

    def __init__(self, key: str, value: Any, expected: str):
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key}={value!r}: expected {expected}")

    def under(self, prefix: str) -> "ConfigValueError":
        """The same error with the key's full path (``batch_size`` -> ``train.batch_size``)."""
        return ConfigValueError(prefix + self.key, self.value, self.expected)


def store(node: type, name: str, group: str | None = None) -> None:
    """Register a schema in Hydra's ConfigStore (``group`` for a config group's schema)."""
    ConfigStore.instance().store(name=name, node=node, group=group)


# ----------------------------------------------------------------------------- checks of one schema
# Called from the schemas' ``__post_init__`` with the dataclass and its field names.


def require(obj: Any, key: str, ok: Callable[[Any], bool], expected: str, optional: bool = False) -> None:
    """Raise :class:`ConfigValueError` unless ``ok(obj.key)`` (``None`` passes when ``optional``)."""
    value = getattr(obj, key)
    if value is None and optional:
        return
    if value is None or not ok(value):
        raise ConfigValueError(key, value, expected + (", or null" if optional else ""))


def positive(obj: Any, *keys: str, optional: bool = False) -> None:
    for key in keys:
        require(obj, key, lambda v: v > 0, "a value > 0", optional)


MAX_SEED = 2**32 - 1  # numpy.random.seed and default_rng take 0 .. 2**32 - 1


def seed(obj: Any, *keys: str) -> None:
    """A seed every generator of the package takes (NumPy's range; torch takes more)."""
    for key in keys:
        require(obj, key, lambda v: 0 <= v <= MAX_SEED, f"an integer in [0, {MAX_SEED}] (NumPy's seeds)")


def finite_positive(obj: Any, *keys: str) -> None:
    """A float > 0 that is not ``inf`` (a learning rate: ``inf`` passes ``> 0`` and ruins the first step)."""
    for key in keys:
        require(obj, key, lambda v: 0 < v < math.inf, "a finite value > 0")


def at_least(obj: Any, low: float, *keys: str, optional: bool = False) -> None:
    for key in keys:
        require(obj, key, lambda v: v >= low, f"a value >= {low}", optional)


def probability(obj: Any, *keys: str) -> None:
    for key in keys:
        require(obj, key, lambda v: 0 <= v <= 1, "a probability in [0, 1]")


def dropout(obj: Any, *keys: str) -> None:
    for key in keys:
        require(obj, key, lambda v: 0 <= v < 1, "a dropout probability in [0, 1)")


def one_of(obj: Any, key: str, choices: Iterable[Any]) -> None:
    choices = list(choices)
    require(obj, key, lambda v: v in choices, f"one of {choices}")


def check_device(obj: Any, key: str) -> None:
    def ok(value: str) -> bool:
        import torch

        try:
            torch.device(value)
        except (RuntimeError, TypeError):
            return False
        return True

    require(obj, key, ok, "a torch device such as 'cpu', 'cuda' or 'cuda:1'")


def missing_device(device) -> str | None:
    """Why this machine cannot place tensors on ``device`` (a CUDA device without CUDA, or one
    past the last GPU), or None when it can."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False on this machine"
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        return f"this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    return None


def check_machine(cfg: DictConfig | dict) -> None:
    """The config's ``device`` exists on this machine: :class:`ConfigValueError` naming it otherwise.
    Apart from :func:`validate`'s value checks, so that a GPU experiment composes (and its docs are
    checked) on a machine without one; run by the trainers and the Hydra entry points."""
    device = cfg.get("device")
    if device is not None and (why := missing_device(device)):
        raise ConfigValueError("device", device, f"a device of this machine, but {why}; use device=cpu")


def all_of(obj: Any, key: str, ok: Callable[[Any], bool], expected: str) -> None:
    """Every item of the list ``obj.key`` passes ``ok``, and there is at least one."""
    require(obj, key, lambda items: len(items) > 0 and all(ok(v) for v in items), f"a non-empty list of {expected}")


# ----------------------------------------------------------------------------- the whole config


def validate(cfg: DictConfig | dict, schema: type | None = None) -> None:
    """Check every value of a config against its schema's ranges (see the module docstring);
    raises :class:`ConfigValueError` naming the full key. Reads no data.

    A config that was not composed with ``schema`` (a plain dict, ``OmegaConf.create``) is first
    merged into it, so that its types and keys are checked too (:class:`ConfigError`). With ``schema``
    (a trainer's check before it runs) :func:`check_machine` runs too."""
    if schema is not None and not (isinstance(cfg, DictConfig) and issubclass(OmegaConf.get_type(cfg) or dict, schema)):
        try:
            cfg = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        except OmegaConfBaseException as error:
            raise ConfigError(f"the config does not fit the schema {schema.__name__}:\n{_short(error)}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigValueError(missing[0], MISSING, "a value: this key has no default (set it, e.g. on the command line)")
    _validate_node(cfg, "")
    if schema is not None:
        check_machine(cfg)


def _validate_node(node: DictConfig, prefix: str) -> None:
    for key in node:  # the children first, so an error is reported with the deepest key
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none():
            _validate_node(child, f"{prefix}{key}.")
    schema = OmegaConf.get_type(node)
    if schema in (dict, None):
        return
    # a key added with +key=value to a schema: Hydra allows it, the schema's code would ignore it
    known = {f.name for f in dataclasses.fields(schema)}
    for key in node:
        if key not in known:
            raise ConfigValueError(f"{prefix}{key}", node[key], f"no such key: {schema.__name__} has {sorted(known)}")
    try:
        OmegaConf.to_object(node)  # runs the schemas' __post_init__ checks
    except ConfigValueError as error:
        raise error.under(prefix) from None


class ValidateConfig(Callback):
    """Hydra callback (``hydra.callbacks`` of every config root): validates the composed config
    before Hydra creates the run folder or writes anything into it. Hydra turns a callback's
    exceptions into warnings, so a bad config ends the program here with its message (exit code 1)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _validate_or_exit(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _validate_or_exit(config)  # the base config; each job's sweep values: by its trainer


def _validate_or_exit(config: DictConfig) -> None:
    task_cfg = config.copy()
    with open_dict(task_cfg):
        task_cfg.pop("hydra", None)
    try:
        validate(task_cfg)
        check_machine(task_cfg)
    except ConfigValueError as error:
        raise SystemExit(f"Error in the config: {error}") from None


def config_dir(root: str) -> Path:
    """The folder of one config root (``lm``, ``mt``, ``paper``, ...)."""
    path = CONF_ROOT / root
    if not (path / "config.yaml").is_file():
        known = sorted(p.name for p in CONF_ROOT.iterdir() if (p / "config.yaml").is_file())
        raise ValueError(f"no config root {root!r} under {CONF_ROOT}; expected one of {known}")
    return path


def register_schemas(root: str) -> None:
    """Import the module that registers ``g2lstm/conf/<root>``'s schemas (needed before composing)."""
    if root in SCHEMA_MODULES:
        importlib.import_module(SCHEMA_MODULES[root])


def compose_config(root: str, overrides: list[str] | None = None) -> DictConfig:
    """The composed and validated ``g2lstm/conf/<root>/config.yaml`` with Hydra-style ``overrides``.

    A wrong type or an unknown key raises :class:`ConfigError`, a value out of range
    :class:`ConfigValueError`; both name the full key and the value.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    directory = config_dir(root)
    register_schemas(root)
    with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
        try:
            cfg = compose(config_name="config", overrides=list(overrides or []))
        except ConfigCompositionException as error:
            raise ConfigError(composition_message(error, directory)) from None
    validate(cfg)
    return cfg


def composition_message(error: BaseException, directory: Path) -> str:
    """Hydra's composition error with its cause (which holds the full key and the value)."""
    lines = [str(error)]
    cause = error.__cause__
    while cause is not None:
        lines.append(_short(cause))
        cause = cause.__cause__
    return "\n".join(lines) + f"\n(config: {directory})"


def _short(error: BaseException) -> str:
    """OmegaConf's message without its type-bookkeeping lines."""
    return "\n".join(line for line in str(error).strip().splitlines()
                     if not line.strip().startswith(("reference_type=", "object_type=")))
