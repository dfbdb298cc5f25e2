"""Data-parallel and sharded training across processes started by ``torchrun`` (one machine or several).

``Distributed`` is this process's place in the job; :func:`wrap` makes the model that trains (DDP, or FSDP2
when the weights, gradients and AdamW state of a whole model do not fit one device); :func:`full_weights` and
:func:`full_optimizer_state` gather what a checkpoint stores into the layout of a single-process run, and
:func:`load_optimizer_state` shards it back, so a run can resume with another number of processes or with
FSDP switched on or off.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel

# Gathered on the CPU of rank 0 (the only writer): a sharded model's full weights need not fit one device.
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
_SCATTER = StateDictOptions(full_state_dict=True)


@dataclass
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Global rank 0: the one process that writes run folders, logs and prints."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> tuple[Distributed, torch.device]:
        """Join the process group when launched by ``torchrun`` (nccl on CUDA, gloo on CPU).

        ``RANK`` and ``WORLD_SIZE`` are global over all nodes; ``LOCAL_RANK`` picks this node's GPU."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls(), device
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(rank, world_size), device

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Each value summed over all processes (float64, so token counts stay exact)."""
        if self.world_size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def wrap(network: nn.Module, dist_info: Distributed, device: torch.device, fsdp: bool) -> nn.Module:
    """The module to train: ``network`` itself alone, in DDP, or sharded in place with FSDP2.

    FSDP2 shards every transformer block, then the root (embeddings, final norm and the tied head, which
    must stay in one group since they are one tensor). Each process then holds 1/world of the weights,
    gradients and AdamW state, gathering one block's weights at a time for its forward and backward."""
    if fsdp:
        for block in network.h:
            fully_shard(block)
        fully_shard(network)
        return network
    if dist_info.world_size == 1:
        return network
    # Gradients as views into DDP's all-reduce buckets: one copy of the gradients instead of two.
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=device_ids, gradient_as_bucket_view=True)


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce (DDP) or reduce-scatter (FSDP) for all but the last micro-batch of a step."""
    if isinstance(model, DistributedDataParallel) and not enabled:
        with model.no_sync():
            yield
        return
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)
    yield


def full_weights(network: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's tensors on the CPU, named as in an unwrapped model; empty on ranks other than 0.

    A collective under FSDP: every process must call it."""
    return get_model_state_dict(network, options=_GATHER)


def full_optimizer_state(network: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter names (not positions), whole; empty on ranks other than 0.

    Names make the state independent of sharding: any layout loads it. A collective under FSDP."""
    return get_optimizer_state_dict(network, optimizer, options=_GATHER)


def load_optimizer_state(network: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a full optimizer state into this layout, sharding it when the model is sharded.

    A state keyed by positions (saved by ``optimizer.state_dict()`` before states were keyed by names) is
    renamed first: positions follow ``network.parameters()``, the order the optimizer was built with."""
    if any(isinstance(key, int) for key in state["state"]):
        names = [name for name, _ in network.named_parameters()]
        state = {
            "state": {names[index]: value for index, value in state["state"].items()},
            "param_groups": [
                {**group, "params": [names[index] for index in group["params"]]} for group in state["param_groups"]
            ],
        }
    set_optimizer_state_dict(network, optimizer, state, options=_SCATTER)
