"""Extraction over several processes with `torch.distributed` (torchrun, one node or many).

Every rank runs the same command. Rank 0 decides which shards are still to do and broadcasts
that list; rank r extracts every world_size-th entry starting at r (on a new store: the shards with
`index % world_size == r`) and writes its own shard files and `.done.json` records, which never
collide because each shard has its own files. After a barrier, rank 0 alone writes the finished
manifest. A store's directory must therefore be on a filesystem all ranks share.

Without torchrun's environment (`WORLD_SIZE` unset or 1) nothing here does anything.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from stageprobe.errors import UserInputError

T = TypeVar("T")

#: Ranks meet at barriers after extracting their shards and wait there for the slowest rank; the
#: default collective timeout (10 min for NCCL, 30 min for gloo) would kill a long extraction.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=24)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the extraction processes."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's part of a list every rank holds identically: every world_size-th item."""
        return list(items[self.rank::self.world_size])


def launched_ranks() -> Ranks | None:
    """The ranks torchrun describes in the environment; None in a single process."""
    world_text = os.environ.get("WORLD_SIZE")
    if world_text is None:
        return None
    try:
        world_size = int(world_text)
        if world_size <= 1:
            return None
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except KeyError:
        raise UserInputError(
            "WORLD_SIZE is set but RANK is not: launch several processes with torchrun "
            "(`torchrun --nproc-per-node N -m stageprobe extract …`), or unset WORLD_SIZE"
        ) from None
    except ValueError:
        raise UserInputError(
            f"torch.distributed environment variables must be integers, got WORLD_SIZE={world_text!r} "
            f"RANK={os.environ.get('RANK')!r} LOCAL_RANK={os.environ.get('LOCAL_RANK')!r}"
        ) from None
    if not 0 <= rank < world_size:
        raise UserInputError(f"RANK={rank} is outside 0…{world_size - 1} (WORLD_SIZE={world_size})")
    return Ranks(rank, world_size, local_rank)


def init_distributed() -> Ranks | None:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA) and pin this rank's GPU.

    Call it before loading a model, so that `device="auto"`/`"cuda"` means `cuda:LOCAL_RANK`
    (`python -m stageprobe` does). Idempotent; returns None in a single process.
    """
    if dist.is_available() and dist.is_initialized():
        # A group the caller set up itself: take the ranks from it rather than from the environment.
        world_size = dist.get_world_size()
        if world_size == 1:
            return None
        return Ranks(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    ranks = launched_ranks()
    if ranks is None:
        return None
    if not dist.is_available():
        raise UserInputError("WORLD_SIZE > 1 asks for several processes, but this torch build has no "
                             "torch.distributed; run a single process")
    if torch.cuda.is_available():
        if ranks.local_rank >= torch.cuda.device_count():
            raise UserInputError(
                f"LOCAL_RANK={ranks.local_rank} but this node has {torch.cuda.device_count()} GPU(s): "
                "start at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=COLLECTIVE_TIMEOUT)
    atexit.register(_leave)
    return ranks


def check_model_device(ranks: Ranks, device: torch.device) -> None:
    """Refuse ranks of one node sharing a GPU by accident (e.g. `--device cuda:0` under torchrun)."""
    if device.type == "cuda" and device.index is not None and device.index != ranks.local_rank:
        raise UserInputError(
            f"rank {ranks.rank} holds its model on {device}, but its GPU is cuda:{ranks.local_rank} "
            "(LOCAL_RANK): pass --device auto (or cuda) under torchrun, or in Python call "
            "stageprobe.features.init_distributed() before load_model"
        )


def barrier() -> None:
    if dist.get_backend() == "nccl":
        # NCCL needs to know the device; the current one is this rank's (init_distributed pinned it).
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def broadcast_from_main(value: T) -> T:
    """Rank 0's `value` on every rank (any picklable object)."""
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
