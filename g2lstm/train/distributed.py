"""Data parallelism across the processes ``torchrun`` starts: this process's place among them
(:class:`World`) and the few collectives a trainer needs, each a no-op in one process.

The seam that gives a rank its rows of the global batch (gate noise and dropout masks drawn as in
the whole batch) is :func:`g2lstm.shard.batch_shard`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


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

    # ------------------------------------------------------------------ collectives
    def on_main(self, compute: Callable[[], T]) -> T:
        """``compute()`` on rank 0 only, its result (a picklable value) handed to every rank:
        evaluations (which draw no random numbers) and the decisions taken from them."""
        if self.size == 1:
            return compute()
        import torch.distributed as dist

        box = [compute() if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of ``value`` over the ranks (``value`` itself in one process)."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        total = value.detach().clone()
        dist.all_reduce(total)
        return total

    def gather_rows(self, value: torch.Tensor, dim: int) -> torch.Tensor:
        """The ranks' equal parts of ``value`` joined along ``dim`` in rank order (e.g. the LM's
        hidden state of the global batch, for a checkpoint that resumes at any world size)."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        parts = [torch.empty_like(value) for _ in range(self.size)]
        dist.all_gather(parts, value.contiguous())
        return torch.cat(parts, dim)

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def sum_gradients(self, model: torch.nn.Module) -> None:
        """Sum every parameter's gradient over the ranks, in one all-reduce of them all flattened
        (every rank runs the same code on the same model, so the same parameters have gradients)."""
        if self.size == 1:
            return
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        for grad, summed in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(summed)


def init_distributed(world: World, device: str) -> None:
    """Join the process group of a ``torchrun`` launch (gloo on the CPU, nccl on CUDA), once."""
    import torch.distributed as dist

    if world.size == 1 or dist.is_initialized():
        return
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda:
        torch.cuda.set_device(world.local_rank)  # "cuda" means this process's GPU from here on
    dist.init_process_group("nccl" if on_cuda else "gloo", rank=world.rank, world_size=world.size)


def forward_rows(world: World, model: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor, device):
    """``model(tokens, lengths)`` on this rank's rows of a global batch (``tokens`` (N, T),
    ``lengths`` (N,)), with the gate noise and dropout masks those rows get in the whole batch;
    returns the output and the slice of the rows."""
    from ..shard import batch_shard

    offset, rows = world.split_rows(len(lengths))
    mine = slice(offset, offset + rows)
    with batch_shard(offset, rows, len(lengths), lengths=lengths.tolist()):
        return model(tokens[mine].to(device), lengths[mine].to(device)), mine
