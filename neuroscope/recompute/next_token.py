"""What one firing of a neuron does to the next token: its direct effect on the logit of the token that actually
follows the example's extreme token, that token's rank among the tokens the neuron promotes, and (optionally)
the exact change of the next-token loss when only this neuron is zeroed there.

Definitions, for an example of neuron (l, i) whose extreme token is at position p of a document:
- t, the next token: the token at p + 1 (none at the document's last token: -1, and no effect);
- r, the residual stream entering the final norm (RMSNorm or LayerNorm) at p, and s(r) the factor that norm
  multiplies by there: 1 / sqrt(mean(r²) + eps) (RMSNorm) or 1 / sqrt(var(r) + eps) (LayerNorm, which also
  centres);
- the direct effect DE = a · s(r) · (w_out[l, i] ⊙ gain) · W_U[:, t]: the change of the logit of t that the
  neuron's write a · w_out makes through the direct path when the final norm's scale is held at its value (the
  linearised direct path, the paper's w_out · W_U at that position). `gain` is the final norm's gain (Gemma:
  1 + weight; OLMo's LayerNorm has none, and w_out is centred over d_model first). The logit is the one before
  Gemma 2's final soft-capping;
- the rank of t: 1 + the number of tokens v with (w_out ⊙ gain) · W_U[:, v] above that of t, over the whole
  vocabulary (1 = the neuron's most promoted token; the sign of a does not enter);
- the ablation effect: loss(t | a[l, p, i] := 0) − loss(t), the next-token cross-entropy with only this neuron
  zeroed at p (every other neuron and position unchanged), minus the clean one: > 0 where the neuron helped.

Shapes: [n] per example; residual [batch pos d_model]; scores [chunk vocab].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gated_core.models.readers import SAFETENSORS_FAMILIES
from neuroscope.core.batches import padded_batches
from neuroscope.core.hooks import logits_of, mlp_hooks

RANK_CHUNK_ELEMENTS = 2 ** 24  # scores held at once while ranking: neurons per chunk = this // vocabulary
LN_EPS = 1e-5  # OLMo's LayerNorm (no eps attribute)


@dataclass
class Readout:
    """The model's readout after the last layer: the final norm's kind ("rms" or "ln"), its gain [d_model] float32
    (None: none), its epsilon, and the unembedding W_U as the model holds it, [vocab d_model]."""

    kind: str
    gain: torch.Tensor | None
    eps: float
    unembed: torch.Tensor

    @classmethod
    def of(cls, model: Any) -> Readout:
        """The readout of a Hugging Face causal LM: the norm's kind and gain offset from the family table of the
        weight readers, or for other families from the norm module (torch LayerNorm or no weight: "ln"; Gemma-named:
        gain 1 + weight)."""
        norm = model.model.norm
        weight = getattr(norm, "weight", None)
        family = model.config.model_type
        if family in SAFETENSORS_FAMILIES:
            _, offset, kind = SAFETENSORS_FAMILIES[family]
        else:
            kind = "ln" if isinstance(norm, torch.nn.LayerNorm) or weight is None else "rms"
            offset = 1.0 if "Gemma" in type(norm).__name__ else 0.0
        gain = None if weight is None else weight.detach().float() + offset
        eps = next((float(getattr(norm, name)) for name in ("variance_epsilon", "eps") if hasattr(norm, name)), LN_EPS)
        return cls(kind, gain, eps, model.lm_head.weight.detach())

    def scale(self, residual: torch.Tensor) -> torch.Tensor:
        """s(r) of residual vectors [n d_model]: [n] float32."""
        r = residual.float()
        if self.kind == "ln":
            return torch.rsqrt(r.var(-1, unbiased=False) + self.eps)
        return torch.rsqrt(r.pow(2).mean(-1) + self.eps)

    def written(self, w_out: torch.Tensor) -> torch.Tensor:
        """What the norm passes on of output directions w_out [n d_model] at scale 1: [n d_model] float32."""
        w = w_out.float()
        if self.kind == "ln":
            w = w - w.mean(-1, keepdim=True)
        return w if self.gain is None else w * self.gain.to(w.device)


def output_weights(model: Any, layer: int, neurons: torch.Tensor) -> torch.Tensor:
    """w_out of neurons of one layer as the model holds them (down_proj columns): [n d_model]."""
    weight = model.model.layers[layer].mlp.down_proj.weight  # [d_model d_mlp]
    return weight.detach().index_select(1, neurons.to(weight.device)).T


def next_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                positions: torch.Tensor) -> torch.Tensor:
    """The token after each example's position [n] int64 (-1 at a document's last real token); rows, positions [n]."""
    lengths = attention_mask.sum(-1)[rows]
    following = input_ids[rows, (positions + 1).clamp_max(input_ids.shape[1] - 1)]
    return torch.where(positions + 1 < lengths, following, torch.full_like(following, -1))


def direct_effects(readout: Readout, residual: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   rows: torch.Tensor, positions: torch.Tensor, a: torch.Tensor,
                   w_out: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The next token [n] int64 (-1: none) and the direct effect DE [n] float32 (nan: no next token) of examples of
    one batch: batch rows and positions [n], the neuron's a there [n] and its w_out [n d_model]; `residual`: the
    batch's final-norm input [batch pos d_model]."""
    device = residual.device
    rows, positions = rows.to(device), positions.to(device)
    targets = next_tokens(input_ids, attention_mask, rows, positions)
    columns = readout.unembed.index_select(0, targets.clamp_min(0).to(readout.unembed.device)).float().to(device)
    logit = (readout.written(w_out.to(device)) * columns).sum(-1)
    effect = a.to(device).float() * readout.scale(residual[rows, positions]) * logit
    effect = torch.where(targets >= 0, effect, torch.full_like(effect, float("nan")))
    return targets.cpu().numpy().astype(np.int64), effect.cpu().numpy().astype(np.float32)


