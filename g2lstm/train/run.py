"""The run lifecycle every trainer shares: one training run in one folder.

:class:`Run` answers the questions a training loop asks (is a budget reached, is a validation or a
checkpoint due now) and does the run's I/O (``config.yaml``, ``last.pt``, ``best.pt``,
``metrics.jsonl``, ``results.json``). It counts the optimizer's steps: :meth:`Run.optimizer_step`
is the one place where the step count moves. It takes no callbacks and changes none of the
trainer's state; the trainer owns its loop.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..config.resume import check_resumable, config_for_resume, differences
from . import fingerprint, tensorboard
from .checkpoint import (BEST, LAST, PREVIOUS, checkpoint_task, load_checkpoint, rng_state, save_checkpoint,
                         seed_everything, set_rng_state)
from .distributed import World, init_distributed
from .epochs import print_record
from .folder import LOCK, RunLock, run_files, set_aside
from .guard import DivergenceGuard
from .metrics import MetricsLog, NoMetrics
from .tensorboard import TensorBoardLog


@dataclass(frozen=True)
class Due:
    """What a training loop must do after the step just taken (:meth:`Run.due`)."""

    log: bool  # train.log_every
    validate: bool  # train.eval_every, the epoch's end, or the minute budget just reached
    save: bool  # any of those, train.checkpoint_every, or a budget reached
    budget: str | None  # 'max_steps' or 'max_minutes' once reached: stop training


class Run:
    """One training run in one folder, shared by every trainer.

    The folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``last.pt``
    (everything an exact resume needs) and ``best.pt`` (the best weights on validation). A run
    started in a folder that holds ``last.pt`` resumes from it (unless ``train.resume=false``):
    the checkpoint must come from the same task with the same ``data`` and ``model`` config, which
    is checked before anything in the folder is written. A finished run started again with the
    same ``train`` config is left as it is (:attr:`finished`); with another one (e.g. more
    epochs) it goes on. The step and minute budgets (``train.max_steps``, ``train.max_minutes``)
    count across resumes; a run stopped by one and started again with the same command changes
    nothing.

    A trainer uses it top to bottom::

        run = Run(cfg, "mt", run_dir)                 # folder, config.yaml, threads, seed
        if run.finished:
            return run.result()
        ... build data and model ...
        state = run.restore(model, optimizer)         # the trainer's saved state, or None
        budget = run.budget_reached()
        while budget is None and ...:
            loss, grad_norm = run.optimizer_step(model, optimizer, loss, clip_norm)
            due = run.due(end_of_epoch)
            ... validate if due.validate; run.save(...) if due.save; budget = due.budget ...
        return run.finish(result)                     # results.json, the 'final' metrics line

    Data parallelism: started by ``torchrun --nproc_per_node=N``, every process builds a ``Run``,
    which joins the process group (:attr:`world`); every rank resumes from the same ``last.pt``
    and seeds its generators alike, and only rank 0 writes files. The trainer gives each rank its
    rows of the global batch (:meth:`World.even_rows`, :meth:`World.split_rows`, under
    :func:`g2lstm.shard.batch_shard`) and passes :meth:`optimizer_step` the rank's share of the
    global loss; gradients are summed over the ranks, so every rank applies the update one process
    with the whole batch would. Decisions (budgets, evaluations) come from rank 0
    (:meth:`World.on_main`).
    """

    def __init__(self, cfg, task: str, run_dir: str | os.PathLike, overrides: list[str] | None = None,
                 fixed_keys: tuple[str, ...] = ()):
        """``fixed_keys``: dotted config keys outside ``data`` and ``model`` that a resumed run must
        keep too, because the trainer's saved state depends on them (e.g. the LM's
        ``train.batch_size``: its hidden state and position in the epoch)."""
        self.cfg = to_container(cfg)
        self.task = task
        self.world = World.from_env()
        init_distributed(self.world, self.cfg.get("device", "cpu"))
        self.dir = Path(run_dir)
        self.last_path, self.best_path = self.dir / LAST, self.dir / BEST
        self.previous_path = self.dir / PREVIOUS
        self.saved: dict[str, Any] | None = None
        self.resume = self.cfg.get("train", {}).get("resume", True)
        # refuses a folder that is not a run's; rank 0 alone looks (the others would race its writes)
        existing = run_files(self.dir, task) if self.world.is_main else []
        if self.resume:
            resume_from = self.last_path if self.last_path.exists() else self.previous_path
            if resume_from.exists():  # (only the previous one is there after a kill inside save())
                self.saved = load_checkpoint(resume_from)
                if overrides is not None:
                    self.cfg = config_for_resume(self.saved["config"], self.cfg, overrides)
                # train.init_from starts a fresh run only: given to a folder that resumes, it would be ignored
                check_resumable(checkpoint_task(self.saved, resume_from), self.saved["config"], task, self.cfg,
                                resume_from, fixed_keys + ("train.init_from",))
        # train.resume=false on a folder that holds a run: its files move to previous-N/ at start()
        self._set_aside = [] if self.resume else existing
        train_cfg = self.cfg.get("train", {})
        if (self.saved is not None and self.saved["run"].get("finished")
                and self.saved["config"].get("train") == train_cfg):
            # Running a finished run's command again changes nothing in its folder; with another
            # train config (a raised budget) it goes on from last.pt.
            self.finished = True
            return
        self.finished = False
        if self.cfg.get("threads"):
            torch.set_num_threads(int(self.cfg["threads"]))
        seed_everything(int(self.cfg["seed"]))
        run_state = (self.saved or {}).get("run", {})
        self.step: int = run_state.get("step", 0)
        self._saved_step = self.step
        self._elapsed_before = run_state.get("elapsed", 0.0)
        self._started = time.time()
        self.max_steps = train_cfg.get("max_steps")
        self.max_minutes = train_cfg.get("max_minutes")
        self.eval_every = train_cfg.get("eval_every") or 0
        self.log_every = train_cfg.get("log_every", 50)
        self.checkpoint_every = train_cfg.get("checkpoint_every", 200)
        self.guard = DivergenceGuard(train_cfg.get("divergence_factor"), (self.last_path, self.previous_path),
                                     run_state.get("loss_average"))
        # purge_step: a resumed run hides the events of the steps it replays
        events = TensorBoardLog(self.dir, self.step + 1 if self.resumed else None) if tensorboard.enabled(train_cfg.get("tensorboard")) else None
        self.metrics = MetricsLog(self.dir / "metrics.jsonl", events) if self.world.is_main else NoMetrics(self.dir / "metrics.jsonl")
        self.data_fingerprint: dict[str, Any] | None = None
        self._lock: RunLock | None = None
        self.started = False  # start() says when the folder may be written

    def start(self, data_fingerprint: dict[str, Any] | None = None) -> None:
        """Begin writing, once the trainer has read its data and built its model, so that a command
        that fails before (bad data, a bad ``train.init_from``) leaves the folder as it was.
        ``data_fingerprint`` (:func:`g2lstm.train.fingerprint.fingerprint`) must match a resumed
        run's. Then: a lock against a second process in the folder, the files of a run set aside
        by ``train.resume=false`` moved to ``previous-N/``, ``config.yaml`` written, and the metrics
        lines after the checkpoint dropped (a resumed run replays those steps)."""
        saved = (self.saved or {}).get("data_fingerprint")
        if saved is not None and data_fingerprint is not None:
            changed = fingerprint.changes(saved, data_fingerprint)
            if changed:
                raise ValueError(f"cannot resume from {self.last_path}: the data changed since it was written:\n  "
                                 + "\n  ".join(changed) + "\nuse a new run folder (or the data the run was trained on)")
        self.data_fingerprint = data_fingerprint
        if self.world.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock(self.dir / LOCK)
            if self._set_aside:
                kept = set_aside(self.dir, self._set_aside)
                print(f"train.resume=false: the run that was in {self.dir} is kept in {kept}", flush=True)
            for leftover in self.dir.glob("*.pt.*.tmp"):  # a kill during save_checkpoint leaves these
                leftover.unlink()
            (self.dir / "config.yaml").write_text(_yaml(self.cfg), encoding="utf-8")
        # Lines logged after the checkpoint (or by a run killed before its first one) are replayed.
        self.metrics.truncate(self.step)
        self.started = True

    @property
    def resumed(self) -> bool:
        return self.saved is not None

    @property
    def elapsed(self) -> float:
        """Seconds of training in this run, counting the sessions before a resume."""
        return self._elapsed_before + time.time() - self._started

    @property
    def has_unsaved_steps(self) -> bool:
        """Steps were taken since ``last.pt`` was written (or read)."""
        return self.step != self._saved_step

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict | None:
        """Load the saved weights, optimizer and RNG state (call it after building both, where the
        checkpoint was taken); returns the trainer's own saved state, or None for a fresh run (which
        starts from the weights of ``train.init_from`` when it is given)."""
        if self.saved is None:
            init_from = self.cfg.get("train", {}).get("init_from")
            if init_from:
                self._initialise(model, Path(init_from))
            return None
        model.load_state_dict(self.saved["model"])
        if optimizer is not None:
            optimizer.load_state_dict(self.saved["optimizer"])
        set_rng_state(self.saved["rng"])
        print(f"resumed from {self.last_path} at step {self.step}", flush=True)
        return self.saved["trainer"]

    def _initialise(self, model: torch.nn.Module, path: Path) -> None:
        """``train.init_from``: start from another run's weights (same task and data; the cell,
        ``tau`` and ``noise_p`` may differ, since they change no parameter), with a fresh optimizer
        and this run's seed: e.g. a ``noise_p=1`` finetune of a ``noise_p=0.2`` model."""
        state = load_checkpoint(path)
        task = checkpoint_task(state, path)
        if task != self.task:
            raise ValueError(f"train.init_from={path}: a checkpoint of task {task!r}, this trainer is {self.task!r}")
        changed = differences(state["config"].get("data"), self.cfg.get("data"), "data")
        if changed:
            raise ValueError(f"train.init_from={path}: trained on other data (its vocabulary would not fit):\n  "
                             + "\n  ".join(changed))
        if state.get("data_fingerprint") and self.data_fingerprint:
            changed = fingerprint.changes(state["data_fingerprint"], self.data_fingerprint, what=("vocabulary",))
            if changed:  # the same word would start from another word's embedding
                raise ValueError(f"train.init_from={path}: its vocabulary is not this run's:\n  " + "\n  ".join(changed))
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise ValueError(f"train.init_from={path}: its weights do not fit this model ({error})") from None
        print(f"initialised from {path} (step {state.get('step', state.get('run', {}).get('step', '?'))} of its run)",
              flush=True)

    # ------------------------------------------------------------------ the questions a loop asks
    def budget_reached(self) -> str | None:
        """Why training must stop now (``'max_steps'``, ``'max_minutes'``), or None; rank 0's
        clock decides for every rank, so all stop after the same step."""
        if self.max_steps is not None and self.step >= self.max_steps:
            return "max_steps"
        if self.max_minutes is not None:
            if self.world.on_main(lambda: self.elapsed >= 60 * self.max_minutes):
                return "max_minutes"
        return None

    def due(self, end_of_epoch: bool = False) -> Due:
        """What is due after the step just taken: logging (``train.log_every``), a validation
        (``train.eval_every`` steps, the epoch's end, the minute budget), a checkpoint (any of
        those, ``train.checkpoint_every`` steps, a budget), and the budget reached."""
        budget = self.budget_reached()
        periodic = bool(self.eval_every) and self.step % self.eval_every == 0
        validate = periodic or end_of_epoch or budget == "max_minutes"
        save = validate or budget is not None or self.step % self.checkpoint_every == 0
        return Due(log=self.step % self.log_every == 0, validate=validate, save=save, budget=budget)

    # ------------------------------------------------------------------ the step
    def optimizer_step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_share: torch.Tensor,
                       clip_norm: float | None) -> tuple[float, float]:
        """One guarded update of the global loss, counted: ``loss_share`` is this rank's share of it
        (the shares add up to the loss of the whole batch; in one process, the loss). Refuses a
        diverged loss, back-propagates, sums the gradients over the ranks, clips, refuses a
        non-finite norm, then steps the optimizer. Returns ``(global loss, gradient norm)``, the
        same on every rank."""
        loss = float(self.world.all_sum(loss_share.detach()))
        self.guard.check_loss(loss, self.step)
        optimizer.zero_grad(set_to_none=True)
        loss_share.backward()
        self.world.sum_gradients(model)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm or math.inf)
        self.guard.check_grad_norm(grad_norm, self.step)
        optimizer.step()
        self.step += 1
        return loss, float(grad_norm)

    # ------------------------------------------------------------------ I/O
    def checkpoint(self, model: torch.nn.Module, **payload: Any) -> dict[str, Any]:
        """What every checkpoint of this run holds: task, config, weights, plus ``payload``."""
        return {"task": self.task, "config": self.cfg, "data_fingerprint": self.data_fingerprint,
                "model": model.state_dict(), **payload}

    def save(self, model, optimizer, trainer: dict, **payload: Any) -> None:
        """Write ``last.pt`` (atomically): everything an exact resume needs, ``trainer`` being the
        trainer's own state. The one it replaces is kept as ``last.prev.pt``, so a state saved just
        before a divergence is not all that's left."""
        if not self.started:
            raise RuntimeError("Run.save() before Run.start(): a trainer starts its run once its data and model are built")
        if self.world.is_main:  # every rank holds the same state (the generators move alike)
            state = self.checkpoint(
                model, optimizer=optimizer.state_dict(), trainer=trainer, rng=rng_state(),
                run={"step": self.step, "elapsed": self.elapsed, "loss_average": self.guard.loss_average}, **payload)
            save_checkpoint(state, self.last_path, keep_previous=self.previous_path)
        self._saved_step = self.step
        self.world.barrier()  # no rank reads a checkpoint before it is written

    def save_best(self, model, **payload: Any) -> None:
        """Write ``best.pt``: the weights to evaluate, loadable by :func:`g2lstm.load`."""
        if self.world.is_main:
            save_checkpoint(self.checkpoint(model, step=self.step, **payload), self.best_path)
        self.world.barrier()

    def record_validation(self, record: dict[str, Any], improved: bool, model, **payload: Any) -> None:
        """A validation's ``record`` to ``metrics.jsonl`` and the console; ``best.pt`` when it
        ``improved`` (with ``payload``, as :meth:`save_best`)."""
        if improved:
            self.save_best(model, **payload)
        self.metrics.write(**record, improved=improved)
        print_record(record)

    def progress(self, total: int, initial: int = 0, desc: str = "", unit: str = "it") -> tqdm:
        """The progress bar every trainer shows (refreshed at most every 2 s; off when not a tty,
        and on every rank but 0)."""
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit != "it",
                    leave=False, mininterval=2.0, dynamic_ncols=True, disable=None if self.world.is_main else True)

    def stopped_early(self, **details: Any) -> dict[str, Any]:
        """The result of a run stopped by ``train.max_steps``, with the trainer's ``details`` (no
        test: the folder goes on when run again with a raised budget; run again as it is, it
        changes nothing)."""
        print(f"stopped at step {self.step} (train.max_steps); run the folder again to go on", flush=True)
        self._unlock()
        return {"run_dir": str(self.dir), "steps": self.step, **details, "stopped": "max_steps"}

    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        """Record the final result (``results.json``, a ``final`` line in ``metrics.jsonl``) and mark
        ``last.pt`` finished, so that running the same command again changes nothing."""
        result = {"task": self.task, "run_dir": str(self.dir), "steps": self.step,
                  "train_minutes": self.elapsed / 60, **result}
        if self.world.is_main:
            (self.dir / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            self.metrics.write(event="final", **result)
            self.metrics.close(self.cfg, result)
            state = load_checkpoint(self.last_path)
            state["run"]["finished"] = True
            save_checkpoint(state, self.last_path)
        self._unlock()
        self.world.barrier()
        return result

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def result(self) -> dict[str, Any]:
        """The result of a finished run, as :meth:`finish` recorded it."""
        path = self.dir / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{self.last_path} says the run finished, but {path} is missing")
        result = json.loads(path.read_text(encoding="utf-8"))
        print(f"{self.dir} is a finished run (step {result['steps']}); nothing to do. Use a new run "
              "folder to train again.", flush=True)
        return result


def to_container(cfg) -> dict[str, Any]:
    """A plain, resolved dict of a Hydra/OmegaConf config (or a deep copy of a dict)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return json.loads(json.dumps(cfg))


def _yaml(cfg: dict) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(cfg))
