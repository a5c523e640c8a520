"""Batches of documents for a model: planned by length, read from the tokenized dataset, right-padded and moved
to the device. The four loops that run the model over documents (the activation pass, the recomputation of chosen
neurons, the viewer's windows, the ablation metrics) all read their batches from `padded_batches`.

A plan is a list of batches, each a list of dataset rows; `batch_plan` makes one that depends only on the
documents' lengths and the batch size, so that every run, resumption and shard sees the same batches.
Shapes: input_ids and attention_mask are [batch pos].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch


def batch_plan(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Documents grouped into batches of similar length, longest first (so memory peaks at once).

    Depends only on the lengths and the batch size: every run, resumption and shard of the
    same dataset sees the same batches.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def subset_plan(docs: Sequence[int], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """`batch_plan` of some documents (`docs`, dataset rows; `lengths`, theirs in the same order), in dataset rows."""
    return [[int(docs[i]) for i in batch] for batch in batch_plan(lengths, batch_size)]


def shard_range(n_batches: int, num_shards: int = 1, shard_index: int = 0) -> tuple[int, int]:
    """The batches [first, last) of the plan that one shard runs."""
    return shard_index * n_batches // num_shards, (shard_index + 1) * n_batches // num_shards


def _pad_rows(rows: list[list[int]], masks: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows to the longest, on the CPU: input_ids and attention_mask [batch pos] int64."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (row, row_mask) in enumerate(zip(rows, masks)):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row_mask)] = torch.tensor(row_mask)
    return ids, mask


def pad_batch(rows: list[list[int]], masks: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows to the longest: input_ids and attention_mask [batch pos] on `device`."""
    ids, mask = _pad_rows(rows, masks, pad_id)
    return ids.to(device), mask.to(device)


@dataclass
class PaddedBatch:
    """One batch of a plan, ready for the model."""

    index: int  # the batch's place in the plan
    docs: list[int]  # dataset rows, one per row of the batch
    input_ids: torch.Tensor  # [batch pos] int64 on the device, right-padded with the pad id
    attention_mask: torch.Tensor  # [batch pos] int64 on the device: 1 at real tokens
    tokens: int  # real tokens in the batch (counted on the CPU: no device synchronisation)


def padded_batches(dataset: Any, plan: Sequence[Sequence[int]], pad_id: int, device: torch.device,
                   batches: range | None = None, progress: Any = None) -> Iterator[PaddedBatch]:
    """The batches `batches` of `plan` (all of them with None), read from `dataset` (rows with input_ids and
    attention_mask), padded and on `device`, in order. `progress` (tqdm-like) is advanced by one once the caller
    is done with a batch (when it asks for the next one, or at the end)."""
    for index in batches if batches is not None else range(len(plan)):
        docs = [int(doc) for doc in plan[index]]
        rows = dataset[docs]
        input_ids, attention_mask = _pad_rows(rows["input_ids"], rows["attention_mask"], pad_id)
        tokens = int(attention_mask.sum())
        yield PaddedBatch(index, docs, input_ids.to(device), attention_mask.to(device), tokens)
        if progress is not None:
            progress.update(1)
