"""What every trainer shares.

- :mod:`~g2lstm.train.run`: :class:`Run`, the run lifecycle (folder, resume, budgets, what is due,
  the counted optimizer step, checkpoints, results);
- :mod:`~g2lstm.train.checkpoint`: atomic checkpoint files, the generators' state;
- :mod:`~g2lstm.train.distributed`: :class:`World` and its collectives, for ``torchrun``;
- :mod:`~g2lstm.train.metrics`: ``metrics.jsonl``;
- :mod:`~g2lstm.train.guard`: the divergence guard;
- :mod:`~g2lstm.train.gates`: G2 option schedules and gate watching, called by the trainers;
- :mod:`~g2lstm.train.epochs`: the state of an epoch-based trainer.

The trainers themselves are ``g2lstm.{lm,mt,classify,translit}.train``; their config schemas extend
:mod:`g2lstm.config.run`.
"""

from .checkpoint import (BEST, LAST, PREVIOUS, CheckpointError, checkpoint_task, load_checkpoint, rng_state,
                         save_checkpoint, seed_everything, set_rng_state)
from .distributed import World, init_distributed
from .epochs import EpochState, print_record
from .gates import GateSchedules, GateWatch, schedule_value
from .guard import DivergedError, DivergenceGuard, NonFiniteLossError
from .metrics import MetricsLog, exp_or_inf
from .run import Due, Run, to_container

__all__ = [
    "BEST", "LAST", "PREVIOUS", "CheckpointError", "checkpoint_task", "load_checkpoint", "rng_state",
    "save_checkpoint", "seed_everything", "set_rng_state", "World", "init_distributed", "EpochState",
    "print_record", "GateSchedules", "GateWatch", "schedule_value", "DivergedError", "DivergenceGuard",
    "NonFiniteLossError", "MetricsLog", "exp_or_inf", "Due", "Run", "to_container",
]
