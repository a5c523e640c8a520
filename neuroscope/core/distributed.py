"""Several processes of one run, launched by torchrun (`torchrun --nproc_per_node N script.py ...`).

torchrun starts N copies of a script with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in their
environment. `process_group` joins them (gloo on the CPU, NCCL on GPUs, each rank on cuda:LOCAL_RANK) only when
WORLD_SIZE > 1; otherwise it gives a single rank and every function here does what one process would. What the
ranks exchange are picklable objects (per-token metrics, filled arrays, settings, statuses): they travel through
a gloo group on the CPU in either case, whose long timeout lets a fast rank wait for the slowest one.

The ranks meet at collectives: `together` runs a step on every rank and turns a user's mistake or a system error
on any rank into the same one-line error on every rank (no rank is left waiting at a barrier for one that has
stopped), `check_same` refuses ranks started with other settings, `gather` brings picklable objects to rank 0 in
rank order, `broadcast` sends rank 0's object to every rank, `rank_zero_first` lets rank 0 write a shared file
before the others read it. A rank that dies outright (a bug, kill -9) is seen by torchrun, which ends the others.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from gated_core.cli import int_from_environment
from gated_core.errors import UserError, system_error_line

T = TypeVar("T")
JOIN_TIMEOUT = timedelta(minutes=5)  # ranks that do not all start within this are refused (a wrong WORLD_SIZE)
WAIT_TIMEOUT = timedelta(hours=24)  # the longest a rank waits for the slowest one (a whole part of a pass)
LAUNCH_HINT = "start every rank, e.g. with torchrun --nproc_per_node N"


@dataclass
class Ranks:
    """This process's place among the run's processes (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    group: Any = None  # the process group for long waits (None: one process)

    @property
    def first(self) -> bool:
        """Whether this is rank 0, the one that merges and writes the shared outputs."""
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    """Whether the environment names more than one process (torchrun's WORLD_SIZE > 1); a bad value is a UserError."""
    return int_from_environment("WORLD_SIZE", 1, minimum=1) > 1


def environment_ranks() -> Ranks:
    """RANK, WORLD_SIZE and LOCAL_RANK from the environment, checked (one line for a bad one)."""
    world = int_from_environment("WORLD_SIZE", 1, minimum=1)
    rank = int_from_environment("RANK", 0, minimum=0)
    local_rank = int_from_environment("LOCAL_RANK", rank, minimum=0)
    if rank >= world:
        raise UserError(f"the environment variables RANK {rank}, WORLD_SIZE {world}: need 0 <= RANK < WORLD_SIZE")
    if world > 1 and not ("MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ):
        raise UserError(f"WORLD_SIZE {world} without MASTER_ADDR and MASTER_PORT: {LAUNCH_HINT}")
    return Ranks(rank, world, local_rank)


def rank_device(name: str) -> str:
    """`--device cuda` under torchrun is this process's GPU, cuda:LOCAL_RANK; any other value stays as given."""
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int_from_environment('LOCAL_RANK', 0, minimum=0)}"
    return name


def uses_cuda(device_name: str) -> bool:
    """Whether a `--device` value runs the model on a GPU (auto: when one is there)."""
    import torch

    return device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())


@contextmanager
def process_group(device_name: str = "cpu") -> Iterator[Ranks]:
    """Join the other ranks when launched by torchrun (WORLD_SIZE > 1), with NCCL when `device_name` (a --device
    value) is a GPU, else gloo; yields this process's Ranks and leaves the group at the end, however it ends."""
    ranks = environment_ranks()
    if not ranks.several:
        yield ranks
        return
    import torch
    import torch.distributed as dist

    backend = "nccl" if uses_cuda(device_name) else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(ranks.local_rank)
    try:
        dist.init_process_group(backend, timeout=JOIN_TIMEOUT)
    except (RuntimeError, ValueError) as exc:  # DistStoreError and friends: another rank is missing or unreachable
        raise UserError(f"rank {ranks.rank} of WORLD_SIZE {ranks.world}: the other ranks did not join "
                        f"({type(exc).__name__}); {LAUNCH_HINT}") from exc
    try:
        # the objects the ranks exchange are pickled on the CPU: gloo carries them on GPUs too (no device copies)
        ranks.group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
        yield ranks
    finally:
        dist.destroy_process_group()


def all_gather(ranks: Ranks, value: Any) -> list[Any]:
    """Every rank's `value` (picklable), in rank order, on every rank."""
    if not ranks.several:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * ranks.world
    dist.all_gather_object(values, value, group=ranks.group)
    return values


def gather(ranks: Ranks, value: Any) -> list[Any] | None:
    """Every rank's `value` (picklable) in rank order on rank 0; None on the other ranks."""
    if not ranks.several:
        return [value]
    import torch.distributed as dist

    values = [None] * ranks.world if ranks.first else None
    dist.gather_object(value, values, dst=0, group=ranks.group)
    return values


def broadcast(ranks: Ranks, value: Any) -> Any:
    """Rank 0's `value` (picklable) on every rank (what the other ranks pass is ignored)."""
    if not ranks.several:
        return value
    import torch.distributed as dist

    box = [value if ranks.first else None]
    dist.broadcast_object_list(box, src=0, group=ranks.group)
    return box[0]


def barrier(ranks: Ranks) -> None:
    """Wait until every rank is here."""
    all_gather(ranks, None)


def problem_line(exc: BaseException) -> str:
    """The one line a user's mistake or a system error ends a run with (without 'error: ')."""
    return str(exc) if isinstance(exc, UserError) else system_error_line(exc) or f"{type(exc).__name__}: {exc}"


def together(ranks: Ranks, step: Callable[[], T], who: Callable[[Ranks], bool] = lambda ranks: True) -> T | None:
    """Run `step` on the ranks that `who` names (all by default), then meet: when it raised a user's mistake or a
    system error on any rank, every rank raises the same one-line UserError. Returns `step`'s result (None on
    the ranks that did not run it)."""
    result, problem = None, None
    try:
        if who(ranks):
            result = step()
    except (UserError, OSError) as exc:
        if not ranks.several or not (isinstance(exc, UserError) or system_error_line(exc)):
            raise  # one process: as before; a bug: its traceback (torchrun then ends the other ranks)
        problem = problem_line(exc)
    problems = all_gather(ranks, problem)
    failed = [(rank, line) for rank, line in enumerate(problems) if line is not None]
    if failed:
        rank, line = failed[0]
        raise UserError(line if rank == ranks.rank or ranks.world == 1 else f"(rank {rank}) {line}")
    return result


def rank_zero_first(ranks: Ranks, step: Callable[[], T]) -> T:
    """Run `step` on rank 0, then (when it worked) on the other ranks: for steps that may write a shared file
    (a cache) that the other ranks then read instead of writing it at the same time."""
    first = together(ranks, step, lambda r: r.first)
    rest = together(ranks, step, lambda r: not r.first)
    return first if ranks.first else rest


def check_same(ranks: Ranks, settings: dict[str, Any], what: str = "settings") -> None:
    """Refuse (on every rank) ranks whose `settings` (picklable, comparable) differ from rank 0's."""
    everyone = all_gather(ranks, settings)
    for rank, theirs in enumerate(everyone):
        differing = sorted(key for key in {*theirs, *everyone[0]} if theirs.get(key) != everyone[0].get(key))
        if differing:
            shown = ", ".join(f"{key}={everyone[0].get(key)!r} vs {theirs.get(key)!r}" for key in differing[:3])
            raise UserError(f"rank {rank} was started with other {what} than rank 0 ({shown}); "
                            "start every rank with the same command")

