"""Ranked example lists: merging candidates (value, document, position) into per-neuron lists of the k best,
with ties broken by the lower document. Shapes: lists [... k], candidates [... m]."""

from __future__ import annotations

import torch


def merge_ranked(keys: torch.Tensor, docs: torch.Tensor, positions: torch.Tensor, new_keys: torch.Tensor,
                 new_docs: torch.Tensor, new_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge candidates [... m] into ranked lists [... k] (keys descending): ties go to the lower document.

    Empty slots and invalid candidates have key -inf and document -1; a list keeps its length k.
    """
    k = keys.shape[-1]
    all_keys = torch.cat([keys, new_keys], dim=-1)
    all_docs = torch.cat([docs, new_docs], dim=-1)
    all_positions = torch.cat([positions, new_positions], dim=-1)
    by_doc = torch.sort(torch.where(all_docs < 0, torch.iinfo(torch.long).max, all_docs), dim=-1, stable=True).indices
    all_keys, all_docs, all_positions = (t.gather(-1, by_doc) for t in (all_keys, all_docs, all_positions))
    order = torch.sort(all_keys, dim=-1, descending=True, stable=True).indices[..., :k]
    return all_keys.gather(-1, order), all_docs.gather(-1, order), all_positions.gather(-1, order)
