"""Ranked example lists: merging candidates (value, document, position) into per-neuron lists of the k best,
with ties broken by the lower document. Shapes: lists [... k], candidates [... m].

Also the bottom-k samples of the typical examples: every token (document, position) has a fixed 64-bit hash
(`token_hash`, the splitmix64 finalizer of `pack_tokens`), and a sample keeps the k tokens of smallest hash. That is
a uniform random sample without replacement which merges exactly: the k smallest of a union are the k smallest of
the parts' k smallest (`merge_smallest`, `merge_smallest_rows`). The hash is a bijection of 64-bit integers, so two
tokens never tie; it is computed with wrapping int64 arithmetic, identical on every device.
"""

from __future__ import annotations

import torch

POSITION_BITS = 20  # a packed token is document * 2^20 + position: positions below 2^20, documents below 2^43
EMPTY_HASH = torch.iinfo(torch.long).max  # the hash of an empty slot (and of tokens that are no examples)
_M64 = 1 << 64
_GAMMA, _MIX_1, _MIX_2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # splitmix64's constants


def _signed(constant: int) -> int:
    """A 64-bit constant as the int64 with the same bits."""
    return constant - _M64 if constant >= 1 << 63 else constant


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> keeps the sign)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def pack_tokens(docs: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """document * 2^POSITION_BITS + position (int64); -1 where the document is -1 (an empty slot)."""
    packed = (docs.long() << POSITION_BITS) | positions.long()
    return torch.where(docs < 0, -1, packed)


def unpack_tokens(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(documents, positions) of packed tokens, both -1 where the token is -1."""
    empty = tokens < 0
    docs = torch.where(empty, -1, tokens >> POSITION_BITS)
    return docs, torch.where(empty, -1, tokens & ((1 << POSITION_BITS) - 1))


def token_hash(tokens: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finalizer of packed tokens (int64, same shape; int64 order: signed). EMPTY_HASH where the token
    is negative (an empty slot). The one packed token whose hash is EMPTY_HASH (document 914,702,942,311) is never
    sampled."""
    z = tokens + _signed(_GAMMA)
    z = (z ^ _shift_right(z, 30)) * _signed(_MIX_1)
    z = (z ^ _shift_right(z, 27)) * _signed(_MIX_2)
    return torch.where(tokens < 0, EMPTY_HASH, z ^ _shift_right(z, 31))


def reference_hash(token: int) -> int:
    """`token_hash` of one packed token in plain Python integers (for tests and readers)."""
    z = (token + _GAMMA) % _M64
    z = (z ^ (z >> 30)) * _MIX_1 % _M64
    z = (z ^ (z >> 27)) * _MIX_2 % _M64
    return _signed(z ^ (z >> 31))


def merge_ranked(keys: torch.Tensor, docs: torch.Tensor, positions: torch.Tensor, new_keys: torch.Tensor,
                 new_docs: torch.Tensor, new_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge candidates [... m] into ranked lists [... k] (keys descending): ties go to the lower document.

    Empty slots and invalid candidates have key -inf and document -1; a list keeps its length k.
    """
    k = keys.shape[-1]
    all_keys = torch.cat([keys, new_keys], dim=-1)
    all_docs = torch.cat([docs, new_docs], dim=-1)
    all_positions = torch.cat([positions, new_positions], dim=-1)
    if all_keys.dtype == torch.float32 and (not all_docs.numel() or int(all_docs.max()) < _DOC_LIMIT):
        order = torch.topk(rank_keys(all_keys, all_docs), k, dim=-1).indices  # one selection, no sort
    else:
        by_doc = torch.sort(torch.where(all_docs < 0, torch.iinfo(torch.long).max, all_docs), dim=-1, stable=True).indices
        all_keys, all_docs, all_positions = (t.gather(-1, by_doc) for t in (all_keys, all_docs, all_positions))
        order = torch.sort(all_keys, dim=-1, descending=True, stable=True).indices[..., :k]
    return all_keys.gather(-1, order), all_docs.gather(-1, order), all_positions.gather(-1, order)


_DOC_LIMIT = (1 << 32) - 1  # documents below this fit the low half of `rank_keys`


def rank_keys(keys: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """One int64 per entry whose descending order is the lists' order: float32 key descending (-0.0 as 0.0), then
    document ascending, documents -1 (empty) last; for documents below 2^32 - 1. The key's bits made monotone (the
    magnitude bits of negative floats flipped) times 2^32, plus 2^32 - 1 - document."""
    bits = (keys + 0.0).view(torch.int32)  # + 0.0: -0.0 becomes 0.0
    monotone = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).long()
    return monotone * (1 << 32) + (_DOC_LIMIT - torch.where(docs < 0, _DOC_LIMIT, docs))


def merge_smallest(tokens: torch.Tensor, values: torch.Tensor, new_tokens: torch.Tensor,
                   new_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge bottom-k samples: packed tokens [... k] and their values, both sorted by `token_hash` (empty slots:
    token -1, value 0, last), with other samples [... m] of other tokens. The k tokens of smallest hash, sorted."""
    k = tokens.shape[-1]
    all_tokens, all_values = torch.cat([tokens, new_tokens], dim=-1), torch.cat([values, new_values], dim=-1)
    order = torch.sort(token_hash(all_tokens), dim=-1).indices[..., :k]  # hashes are distinct, but for empty slots
    return all_tokens.gather(-1, order), all_values.gather(-1, order)


def merge_smallest_rows(tokens: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, new_tokens: torch.Tensor,
                        new_values: torch.Tensor) -> torch.Tensor:
    """Merge candidates [m] (packed token, value) into the bottom-k samples of the rows `rows` [m] of `tokens` and
    `values` [row k] (`merge_smallest`), in place; any number of candidates per row, none already in its row.
    Returns the rows that were touched (sorted, unique)."""
    k = tokens.shape[-1]
    touched, inverse = torch.unique(rows, return_inverse=True)
    old_rows = torch.arange(len(touched), device=rows.device).repeat_interleave(k)
    all_rows = torch.cat([old_rows, inverse])
    all_tokens = torch.cat([tokens[touched].view(-1), new_tokens])
    all_values = torch.cat([values[touched].view(-1), new_values])
    by_hash = torch.sort(token_hash(all_tokens), stable=True).indices
    order = by_hash[torch.sort(all_rows[by_hash], stable=True).indices]  # by row, then by hash
    sorted_rows = all_rows[order]
    counts = torch.bincount(sorted_rows, minlength=len(touched))
    rank = torch.arange(len(order), device=rows.device) - (counts.cumsum(0) - counts)[sorted_rows]
    keep = rank < k  # every row has its k old entries (empty ones included), so it stays full
    merged_tokens = torch.empty((len(touched), k), dtype=tokens.dtype, device=tokens.device)
    merged_values = torch.empty((len(touched), k), dtype=values.dtype, device=values.device)
    merged_tokens[sorted_rows[keep], rank[keep]] = all_tokens[order[keep]]
    merged_values[sorted_rows[keep], rank[keep]] = all_values[order[keep]]
    tokens[touched], values[touched] = merged_tokens, merged_values
    return touched
