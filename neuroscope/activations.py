"""The activation pass: hooks on a Hugging Face gated MLP and running per-neuron statistics.

For every neuron the pass keeps (SPEC 6), on the device and independent of the number of tokens:
- the top-k documents by their maximum of the activation a = act(g) * u over positions
  (value, document, position) and the bottom-k by their minimum;
- the sum of a over real tokens (for the mean), accumulated exactly in 64-bit fixed point,
  so that any split into shards or resumptions gives bit-identical results;
- counts of g > 0 (gate open), u > 0 and both, from which the four sign combinations follow.

Ties are broken by the lower document index (the merge sorts by document, then stably by
value), and within a document by the first position. Documents are batched by length (a
fixed plan that depends only on the dataset and the batch size), so little is padded and
every split of the plan into shards or resumptions runs exactly the same batches. Shapes:
per-layer activations are [batch pos neuron]; statistics are [layer neuron] or [layer neuron k].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import torch

FIXED_POINT_BITS = 28  # resolution 2^-28 per batch sum; |sum| up to 3.4e10 fits in int64
SIGN_COMBINATIONS = ("gate+ lin+", "gate+ lin-", "gate- lin+", "gate- lin-")  # + means > 0


class StopForward(Exception):
    """Raised by a hook to end a forward pass after the last layer that is needed."""


def decoder_layers(model: Any) -> Sequence[Any]:
    """The decoder blocks of a Hugging Face causal LM whose MLP has gate_proj, up_proj, down_proj."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not all(hasattr(block.mlp, name) for block in layers for name in ("gate_proj", "up_proj", "down_proj")):
        from wcos_casestudies.errors import UserError

        raise UserError(f"{type(model).__name__}: not a gated MLP model (needs mlp.gate_proj/up_proj/down_proj)")
    return layers


