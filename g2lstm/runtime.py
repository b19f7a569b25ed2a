"""What every training run needs, shared by every trainer.

:class:`Run` is the run lifecycle (folder, saved config, threads, seed, resume with a config check,
``last.pt`` / ``best.pt``, step and minute budgets, progress bar, metrics log, data parallelism
across processes started by ``torchrun``); below it, atomic checkpoints that load with
``torch.load(weights_only=True)``, exact resume of the random number generators, metrics as JSON
lines and a clear stop on a non-finite loss.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm import tqdm

from g2lstm import config as checks


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or written; the message names the path and the way on."""


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite; the last good checkpoint is kept."""


class DivergedError(NonFiniteLossError):
    """Raised, before the optimizer step, when training diverges: a non-finite loss or gradient
    norm, or a loss above ``train.divergence_factor`` times its running average."""


def exp_or_inf(loss: float) -> float:
    """``exp(loss)`` (a perplexity), ``inf`` where it overflows a float instead of raising."""
    return math.exp(loss) if loss < 709.0 else math.inf


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike,
                    keep_previous: str | os.PathLike | None = None) -> None:
    """Write ``state`` to ``path`` atomically: a crash leaves either the old file or the new one
    (with ``keep_previous``, the old one is moved there first: a crash between the two moves
    leaves it there only).

    ``state`` must hold only tensors and plain Python values so that it loads with
    ``torch.load(weights_only=True)``.
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
                              f"{path.parent} (or fix its permissions) and run again: the run resumes from "
                              f"its last checkpoint") from error
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` without unpickling arbitrary code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    way_on = ("Load another checkpoint of the run (best.pt or last.pt), or start its run folder afresh "
              "with train.resume=false")
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


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes (``torchrun`` sets ``RANK``,
    ``WORLD_SIZE`` and ``LOCAL_RANK``; without them, one process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "World":
        world = cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
        if not 0 <= world.rank < world.size:
            raise ValueError(f"RANK={world.rank} must be in [0, WORLD_SIZE={world.size})")
        return world

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints the progress bar."""
        return self.rank == 0

    def even_rows(self, global_rows: int, what: str) -> tuple[int, int]:
        """``(offset, rows)`` of this rank's equal part of ``global_rows`` rows; an error naming
        ``what`` (the config key) unless the world size divides them."""
        if global_rows % self.size:
            raise ValueError(f"{what}={global_rows} is the global batch size and must be divisible by the "
                             f"number of processes (WORLD_SIZE={self.size})")
        rows = global_rows // self.size
        return self.rank * rows, rows

    def split_rows(self, global_rows: int) -> tuple[int, int]:
        """``(offset, rows)`` of this rank's contiguous part of a batch of ``global_rows`` rows (parts
        differ by at most one row); an error if a rank would get none."""
        if global_rows < self.size:
            raise ValueError(f"a batch of {global_rows} examples cannot be shared by {self.size} processes; "
                             "raise the batch size (train.max_tokens) or use fewer processes")
        start = self.rank * global_rows // self.size
        return start, (self.rank + 1) * global_rows // self.size - start


def init_distributed(world: World, device: str) -> None:
    """Join the process group of a ``torchrun`` launch (gloo on the CPU, nccl on CUDA), once."""
    import torch.distributed as dist

    if world.size == 1 or dist.is_initialized():
        return
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda:
        torch.cuda.set_device(world.local_rank)  # "cuda" means this process's GPU from here on
    dist.init_process_group("nccl" if on_cuda else "gloo", rank=world.rank, world_size=world.size)


class MetricsLog:
    """Append-only JSON-lines log: one dict per line, flushed at once so a kill loses nothing."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        record.setdefault("time", time.time())
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate(self, step: int) -> None:
        """Drop the lines of steps after ``step`` (a resumed run replays them), atomically."""
        records = self.read()
        kept = [r for r in records if r.get("step", 0) <= step and r.get("event") != "final"]
        if len(kept) == len(records):
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)


# ----------------------------------------------------------------------------- the run lifecycle

LAST, BEST, PREVIOUS = "last.pt", "best.pt", "last.prev.pt"
GUARD_DECAY = 0.98  # of the exponential running average of the loss (from the first step on)
COMPARED_SECTIONS = ("data", "model")  # a resumed run must keep these exactly


class _NoMetrics(MetricsLog):
    """The metrics log of a rank other than 0: writes nothing, reads nothing."""

    def write(self, **record: Any) -> None:
        pass

    def read(self) -> list[dict[str, Any]]:
        return []

    def truncate(self, step: int) -> None:
        pass


class Run:
    """One training run in one folder, shared by every trainer.

    The folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``last.pt``
    (everything an exact resume needs) and ``best.pt`` (the best weights on validation). A run
    started in a folder that holds ``last.pt`` resumes from it (unless ``train.resume=false``):
    the checkpoint must come from the same task with the same ``data`` and ``model`` config, which
    is checked before anything in the folder is written. A finished run started again with the
    same ``train`` config is left as it is (:attr:`finished`); with another one (e.g. more
    epochs) it goes on. The step and minute budgets
    (``train.max_steps``, ``train.max_minutes``) count across resumes.

    A trainer uses it top to bottom::

        run = Run(cfg, "lm", run_dir)              # folder, config.yaml, threads, seed
        ... build data and model ...
        trainer_state = run.restore(model, optimizer) or {...fresh state...}
        while not run.budget_reached():
            ... one step ...; run.step += 1
            run.save(model, optimizer, trainer_state, **task_payload)   # last.pt
        run.finish(result)                          # results.json, the 'final' metrics line

    Data parallelism: started by ``torchrun --nproc_per_node=N``, every process builds a ``Run``,
    which joins the process group (:attr:`world`); every rank resumes from the same ``last.pt``
    and seeds its generators alike, and only rank 0 writes files (config, checkpoints, metrics,
    results) and shows the progress bar. The trainer gives each rank its rows of the global batch
    (:meth:`World.even_rows`, :meth:`World.split_rows`, under :func:`g2lstm.shard.batch_shard`)
    and passes :meth:`gradients` the rank's share of the global loss (the shares add up to it);
    gradients are summed over the ranks, so every rank applies the update one process with the
    whole batch would. Decisions (budgets, evaluation results) come from rank 0 (:meth:`on_main`).
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
        self.saved = None
        if self.cfg.get("train", {}).get("resume", True):
            resume_from = self.last_path if self.last_path.exists() else self.previous_path
            if resume_from.exists():  # (only the previous one is there after a kill inside save())
                self.saved = load_checkpoint(resume_from)
                if overrides is not None:
                    self.cfg = config_for_resume(self.saved["config"], self.cfg, overrides)
                # train.init_from starts a fresh run only: given to a folder that resumes, it would be ignored
                check_resumable(self.saved, task, self.cfg, resume_from, fixed_keys + ("train.init_from",))
        train_cfg = self.cfg.get("train", {})
        if (self.saved is not None and self.saved["run"].get("finished")
                and self.saved["config"].get("train") == train_cfg):
            # Running a finished run's command again changes nothing in its folder; with another
            # train config (a raised budget) it goes on from last.pt.
            self.finished = True
            return
        self.finished = False
        if self.world.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            for leftover in self.dir.glob("*.pt.*.tmp"):  # a kill during save_checkpoint leaves these
                leftover.unlink()
            (self.dir / "config.yaml").write_text(_yaml(self.cfg), encoding="utf-8")
        if self.cfg.get("threads"):
            torch.set_num_threads(int(self.cfg["threads"]))
        seed_everything(int(self.cfg["seed"]))
        self.metrics = (MetricsLog if self.world.is_main else _NoMetrics)(self.dir / "metrics.jsonl")
        run_state = (self.saved or {}).get("run", {})
        self.step: int = run_state.get("step", 0)
        self._elapsed_before = run_state.get("elapsed", 0.0)
        self._started = time.time()
        self.max_steps = train_cfg.get("max_steps")
        self.max_minutes = train_cfg.get("max_minutes")
        self.divergence_factor = train_cfg.get("divergence_factor")
        self.saturation_every = train_cfg.get("saturation_every")
        schedules = {k: v for k, v in (train_cfg.get("schedules") or {}).items() if v is not None}
        self.schedules = check_schedules(schedules, self.cfg.get("model", {}))
        self.loss_average: float | None = run_state.get("loss_average")
        # Lines logged after the checkpoint (or by a run killed before its first one) are replayed.
        self.metrics.truncate(self.step)

    @property
    def resumed(self) -> bool:
        return self.saved is not None

    @property
    def elapsed(self) -> float:
        """Seconds of training in this run, counting the sessions before a resume."""
        return self._elapsed_before + time.time() - self._started

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict | None:
        """Load the saved weights, optimizer and RNG state (call it after building both, where the
        checkpoint was taken); returns the trainer's own saved state, or None for a fresh run."""
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
        differences = _differences(state["config"].get("data"), self.cfg.get("data"), "data")
        if differences:
            raise ValueError(f"train.init_from={path}: trained on other data (its vocabulary would not fit):\n  "
                             + "\n  ".join(differences))
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise ValueError(f"train.init_from={path}: its weights do not fit this model ({error})") from None
        print(f"initialised from {path} (step {state.get('step', state.get('run', {}).get('step', '?'))} of its run)",
              flush=True)

    def budget_reached(self) -> str | None:
        """Why training must stop now (``'max_steps'``, ``'max_minutes'``), or None; rank 0's
        clock decides for every rank, so all stop after the same step."""
        if self.max_steps is not None and self.step >= self.max_steps:
            return "max_steps"
        if self.max_minutes is not None:
            out_of_time = self.on_main(lambda: self.elapsed >= 60 * self.max_minutes)
            if out_of_time:
                return "max_minutes"
        return None

    # ------------------------------------------------------------------ data parallelism
    def on_main(self, compute):
        """``compute()`` on rank 0 only, its result (a picklable value) handed to every rank:
        evaluations (which draw no random numbers) and the decisions taken from them."""
        if self.world.size == 1:
            return compute()
        import torch.distributed as dist

        box = [compute() if self.world.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of ``value`` over the ranks (``value`` itself in one process)."""
        if self.world.size == 1:
            return value
        import torch.distributed as dist

        total = value.detach().clone()
        dist.all_reduce(total)
        return total

    def gather_rows(self, value: torch.Tensor, dim: int) -> torch.Tensor:
        """The ranks' equal parts of ``value`` joined along ``dim`` in rank order (e.g. the LM's
        hidden state of the global batch, for a checkpoint that resumes at any world size)."""
        if self.world.size == 1:
            return value
        import torch.distributed as dist

        parts = [torch.empty_like(value) for _ in range(self.world.size)]
        dist.all_gather(parts, value.contiguous())
        return torch.cat(parts, dim)

    def barrier(self) -> None:
        if self.world.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def gradients(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_share: torch.Tensor,
                  clip_norm: float | None) -> tuple[float, float]:
        """Guarded gradients of the global loss: ``loss_share`` is this rank's share of it (the
        shares add up to the loss of the whole batch; in one process, the loss). Refuses a diverged
        loss, back-propagates, sums the gradients over the ranks, clips and refuses a non-finite
        norm. Returns ``(global loss, gradient norm)``; every rank gets the same of both."""
        loss = float(self.all_sum(loss_share.detach()))
        self.check_loss(loss)
        optimizer.zero_grad(set_to_none=True)
        loss_share.backward()
        self._sum_gradients(model)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm or math.inf)
        self.check_grad_norm(grad_norm)
        return loss, float(grad_norm)

    def _sum_gradients(self, model: torch.nn.Module) -> None:
        # One all-reduce of all gradients flattened; every rank runs the same code on the same
        # model, so the same parameters have gradients everywhere.
        if self.world.size == 1:
            return
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        for grad, summed in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(summed)

    def optimizer_step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_share: torch.Tensor,
                       clip_norm: float | None) -> tuple[float, float]:
        """One guarded update (:meth:`gradients`, then the optimizer's step); counts the step and
        returns ``(global loss, gradient norm)``."""
        loss, grad_norm = self.gradients(model, optimizer, loss_share, clip_norm)
        optimizer.step()
        self.step += 1
        return loss, grad_norm

    def after_epoch_step(self, ts: dict, epoch_size: int, validate, save) -> tuple[bool, str | None]:
        """The bookkeeping of an epoch-based trainer after a step (``ts`` holds ``epoch``,
        ``batch_in_epoch``, ``stopped``): count the batch, ``validate()`` and ``save()`` when due
        (``train.eval_every`` steps, epoch end, minute budget; ``train.checkpoint_every`` steps).
        Returns (leave the epoch loop now, the budget reached or None)."""
        t = self.cfg["train"]
        ts["batch_in_epoch"] += 1
        if ts["batch_in_epoch"] == epoch_size:
            ts["epoch"], ts["batch_in_epoch"] = ts["epoch"] + 1, 0
        budget = self.budget_reached()
        periodic = t["eval_every"] and self.step % t["eval_every"] == 0
        if periodic or ts["batch_in_epoch"] == 0 or budget == "max_minutes":
            validate()
        if periodic or ts["batch_in_epoch"] == 0 or budget or self.step % t["checkpoint_every"] == 0:
            save()
        return bool(ts["stopped"] or budget or ts["batch_in_epoch"] == 0), budget

    def end_epochs(self, ts: dict, budget: str | None, save) -> dict | None:
        """After an epoch-based trainer's loop: the partial result of a ``max_steps`` stop (no test;
        the folder goes on when run again), or None once why training ended is recorded and saved."""
        if budget == "max_steps" and ts["stopped"] is None:
            print(f"stopped at step {self.step} (train.max_steps); run the folder again to go on")
            return {"run_dir": str(self.dir), "steps": self.step, "epochs": ts["epoch"], "stopped": "max_steps"}
        if ts["stopped"] is None:
            ts["stopped"] = (f"budget reached ({self.elapsed / 60:.1f} min)" if budget
                             else f"max_epochs={self.cfg['train']['max_epochs']} reached")
        save()
        print(f"stopped: {ts['stopped']}")
        return None

    def check_loss(self, loss: float | torch.Tensor) -> None:
        """Stop (:class:`DivergedError`) before a step whose loss is non-finite or above
        ``train.divergence_factor`` times the running average of the steps before it."""
        value = float(loss)
        if not math.isfinite(value):
            self._diverged(f"the training loss became {value}")
        factor = self.divergence_factor
        if factor and self.loss_average is not None and value > factor * self.loss_average:
            self._diverged(f"the training loss {value:.4g} is more than train.divergence_factor={factor} "
                           f"times its running average {self.loss_average:.4g}")
        self.loss_average = value if self.loss_average is None else \
            GUARD_DECAY * self.loss_average + (1 - GUARD_DECAY) * value

    def check_grad_norm(self, norm: float | torch.Tensor) -> None:
        """Stop (:class:`DivergedError`) before a step whose gradient norm is non-finite."""
        if not math.isfinite(float(norm)):
            self._diverged(f"the gradient norm became {float(norm)}")

    def _diverged(self, what: str) -> None:
        kept = [f"{p} (step {load_checkpoint(p)['run']['step']})" for p in (self.last_path, self.previous_path)
                if p.exists()]
        raise DivergedError(
            f"{what} at step {self.step}; the step was not applied and training stops. Kept: "
            + (", ".join(kept) or "no checkpoint yet") + ". Resume from them with a smaller train.lr "
            "(the run folder resumes from last.pt), or start afresh with train.resume=false.")

    def apply_schedules(self, model: torch.nn.Module) -> dict[str, float]:
        """Set the scheduled G2 options (``train.schedules``, e.g. ``tau`` annealed) of every
        recurrent layer to their values at the current step; returns them."""
        values = {option: schedule_value(s, self.cfg["model"][option], self.step) for option, s in self.schedules.items()}
        if values:
            from .protocol import lstm_layers

            for layer in lstm_layers(model).values():
                for option, value in values.items():
                    setattr(layer, option, value)
        return values

    def watch_gates(self, model: torch.nn.Module, batches, forward=None) -> dict[str, float] | None:
        """Every ``train.saturation_every`` steps (step 0 included): the share of gate values
        < 0.1 and > 0.9 per layer over ``batches`` (a fixed validation subset, in evaluation mode,
        drawing no random numbers), logged as an ``event: "gates"`` line of ``metrics.jsonl``.
        Returns the pooled input / forget shares outside (0.1, 0.9) for the progress bar, or None."""
        if not self.saturation_every or self.step % self.saturation_every or not self.world.is_main:
            return None
        from .diagnostics import collect_gate_stats, pooled_saturation, saturation_record

        stats = collect_gate_stats(model, batches, forward)
        pooled = pooled_saturation(stats.summary())
        self.metrics.write(event="gates", step=self.step, layers=saturation_record(stats), pooled=pooled)
        return {f"{gate[0]}_bin": round(pooled[f"{gate}_share_below_0.1"] + pooled[f"{gate}_share_above_0.9"], 3)
                for gate in ("input", "forget")}

    def checkpoint(self, model: torch.nn.Module, **payload: Any) -> dict[str, Any]:
        """What every checkpoint of this run holds: task, config, weights, plus ``payload``."""
        return {"task": self.task, "config": self.cfg, "model": model.state_dict(), **payload}

    def save(self, model, optimizer, trainer: dict, **payload: Any) -> None:
        """Write ``last.pt`` (atomically): everything an exact resume needs. The one it replaces
        is kept as ``last.prev.pt``, so a state saved just before a divergence is not all that's left."""
        if self.world.is_main:  # every rank holds the same state (the generators move alike)
            state = self.checkpoint(
                model, optimizer=optimizer.state_dict(), trainer=trainer, rng=rng_state(),
                run={"step": self.step, "elapsed": self.elapsed, "loss_average": self.loss_average}, **payload)
            save_checkpoint(state, self.last_path, keep_previous=self.previous_path)
        self.barrier()  # no rank reads a checkpoint before it is written

    def save_best(self, model, **payload: Any) -> None:
        """Write ``best.pt``: the weights to evaluate, loadable by :func:`g2lstm.load`."""
        if self.world.is_main:
            save_checkpoint(self.checkpoint(model, step=self.step, **payload), self.best_path)
        self.barrier()

    def progress(self, total: int, initial: int = 0, desc: str = "", unit: str = "it") -> tqdm:
        """The progress bar every trainer shows (refreshed at most every 2 s; off when not a tty,
        and on every rank but 0)."""
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit != "it",
                    leave=False, mininterval=2.0, dynamic_ncols=True, disable=None if self.world.is_main else True)

    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        """Record the final result (``results.json``, a ``final`` line in ``metrics.jsonl``) and mark
        ``last.pt`` finished, so that running the same command again changes nothing."""
        result = {"task": self.task, "run_dir": str(self.dir), "steps": self.step,
                  "train_minutes": self.elapsed / 60, **result}
        if self.world.is_main:
            self._write_final(result)
        self.barrier()
        return result

    def _write_final(self, result: dict[str, Any]) -> None:
        (self.dir / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        self.metrics.write(event="final", **result)
        gates = [r for r in self.metrics.read() if r.get("event") == "gates"]
        if gates:
            from .diagnostics import plot_saturation

            plot_saturation(gates, self.dir / "saturation.png", title=f"{self.dir.name}: gate saturation")
        state = load_checkpoint(self.last_path)
        state["run"]["finished"] = True
        save_checkpoint(state, self.last_path)

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


def _differences(saved, current, prefix: str) -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current))
        return [d for k in keys for d in _differences(saved.get(k), current.get(k), f"{prefix}.{k}")]
    return [] if saved == current else [f"{prefix}: {saved!r} in the checkpoint, {current!r} now"]


SCHEDULABLE = ("tau", "noise_p")  # G2 options a trainer may change step by step
SHAPES = ("linear", "exponential")


@dataclass
class Schedules:
    """``train.schedules`` of every trainer: per option, null (fixed) or ``{end, steps, shape}``:
    to ``end`` at ``steps``, held after (see :func:`check_schedules`)."""

    # Any, not Optional[dict]: OmegaConf cannot merge a command line's {end: ...} into a typed null
    tau: Any = None
    noise_p: Any = None

    def __post_init__(self):
        for option in SCHEDULABLE:
            checks.require(self, option, lambda s: isinstance(s, dict) and set(s) == {"end", "steps", "shape"}
                           and s["steps"] > 0 and s["shape"] in SHAPES, f"{{end, steps > 0, shape in {list(SHAPES)}}}", optional=True)


@dataclass
class RunConfig:
    """The keys of ``train`` that :class:`Run` and the guards read, shared by every trainer's
    train schema (their meaning: ``g2lstm/conf/lm/train/nt_asgd.yaml``)."""

    max_steps: Optional[int] = None
    max_minutes: Optional[float] = None
    log_every: int = 50
    checkpoint_every: int = 200
    saturation_every: Optional[int] = 200
    schedules: Schedules = field(default_factory=Schedules)
    divergence_factor: Optional[float] = 10.0
    resume: bool = True
    init_from: Optional[str] = None  # a checkpoint whose weights start a fresh run (a finetune)

    def __post_init__(self):
        checks.positive(self, "log_every", "checkpoint_every")
        checks.positive(self, "max_steps", "saturation_every", optional=True)
        checks.at_least(self, 0, "max_minutes", optional=True)
        checks.require(self, "divergence_factor", lambda v: v > 1, "a factor > 1 (of the running average loss)",
                       optional=True)


@dataclass
class TaskConfig:
    """The top-level keys of a trainer's config that :class:`Run` reads, the base of every
    trainer's root schema (``LMConfig``, ``MTConfig``, ``ClassifyConfig``, ``TranslitConfig``)."""

    seed: int = 1
    device: str = "cpu"
    threads: Optional[int] = 1  # torch.set_num_threads; null keeps torch's default

    def __post_init__(self):
        checks.check_device(self, "device")
        checks.positive(self, "threads", optional=True)


def check_schedules(schedules: dict, model_cfg: dict) -> dict:
    """``train.schedules``: ``{option: {end, steps, shape}}`` (an option set to null is fixed),
    from the model config's value at step 0 to ``end`` at ``steps`` (held after); a clear error
    for anything else."""
    for option, schedule in schedules.items():
        if option not in SCHEDULABLE:
            raise ValueError(f"train.schedules.{option}: only {SCHEDULABLE} can be scheduled")
        if set(schedule) != {"end", "steps", "shape"} or schedule["shape"] not in SHAPES or not schedule["steps"] > 0:
            raise ValueError(f"train.schedules.{option} must be {{end, steps > 0, shape in {SHAPES}}}, got {schedule}")
        if option == "tau" and model_cfg.get("cell") == "sharpened":
            raise ValueError("train.schedules.tau: a sharpened cell uses tau at evaluation too, and checkpoints "
                             "keep model.tau; schedule tau for model.cell=g2lstm only")
        if option not in model_cfg:
            raise ValueError(f"train.schedules.{option}: the model config has no {option!r} to start from")
    return schedules


def schedule_value(schedule: dict, start: float, step: int) -> float:
    """The scheduled value at ``step``: linear or exponential from ``start`` to ``schedule['end']``."""
    progress = min(step / schedule["steps"], 1.0)
    end = schedule["end"]
    if schedule["shape"] == "exponential":
        return start * (end / start) ** progress
    return start + (end - start) * progress


def config_for_resume(saved: dict, current: dict, overrides: list[str]) -> dict[str, Any]:
    """The config of a resumed run: the run's saved one with the command line's ``key=value``
    overrides applied (their values as composed in ``current``), so that resuming a run folder
    needs no overrides. A config-group choice (``data=brown``, ``experiment=...``) makes it the
    whole ``current`` config, whose data and model are then compared with the saved ones."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config = json.loads(json.dumps(saved))
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        parts, node = key.split("."), current
        for part in parts:
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if override.is_delete() or node is _ABSENT or isinstance(node, dict):
            return current
        target = config
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = node
    return config


_ABSENT = object()


def _get(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def check_resumable(saved: dict, task: str, cfg: dict, path: Path, fixed_keys: tuple[str, ...] = ()) -> None:
    """Refuse to resume from a checkpoint of another task or with another data / model config
    (or another value of one of ``fixed_keys``)."""
    saved_task = checkpoint_task(saved, path)
    if saved_task != task:
        raise ValueError(f"cannot resume: {path} is a checkpoint of task {saved_task!r}, this trainer is "
                         f"{task!r}; use a new run folder")
    differences = [d for section in COMPARED_SECTIONS
                   for d in _differences(saved["config"].get(section), cfg.get(section), section)]
    differences += [d for key in fixed_keys for d in _differences(_get(saved["config"], key), _get(cfg, key), key)]
    if differences:
        raise ValueError(f"cannot resume from {path}: the config changed:\n  " + "\n  ".join(differences)
                         + "\nuse a new run folder, or train.resume=false to start this folder afresh")


def checkpoint_task(state: dict, path: str | os.PathLike = "<checkpoint>") -> str:
    """The task that wrote a checkpoint (older checkpoints are recognised by their contents)."""
    if "task" in state:
        return state["task"]
    if "tokenizers" in state:
        return "mt"
    if "vocab" in state:
        return "lm"
    raise ValueError(f"{path}: not a g2lstm checkpoint (no 'task' key; keys {sorted(state)})")
