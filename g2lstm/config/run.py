"""The schemas every trainer shares: the top-level keys (``seed``, ``device``, ``threads``) and the
``train`` keys that the run lifecycle (:class:`g2lstm.train.Run`) and the G2 schedules read.

Each trainer's own schemas extend these (``LMTrainConfig(RunConfig)``, ``MTConfig(TaskConfig)``, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from g2lstm import config

SCHEDULABLE = ("tau", "noise_p")  # G2 options a trainer may change step by step
SHAPES = ("linear", "exponential")
# the values each option takes (G2LSTM refuses others, at the step the schedule reaches them)
END_RANGES = {"tau": ("> 0", lambda v: 0 < v < math.inf), "noise_p": ("in [0, 1]", lambda v: 0 <= v <= 1)}


def _is_schedule(value: Any, option: str | None = None) -> bool:
    return (isinstance(value, dict) and set(value) == {"end", "steps", "shape"} and value["steps"] > 0
            and value["shape"] in SHAPES and (option is None or isinstance(value["end"], (int, float))
                                              and END_RANGES[option][1](value["end"])))


@dataclass
class Schedules:
    """``train.schedules`` of every trainer: per option, null (fixed) or ``{end, steps, shape}``:
    to ``end`` at ``steps``, held after (see :func:`check_schedules`)."""

    # Any, not Optional[dict]: OmegaConf cannot merge a command line's {end: ...} into a typed null
    tau: Any = None
    noise_p: Any = None

    def __post_init__(self):
        for option in SCHEDULABLE:
            config.require(self, option, lambda v: _is_schedule(v, option),
                           f"{{end, steps > 0, shape in {list(SHAPES)}}} with end {END_RANGES[option][0]}",
                           optional=True)


@dataclass
class RunConfig:
    """The keys of ``train`` that :class:`g2lstm.train.Run` and the guards read, shared by every
    trainer's train schema (their meaning: ``g2lstm/conf/lm/train/nt_asgd.yaml``)."""

    max_steps: Optional[int] = None
    max_minutes: Optional[float] = None
    log_every: int = 50
    checkpoint_every: int = 200
    saturation_every: Optional[int] = 200
    schedules: Schedules = field(default_factory=Schedules)
    divergence_factor: Optional[float] = 10.0
    resume: bool = True
    init_from: Optional[str] = None  # a checkpoint whose weights start a fresh run (a finetune)
    tensorboard: Optional[bool] = None  # TensorBoard events in <run>/tensorboard; null: if the extra is installed

    def __post_init__(self):
        config.positive(self, "log_every", "checkpoint_every")
        config.positive(self, "max_steps", "saturation_every", optional=True)
        config.positive(self, "max_minutes", optional=True)  # 0 would write an untrained model as the best
        config.require(self, "divergence_factor", lambda v: v > 1, "a factor > 1 (of the running average loss)",
                       optional=True)


@dataclass
class EpochTrainConfig(RunConfig):
    """The keys of ``train`` that the classification and transliteration loops share (their
    meaning: ``g2lstm/conf/classify/train/default.yaml``)."""

    batch_size: int = 32
    eval_batch_size: int = 256
    lr: float = 0.001  # Adam
    clip_norm: float = 5.0
    max_epochs: int = 10
    early_stop_patience: int = 3  # validations without a better score
    eval_every: int = 0  # steps between validations; 0: once per epoch
    saturation_examples: int = 200  # the first valid examples the gate-saturation probe runs over

    def __post_init__(self):
        super().__post_init__()
        config.positive(self, "batch_size", "eval_batch_size", "clip_norm", "max_epochs",
                        "early_stop_patience", "saturation_examples")
        config.finite_positive(self, "lr")
        config.at_least(self, 0, "eval_every")


@dataclass
class TaskConfig:
    """The top-level keys of a trainer's config that :class:`g2lstm.train.Run` reads, the base of
    every trainer's root schema (``LMConfig``, ``MTConfig``, ``ClassifyConfig``, ``TranslitConfig``)."""

    seed: int = 1
    device: str = "cpu"
    threads: Optional[int] = 1  # torch.set_num_threads; null keeps torch's default
    recipe: Optional[str] = None  # set by the recipe=<name> group (g2lstm/recipes.py), never by hand

    def __post_init__(self):
        config.seed(self, "seed")
        config.check_device(self, "device")  # whether this machine has it: config.check_machine
        config.positive(self, "threads", optional=True)
        if self.recipe is not None:  # a recipe is G2 options: a cell without them would ignore it
            from g2lstm.recipes import RECIPES

            config.one_of(self, "recipe", RECIPES)
            cell = getattr(getattr(self, "model", None), "cell", "g2lstm")
            config.require(self, "recipe", lambda name: cell == "g2lstm",
                           f"model.cell='g2lstm', the recipe's cell; model.cell={cell!r} was given as well "
                           "(drop one of the two)")


def check_schedules(schedules: dict, model_cfg: dict) -> dict:
    """``train.schedules``: ``{option: {end, steps, shape}}`` (an option set to null is fixed),
    from the model config's value at step 0 to ``end`` at ``steps`` (held after); a clear error
    for anything else."""
    for option, schedule in schedules.items():
        if option not in SCHEDULABLE:
            raise ValueError(f"train.schedules.{option}: only {SCHEDULABLE} can be scheduled")
        if not _is_schedule(schedule):
            raise ValueError(f"train.schedules.{option} must be {{end, steps > 0, shape in {SHAPES}}}, got {schedule}")
        if option == "tau" and model_cfg.get("cell") == "sharpened":
            raise ValueError("train.schedules.tau: a sharpened cell uses tau at evaluation too, and checkpoints "
                             "keep model.tau; schedule tau for model.cell=g2lstm only")
        if option not in model_cfg:
            raise ValueError(f"train.schedules.{option}: the model config has no {option!r} to start from")
    return schedules