@contextmanager
def mlp_hooks(model: Any, callback: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None],
              layers: Sequence[int], stop_after: int | None = None) -> Iterator[None]:
    """Call `callback(layer, g, u, a)` with [batch pos neuron] tensors during forward passes.

    g = gate pre-activation (TransformerLens hook_pre), u = linear pre-activation
    (hook_pre_linear), a = act(g) * u (hook_post). With `stop_after`, the forward pass ends
    (StopForward) once that layer's MLP has run.
    """
    blocks = decoder_layers(model)
    stash: dict[int, dict[str, torch.Tensor]] = {}
    handles = []

    def keep(layer: int, name: str):
        def hook(module, inputs, output):
            stash.setdefault(layer, {})[name] = output
        return hook

    def use(layer: int):
        def hook(module, inputs):
            parts = stash.pop(layer)
            callback(layer, parts["g"], parts["u"], inputs[0])
            if stop_after is not None and layer == stop_after:
                raise StopForward
        return hook

    try:
        for layer in layers:
            mlp = blocks[layer].mlp
            handles.append(mlp.gate_proj.register_forward_hook(keep(layer, "g")))
            handles.append(mlp.up_proj.register_forward_hook(keep(layer, "u")))
            handles.append(mlp.down_proj.register_forward_pre_hook(use(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        stash.clear()


def run_model(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """One forward pass for the hooks' sake (no logits kept); StopForward ends it early."""
    with torch.inference_mode():
        try:
            model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except StopForward:
            pass


def pad_batch(rows: list[list[int]], masks: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows to the longest: input_ids and attention_mask [batch pos]."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (row, row_mask) in enumerate(zip(rows, masks)):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row_mask)] = torch.tensor(row_mask)
    return ids.to(device), mask.to(device)


@dataclass
class NeuronStats:
    """Running statistics of every neuron; every tensor lives on one device."""

    top_values: torch.Tensor  # [layer neuron k] float32, descending
    top_docs: torch.Tensor  # [layer neuron k] int64
    top_positions: torch.Tensor  # [layer neuron k] int64
    bottom_values: torch.Tensor  # ascending
    bottom_docs: torch.Tensor
    bottom_positions: torch.Tensor
    post_sum: torch.Tensor  # [layer neuron] int64, fixed point 2^-28
    gate_positive: torch.Tensor  # [layer neuron] int64
    lin_positive: torch.Tensor
    both_positive: torch.Tensor
    n_tokens: torch.Tensor  # [] int64

    @classmethod
    def empty(cls, n_layers: int, d_mlp: int, k: int, device: torch.device | str = "cpu") -> NeuronStats:
        shape = (n_layers, d_mlp, k)

        def full(value, dtype, size=shape):
            return torch.full(size, value, dtype=dtype, device=device)

        return cls(
            top_values=full(-torch.inf, torch.float32), top_docs=full(-1, torch.long), top_positions=full(-1, torch.long),
            bottom_values=full(torch.inf, torch.float32), bottom_docs=full(-1, torch.long), bottom_positions=full(-1, torch.long),
            post_sum=full(0, torch.long, shape[:2]), gate_positive=full(0, torch.long, shape[:2]),
            lin_positive=full(0, torch.long, shape[:2]), both_positive=full(0, torch.long, shape[:2]),
            n_tokens=torch.zeros((), dtype=torch.long, device=device),
        )

    @property
    def k(self) -> int:
        return self.top_values.shape[-1]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> NeuronStats:
        return cls(**{f.name: state[f.name].to(device) for f in fields(cls)})

    def to(self, device: torch.device | str) -> NeuronStats:
        return NeuronStats.from_state_dict(self.state_dict(), device)

    def _merge_extremes(self, values: torch.Tensor, docs: torch.Tensor, positions: torch.Tensor, top: bool) -> None:
        """Merge candidates [layer neuron m] into the top (or bottom) k: by value, ties to the lower document."""
        prefix = "top" if top else "bottom"
        all_values = torch.cat([getattr(self, f"{prefix}_values"), values], dim=-1)
        all_docs = torch.cat([getattr(self, f"{prefix}_docs"), docs], dim=-1)
        all_positions = torch.cat([getattr(self, f"{prefix}_positions"), positions], dim=-1)
        by_doc = torch.sort(torch.where(all_docs < 0, torch.iinfo(torch.long).max, all_docs), dim=-1, stable=True).indices
        all_values, all_docs, all_positions = (t.gather(-1, by_doc) for t in (all_values, all_docs, all_positions))
        order = torch.sort(all_values, dim=-1, descending=top, stable=True).indices[..., :self.k]
        setattr(self, f"{prefix}_values", all_values.gather(-1, order))
        setattr(self, f"{prefix}_docs", all_docs.gather(-1, order))
        setattr(self, f"{prefix}_positions", all_positions.gather(-1, order))

    def merge(self, other: NeuronStats) -> None:
        """Add the statistics of a run over other batches (another shard), in place."""
        self._merge_extremes(other.top_values, other.top_docs, other.top_positions, top=True)
        self._merge_extremes(other.bottom_values, other.bottom_docs, other.bottom_positions, top=False)
        for name in ("post_sum", "gate_positive", "lin_positive", "both_positive", "n_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def summary(self) -> dict[str, torch.Tensor]:
        """Mean activation, gate-open frequency and the four sign-combination frequencies ([layer neuron (4)])."""
        n = self.n_tokens.double().clamp_min(1)
        both = self.both_positive.double()
        gate, lin = self.gate_positive.double(), self.lin_positive.double()
        combos = torch.stack([both, gate - both, lin - both, n - gate - lin + both], dim=-1) / n
        return {"mean": self.post_sum.double() / 2 ** FIXED_POINT_BITS / n, "gate_open": gate / n, "sign_frequencies": combos}


def _count_true(masks: list[torch.Tensor]) -> torch.Tensor:
    """Number of True entries over (batch, pos) of each [batch pos neuron] mask: [len(masks) neuron] int64.

    Summed as int32 (exact: a batch has far fewer than 2^31 tokens), about 1.3x faster on GPUs
    than the default int64 sum. (A matrix product with a row of ones is faster still, but
    cuBLAS may reduce bf16 products in reduced precision, which is not exact.)
    """
    return torch.stack([m.sum(dim=(0, 1), dtype=torch.int32) for m in masks]).long()


class BatchReducer:
    """Collects one batch's per-layer reductions from the hooks, then applies them all at once,
    so that an interrupted forward pass never leaves half-updated statistics."""

    def __init__(self, stats: NeuronStats):
        self.stats = stats
        self.pending: dict[int, tuple[torch.Tensor, ...]] = {}
        self.valid: torch.Tensor | None = None  # [batch pos] bool
        self.padded = False
        self.per_document: bool | None = None  # None: per-document views on CPUs, masked batches elsewhere

    def start(self, attention_mask: torch.Tensor) -> None:
        self.valid = attention_mask.bool()
        self.lengths = self.valid.sum(dim=1).tolist()
        self.padded = not bool(self.valid.all())
        self.pending.clear()

    def _per_document(self, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Reductions on views of each document's real tokens (no masked copies; for CPUs)."""
        highs, high_pos, lows, low_pos, totals, counts = [], [], [], [], [], []
        for i, length in enumerate(self.lengths):
            a_i, g_i, u_i = a[i, :length], g[i, :length] > 0, u[i, :length] > 0
            value, index = a_i.max(dim=0)
            highs.append(value), high_pos.append(index)
            value, index = a_i.min(dim=0)
            lows.append(value), low_pos.append(index)
            totals.append(a_i.sum(dim=0, dtype=torch.float32))
            counts.append(torch.stack([g_i.sum(dim=0), u_i.sum(dim=0), (g_i & u_i).sum(dim=0)]))
        stack = torch.stack
        return stack(highs), stack(high_pos), stack(lows), stack(low_pos), stack(totals).sum(dim=0), stack(counts).sum(dim=0)

    def __call__(self, layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        if self.padded and (self.per_document if self.per_document is not None else a.device.type == "cpu"):
            high, high_pos, low, low_pos, total, counts = self._per_document(g, u, a)
        else:
            # in the model's dtype: max and min are exact there, the sum accumulates in float32
            if self.padded:
                valid = self.valid[..., None]  # [batch pos 1]
                high, high_pos = a.masked_fill(~valid, -torch.inf).max(dim=1)  # [batch neuron]
                low, low_pos = a.masked_fill(~valid, torch.inf).min(dim=1)
                total = a.masked_fill(~valid, 0).sum(dim=(0, 1), dtype=torch.float32)
                g_pos, u_pos = (g > 0) & valid, (u > 0) & valid
            else:
                high, high_pos = a.max(dim=1)
                low, low_pos = a.min(dim=1)
                total = a.sum(dim=(0, 1), dtype=torch.float32)
                g_pos, u_pos = g > 0, u > 0
            counts = _count_true([g_pos, u_pos, g_pos & u_pos])
        fixed = torch.round(total.double() * 2 ** FIXED_POINT_BITS).long()
        self.pending[layer] = (high.float().T, high_pos.T, low.float().T, low_pos.T, fixed, counts)

    def apply(self, doc_ids: torch.Tensor) -> None:
        """Fold the batch (documents `doc_ids`, ascending) into the statistics."""
        stats = self.stats
        if len(self.pending) != stats.top_values.shape[0]:
            raise RuntimeError(f"hooks saw {len(self.pending)} of {stats.top_values.shape[0]} layers")
        layers = sorted(self.pending)
        high, high_pos, low, low_pos, fixed, counts = (torch.stack([self.pending[layer][i] for layer in layers]) for i in range(6))
        docs = doc_ids.to(stats.top_docs.device).expand(*high.shape)  # [layer neuron batch]
        stats._merge_extremes(high, docs, high_pos, top=True)
        stats._merge_extremes(low, docs, low_pos, top=False)
        stats.post_sum += fixed
        stats.gate_positive += counts[:, 0]
        stats.lin_positive += counts[:, 1]
        stats.both_positive += counts[:, 2]
        stats.n_tokens += self.valid.sum()
        self.pending.clear()


def batch_plan(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Documents grouped into batches of similar length, longest first (so memory peaks at once).

    Depends only on the lengths and the batch size: every run, resumption and shard of the
    same dataset sees the same batches.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def shard_range(n_batches: int, num_shards: int = 1, shard_index: int = 0) -> tuple[int, int]:
    """The batches [first, last) of the plan that one shard runs."""
    return shard_index * n_batches // num_shards, (shard_index + 1) * n_batches // num_shards


def run_pass(model: Any, dataset: Any, stats: NeuronStats, plan: list[list[int]], batches: range, pad_id: int,
             device: torch.device, on_checkpoint: Callable[[int], None] | None = None, checkpoint_every: int = 0,
             progress: Any = None) -> int:
    """Run the batches `batches` of `plan` over `dataset` (rows with input_ids, attention_mask) into `stats`.

    After every `checkpoint_every` batches (and on KeyboardInterrupt, between batches)
    `on_checkpoint(next_batch)` is called. Returns the number of tokens processed.
    """
    reducer = BatchReducer(stats)
    tokens = 0
    with mlp_hooks(model, reducer, range(stats.top_values.shape[0])):
        for batch in batches:
            docs = plan[batch]
            rows = dataset[docs]
            input_ids, attention_mask = pad_batch(rows["input_ids"], rows["attention_mask"], pad_id, device)
            reducer.start(attention_mask)
            try:
                run_model(model, input_ids, attention_mask)
            except KeyboardInterrupt:
                if on_checkpoint is not None:
                    on_checkpoint(batch)  # statistics are still those of the batches before this one
                raise
            reducer.apply(torch.tensor(docs, device=device))
            tokens += int(attention_mask.sum())
            if progress is not None:
                progress.update(1)
            if on_checkpoint is not None and checkpoint_every and (batch + 1 - batches.start) % checkpoint_every == 0 \
                    and batch + 1 < batches.stop:
                on_checkpoint(batch + 1)
    return tokens