def next_token_ranks(readout: Readout, model: Any, layer: int, neurons: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The rank of each example's next token among its neuron's promoted tokens, (w_out ⊙ gain) · W_U over the whole
    vocabulary (1 = most promoted; 0: no next token): neurons, targets [n] -> [n] int64. Scores are made once per
    neuron, in chunks of neurons."""
    ranks = np.zeros(len(targets), dtype=np.int64)
    has_next = np.nonzero(targets >= 0)[0]
    unique, inverse = np.unique(neurons[has_next], return_inverse=True)
    unembed = readout.unembed.float().T  # [d_model vocab], made once
    chunk = max(1, RANK_CHUNK_ELEMENTS // unembed.shape[1])
    for start in range(0, len(unique), chunk):
        part = np.nonzero((inverse >= start) & (inverse < start + chunk))[0]
        w_out = output_weights(model, layer, torch.from_numpy(unique[start:start + chunk]))
        scores = readout.written(w_out.to(unembed.device)) @ unembed  # [chunk vocab]
        ordered = scores.sort(dim=-1).values  # ascending: each neuron's scores sorted once, then searched per example
        local = inverse[part] - start  # each example's neuron, a row of `scores`
        by_neuron = np.argsort(local, kind="stable")
        rows, counts = local[by_neuron], np.bincount(local, minlength=len(scores))
        slots = np.arange(len(part)) - np.repeat(np.cumsum(counts) - counts, counts)  # place among its neuron's examples
        wanted = torch.full((len(scores), int(counts.max())), torch.inf, device=scores.device)  # [chunk examples]
        row_index, slot_index = torch.from_numpy(rows).to(scores.device), torch.from_numpy(slots).to(scores.device)
        target = torch.from_numpy(targets[has_next[part[by_neuron]]]).to(scores.device)
        wanted[row_index, slot_index] = scores[row_index, target]
        at_most = torch.searchsorted(ordered, wanted, right=True)[row_index, slot_index]  # scores <= the next token's
        ranks[has_next[part[by_neuron]]] = (scores.shape[1] - at_most + 1).cpu().numpy()  # 1 + the scores above it
    return ranks


@dataclass(frozen=True)
class Firing:
    """One example for the ablation effect: the neuron (layer, neuron) and the document and position of its firing."""

    layer: int
    neuron: int
    doc: int
    position: int


class SingleZeroer:
    """An `mlp_hooks` callback that zeroes, in each batch row, one neuron's a at one position (in place)."""

    def __init__(self) -> None:
        self.targets: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # layer -> rows, positions, neurons

    def __call__(self, layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        if layer in self.targets:
            rows, positions, neurons = (t.to(a.device) for t in self.targets[layer])
            a[rows, positions, neurons] = 0


def next_token_losses(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
    """The cross-entropy of the next token at one position per row [batch] float32 (one forward pass)."""
    hidden = model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    rows = torch.arange(len(positions), device=hidden.device)
    logits = logits_of(model, hidden[rows, positions.to(hidden.device)])  # [batch vocab]
    return torch.logsumexp(logits, -1) - logits[rows, targets.to(hidden.device)]


def zero_targets(firings: Sequence[Firing]) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """layer -> (batch rows, positions, neurons) [k] of the firings of one batch (row r: firings[r])."""
    targets: dict[int, list[tuple[int, int, int]]] = {}
    for row, firing in enumerate(firings):
        targets.setdefault(firing.layer, []).append((row, firing.position, firing.neuron))
    return {layer: tuple(torch.tensor(column) for column in zip(*rows)) for layer, rows in targets.items()}


def ablation_effects(model: Any, dataset: Any, firings: Sequence[Firing], batch_size: int, pad_id: int,
                     device: torch.device) -> np.ndarray:
    """The ablation effect of each firing [n] float32 (nan: no next token). Each batch row is one firing's document
    (firings ordered by document), run once clean and once with only that firing's a zeroed."""
    effects = np.full(len(firings), np.nan, dtype=np.float32)
    if not firings:
        return effects
    order = sorted(range(len(firings)), key=lambda i: (firings[i].doc, i))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    plan = [[firings[i].doc for i in chunk] for chunk in chunks]
    zeroer = SingleZeroer()
    with torch.inference_mode(), mlp_hooks(model, zeroer, sorted({f.layer for f in firings})):
        for chunk, batch in zip(chunks, padded_batches(dataset, plan, pad_id, device)):
            positions = torch.tensor([firings[i].position for i in chunk], device=device)
            targets = next_tokens(batch.input_ids, batch.attention_mask, torch.arange(len(chunk), device=device), positions)
            zeroer.targets = {}
            clean = next_token_losses(model, batch.input_ids, batch.attention_mask, positions, targets.clamp_min(0))
            zeroer.targets = zero_targets([firings[i] for i in chunk])
            ablated = next_token_losses(model, batch.input_ids, batch.attention_mask, positions, targets.clamp_min(0))
            effects[chunk] = np.where(targets.cpu().numpy() >= 0, (ablated - clean).float().cpu().numpy(), np.nan)
    zeroer.targets = {}
    return effects
