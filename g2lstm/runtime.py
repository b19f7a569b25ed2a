"""Moved: the run lifecycle is the package :mod:`g2lstm.train`, its config schemas and resume checks
are :mod:`g2lstm.config.run` and :mod:`g2lstm.config.resume`. The names this module had are
re-exported here so that code importing them keeps working."""

from .config.resume import COMPARED_SECTIONS, config_for_resume  # noqa: F401
from .config.run import SCHEDULABLE, SHAPES, RunConfig, Schedules, TaskConfig, check_schedules  # noqa: F401
from .train import (BEST, LAST, PREVIOUS, CheckpointError, DivergedError, MetricsLog,  # noqa: F401
                    NonFiniteLossError, Run, World, checkpoint_task, exp_or_inf, init_distributed,
                    load_checkpoint, rng_state, save_checkpoint, schedule_value, seed_everything, set_rng_state,
                    to_container)
from .train.guard import GUARD_DECAY  # noqa: F401
