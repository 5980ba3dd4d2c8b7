"""Data parallelism for pre-training and fine-tuning: torchrun's (or a Slurm job's) processes, one per GPU or CPU
slot, each with a share of the global batch; gradients averaged in one flat all-reduce, evaluation sharded and its
inputs gathered. One process (no ``WORLD_SIZE`` above 1) is the same code with every collective a no-op.

Gradients are averaged by hand rather than by DistributedDataParallel: pre-training's renderer step runs several
backward passes per forward (ray chunks), which DDP's hooks do not allow, and one mechanism serves both stages.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int

    @property
    def main(self) -> bool:
        """The process that writes (records, checkpoints, logs, exports) and shows progress."""
        return self.rank == 0


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: ``taskset``, a container's or Slurm's cpuset), which
    ``os.cpu_count()`` over-counts: the local runner's workers and threads are shared out over these."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def launched() -> bool:
    """Whether this process is one of several (torchrun, or a multi-task Slurm job)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> tuple[Ranks, torch.device]:
    """This process's place among torchrun's (joined on first use: NCCL on CUDA, gloo on the CPU) and its device
    (``cuda:LOCAL_RANK`` when several processes share a node's GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)  # NCCL's object collectives (gather, broadcast) run on the current device
    return Ranks(rank, world), torch.device(device)


def current() -> Ranks:
    """The ranks of a process that has already called :func:`setup` (or of a single process)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks(0, 1)


def average_gradients(params: Iterable[torch.nn.Parameter], world: int) -> None:
    """Mean of the parameters' gradients over the ranks, in one flat all-reduce (a parameter a rank did not use
    contributes zeros). A parameter no rank used keeps no gradient, as in one process: the optimiser then leaves it
    alone (PDNorm's norms of the conditions absent from a step), where a zero gradient would still decay it."""
    params = list(params)
    if world == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    used = grads[0].new_tensor([float(p.grad is not None) for p in params])
    flat = torch.cat([g.reshape(-1) for g in grads] + [used])
    dist.all_reduce(flat)
    flat, used = flat[:-len(params)] / world, flat[-len(params):]
    for p, g, users in zip(params, flat.split([g.numel() for g in grads]), used.tolist(), strict=True):
        p.grad = g.view_as(p).clone() if users > 0 else None


def mean_terms(terms: dict[str, float] | None, ranks: Ranks) -> dict[str, float] | None:
    """Each loss term averaged over the ranks that had one (a rank whose share had nothing to learn from has none);
    what one process would log for the global batch."""
    if ranks.world == 1:
        return terms
    every: list[dict[str, float] | None] = [None] * ranks.world
    dist.all_gather_object(every, terms)
    names = sorted({n for t in every if t for n in t})
    return {n: sum(t[n] for t in every if t and n in t) / sum(1 for t in every if t and n in t) for n in names}


def all_true(flag: bool, world: int, device: torch.device) -> bool:
    """Whether ``flag`` holds on every rank (all ranks must take the same branch around a collective)."""
    if world == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() == 1.0)


def in_sync(params: Iterable[torch.Tensor], world: int, device: torch.device) -> bool:
    """Whether every rank holds the same parameters (per-tensor sums compared, min against max)."""
    if world == 1:
        return True
    sums = torch.stack([p.detach().double().sum() for p in params]).to(device)
    low, high = sums.clone(), sums.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return bool(torch.equal(low, high))


def run_facts(params: Iterable[torch.Tensor], ranks: Ranks, device: torch.device) -> dict[str, object]:
    """What a record says of a run's processes: how many, and whether they ended with the same weights."""
    return {"world_size": ranks.world, "ranks_in_sync": in_sync(params, ranks.world, device) if ranks.world > 1
            else None}


def broadcast(value: object, ranks: Ranks) -> object:
    """The main rank's ``value`` on every rank."""
    if ranks.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(count: int, ranks: Ranks) -> range:
    """This rank's items of ``count`` (every ``world``-th, from its rank): evaluation is split over the ranks."""
    return range(ranks.rank, count, ranks.world)


def sum_over_ranks(array: np.ndarray, ranks: Ranks) -> np.ndarray:
    """``array`` summed over the ranks (e.g. confusion matrices of each rank's evaluation scenes)."""
    if ranks.world == 1:
        return array
    total = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    if dist.get_backend() == "nccl":  # NCCL reduces CUDA tensors only
        total = total.cuda()
    dist.all_reduce(total)
    return total.cpu().numpy().astype(array.dtype)


def gather_in_order(items: Sequence[object], ranks: Ranks) -> list[object]:
    """Every rank's :func:`shard` results, put back in item order on every rank."""
    if ranks.world == 1:
        return list(items)
    parts: list[list[object]] = [[] for _ in range(ranks.world)]
    dist.all_gather_object(parts, list(items))
    count = sum(len(p) for p in parts)
    return [parts[i % ranks.world][i // ranks.world] for i in range(count)]


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()
