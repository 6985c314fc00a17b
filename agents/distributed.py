"""Data-parallel training under ``torchrun``: one process per device, gradients averaged.

Without torchrun (no ``WORLD_SIZE`` in the environment) `Distributed.from_environment` gives a
single-process stand-in whose collectives do nothing, so train.py reads the same either way.
Under torchrun each rank steps its own envs and computes gradients on its own data; every
optimiser step averages the gradients of all ranks with one all-reduce of the flattened
gradients (as CleanRL's ``ppo_atari_multigpu.py``), so every rank applies the same update to the
same weights. The first weights are rank 0's (broadcast), since each rank seeds torch with its
own seed.

Backends follow the device: NCCL for CUDA (one GPU per local rank), gloo for the CPU. Every
collective has the process group's timeout; a rank that vanished (killed, crashed, stopped by
a signal) makes the others' next collective fail with a `DistributedError` naming this rank
instead of hanging.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as torch_dist

from pixelplay.envs.errors import PixelplayError


class DistributedError(PixelplayError):
    """The other ranks could not be reached (one died or stopped), or the job is misconfigured."""


class Distributed:
    """This process's place in a torchrun job (rank, world size, device) and its collectives."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, device: torch.device | None = None):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device = device if device is not None else torch.device("cpu")

    @classmethod
    def from_environment(cls, device: torch.device, timeout_s: float = 1800.0) -> Distributed:
        """Join the torchrun job described by ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (or stand alone).

        On CUDA each rank takes the GPU of its local rank (``cuda:LOCAL_RANK``) and NCCL; on the
        CPU, gloo. ``timeout_s`` bounds every collective.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls(device=device)
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise DistributedError(
                    f"local rank {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible); "
                    "start at most one process per GPU (--nproc_per_node)"
                )
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            backend = "gloo"
        timeout = dt.timedelta(seconds=timeout_s)
        try:
            torch_dist.init_process_group(backend, store=_job_store(rank, world_size, timeout), rank=rank,
                                          world_size=world_size, timeout=timeout)
        except (RuntimeError, ValueError, KeyError) as error:
            raise DistributedError(f"rank {rank} could not join the torchrun job: {_first_line(error)}") from None
        return cls(rank, world_size, local_rank, device)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory, logs and checkpoints."""
        return self.rank == 0

    def _collective(self, what: str, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except (RuntimeError, ValueError) as error:  # gloo / NCCL errors, DistBackendError included
            raise DistributedError(
                f"rank {self.rank} lost the other ranks during {what} (one was stopped or died): {_first_line(error)}"
            ) from None

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Replace every gradient by its mean over the ranks: one all-reduce of them all, flattened."""
        if not self.active:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._collective("the gradient all-reduce", torch_dist.all_reduce, flat)
        flat /= self.world_size
        offset = 0
        for grad in grads:
            count = grad.numel()
            grad.copy_(flat[offset : offset + count].view_as(grad))
            offset += count

    def broadcast_state(self, state: Any) -> None:
        """Overwrite, in place, every tensor of a (nested) state dict that lives on this rank's
        device (the networks' weights and buffers) with rank 0's."""
        if not self.active:
            return
        for tensor in _tensors(state):
            if tensor.device == self._comm_device:
                self._collective("the weight broadcast", torch_dist.broadcast, tensor, 0)

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a pickled object: for decisions, not tensors)."""
        if not self.active:
            return value
        box = [value]
        self._collective("a broadcast", torch_dist.broadcast_object_list, box, 0)
        return box[0]

    def gather_objects(self, value: Any) -> list[Any] | None:
        """Every rank's ``value``, in rank order, on rank 0 (None on the others)."""
        if not self.active:
            return [value]
        out = [None] * self.world_size if self.is_main else None
        self._collective("a gather", torch_dist.gather_object, value, out, 0)
        return out

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Per-rank metrics (the same keys on every rank) averaged over the ranks."""
        if not self.active or not values:
            return values
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._comm_device)
        self._collective("a metrics all-reduce", torch_dist.all_reduce, tensor)
        return dict(zip(keys, (tensor / self.world_size).tolist(), strict=True))

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def close(self) -> None:
        if self.active and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def _job_store(rank: int, world_size: int, timeout: dt.timedelta):
    """The key-value store the ranks meet in, with a namespace of its own per torchrun restart.

    torchrun's agent shares its rendezvous store with the workers and keeps it across elastic
    restarts, so a restarted rank could read the address a dead rank published in the previous
    round and fail to connect (seen as gloo's "Connection refused" in about half of the restarts
    of tests/test_distributed.py). A prefix per restart count leaves no stale keys to read.
    """
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = torch_dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
        is_master=rank == 0 and not agent_hosts_it, timeout=timeout, multi_tenant=not agent_hosts_it,
    )
    return torch_dist.PrefixStore(f"pixelplay/restart-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def state_hash(state: Any) -> str:
    """A digest of every tensor in a (nested) state dict: equal on ranks that hold equal weights."""
    digest = hashlib.sha256()
    for tensor in _tensors(state):
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _tensors(state: Any):
    """The tensors of a nested dict / list, in a fixed order (sorted keys)."""
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, dict):
        for key in sorted(state, key=str):
            yield from _tensors(state[key])
    elif isinstance(state, (list, tuple)):
        for item in state:
            yield from _tensors(item)


def _first_line(error: BaseException) -> str:
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line.split(". This is typically caused", 1)[0]  # gloo's long advice adds nothing here
