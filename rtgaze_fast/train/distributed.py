"""Multi-process training on torch.distributed (issue #18).

``torchrun --nproc_per_node=N -m rtgaze_fast train ...`` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous in the environment; ``setup()`` joins the process group (NCCL when
the processes drive GPUs, gloo on CPUs) and gives each process its device. Without those
variables it is a single process and nothing is initialised.

Data order does not depend on the number of processes: ``GlobalBatchSampler`` draws one
permutation of the dataset per epoch from (seed, epoch), cuts it into global batches of ``B``
items, and gives process ``r`` of ``W`` items ``[r*B/W, (r+1)*B/W)`` of each. Step ``k`` of any run
with global batch ``B`` therefore sees the same ``B`` items, so a checkpoint resumes exactly onto
any process count that divides ``B`` (torch's DistributedSampler deals items round-robin and pads
each epoch to a multiple of W, which ties the order to W).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as torch_dist


@dataclass
class Dist:
    """This process's place: ``rank`` of ``world`` processes, its ``device``; ``local_rank`` on its machine."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over processes (a new tensor; ``t`` itself is left alone)."""
        if not self.enabled:
            return t
        out = t.detach().clone()
        torch_dist.all_reduce(out)
        return out

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        return self.all_reduce_sum(t) / self.world if self.enabled else t


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: Optional[str] = None, timeout_minutes: float = 30.0) -> Dist:
    """Join torchrun's process group when WORLD_SIZE > 1; pick this process's device.

    ``device``: 'cuda' or 'cpu' (default: cuda when available). With CUDA, process ``local_rank``
    uses GPU ``local_rank`` and the NCCL backend; on CPUs, gloo. Single process: nothing to join.
    """
    world = env_world()
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    if world <= 1:
        return Dist(device=torch.device(device or ("cuda" if use_cuda else "cpu")))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs: "
                               "use --nproc_per_node <= the GPUs of each machine")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                      timeout=datetime.timedelta(minutes=timeout_minutes),
                                      device_id=dev if use_cuda else None)
    return Dist(rank=rank, world=world, local_rank=local, device=dev)


def teardown(d: Dist) -> None:
    if d.enabled and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng((seed, epoch, 0x5EED)).permutation(n)


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Endless per-process batches of ``(epoch, index)`` keys: this process's slice of global
    batch ``start_step``, ``start_step + 1``, ... (see the module docstring). Each epoch holds
    ``n // global_batch`` global batches (the remainder of the permutation is left out)."""

    def __init__(self, n: int, global_batch: int, rank: int = 0, world: int = 1, seed: int = 0,
                 start_step: int = 0):
        if global_batch < 1 or global_batch % world:
            raise ValueError(f"the global batch ({global_batch}) must be a positive multiple of the "
                             f"number of processes ({world})")
        if n < global_batch:
            raise ValueError(f"the dataset has {n} items, fewer than one global batch of {global_batch}")
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.start_step = seed, start_step
        self.per_epoch = n // global_batch
        self.local = global_batch // world

    def batch(self, step: int) -> List[Tuple[int, int]]:
        """This process's keys of global batch ``step``."""
        epoch, k = divmod(step, self.per_epoch)
        perm = self._perm(epoch)
        lo = k * self.global_batch + self.rank * self.local
        return [(epoch, int(i)) for i in perm[lo:lo + self.local]]

    def _perm(self, epoch: int) -> np.ndarray:
        if getattr(self, "_cached", (None,))[0] != epoch:
            self._cached = (epoch, epoch_permutation(self.n, self.seed, epoch))
        return self._cached[1]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1
