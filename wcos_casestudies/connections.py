"""Weight-based connections between gated neurons (paper, Section 5 weights; the interactions its viewer leaves out).

With the weights processed as in Section 5 (norm gains folded into w_gate and w_in), neuron (l', j) writes a·w_out[l', j]
into the residual stream and neuron (l, i), l > l', reads the normalised residual through w_gate[l, i] and w_in[l, i].
The virtual weights are w_out[l', j]·w_gate[l, i] (into the gate) and w_out[l', j]·w_in[l, i] (into the linear input),
the connection per unit of normalised residual; the cosines are the same dot products of unit vectors. This is the
usual first-order reading: it ignores the norm's per-token scale 1/rms and everything in between (attention, other
neurons). The sign matters twice for a gated neuron: an upstream neuron with a > 0 and a negative weight into the gate
closes it; into the linear input it flips the sign of u and so of a.

Kinds of list, per neuron (l, i):
- `gate_input`, `linear_input`: the neurons (l' < l, j) writing into its gate / linear input;
- `gate_reader`, `linear_reader`: the neurons (l' > l, j) whose gate / linear input reads its w_out;
- `gate_embed`, `linear_embed`: the embedding's tokens t, W_E[t]·w_gate[l, i] / W_E[t]·w_in[l, i] (the embedding
  written straight into the residual stream, as every layer reads it).
Each kind is ranked by |virtual weight| and by |cosine|; with a per-upstream scale (a typical size of each neuron's a)
the inputs are also ranked by |expected contribution| = |virtual weight × scale of the upstream neuron| (for a reader
list the scale is that of the neuron itself, the same for its whole list, so the ranking by virtual weight serves).

Streaming: reading layer by reading layer, over blocks of upstream layers, with running top-k lists; memory holds one
reading layer, one block of upstream output weights, their virtual-weight matrix [upstream neuron] and the lists.

Tie rule: equal ranking scores are ordered by the lower index of the other end (layer, then neuron; token id for
the embedding); every list is sorted by the ranking score, descending, then by that index.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from gated_core.errors import UserError
from gated_core.models.glu import refactor_glu
from gated_core.models.readers import LayerMLP, WeightReader

INPUT_KINDS = ("gate_input", "linear_input")
READER_KINDS = ("gate_reader", "linear_reader")
EMBED_KINDS = ("gate_embed", "linear_embed")
KINDS = (*INPUT_KINDS, *READER_KINDS, *EMBED_KINDS)
RANKINGS = ("virtual_weight", "cosine", "expected_contribution")
READ_BY = {"gate": ("gate_input", "gate_reader", "gate_embed"), "linear": ("linear_input", "linear_reader", "linear_embed")}
BLOCK_BYTES = 512 * 2**20  # upper bound of one virtual-weight matrix [upstream neuron] float32
KEEP_OUTPUTS_BYTES = 2 * 2**30  # keep every layer's w_out in memory below this size, else read them again per layer
EMPTY = -1  # `other` of an empty slot (no such connection: layer 0 has no inputs, the last layer no readers)
NORM_FLOOR = 1e-12  # floor of a weight norm before dividing by it
CANDIDATE_GROUP = 32  # consecutive entries whose maximum stands for them in the fast top-k
GROUPED_MIN_RATIO = 8  # the fast top-k pays off for lines at least this many times longer than its candidates


@dataclass
class RunningTop:
    """Running top-k lists of one kind and ranking, for every neuron: all [layer neuron k]."""

    other: torch.Tensor  # int64: upstream/downstream neuron packed as layer * d_mlp + neuron, or a token id; EMPTY
    weight: torch.Tensor  # float32 virtual weight (NaN in empty slots)
    score: torch.Tensor  # float32 ranking score (-inf in empty slots)

    @classmethod
    def empty(cls, n_layers: int, d_mlp: int, k: int, device: torch.device | str) -> RunningTop:
        shape = (n_layers, d_mlp, k)
        return cls(other=torch.full(shape, EMPTY, dtype=torch.long, device=device),
                   weight=torch.full(shape, float("nan"), device=device),
                   score=torch.full(shape, -float("inf"), device=device))

    def merge(self, layer_slice: slice, other: torch.Tensor, weight: torch.Tensor, score: torch.Tensor) -> None:
        """Merge candidates [rows k'] into the lists of `layer_slice` (its rows flattened, layer-major); the candidates'
        `other` must all be larger than those already kept (streaming order), so ties keep the lower index first."""
        shape = self.other[layer_slice].shape
        rows = shape[0] * shape[1]
        both_score = torch.cat([self.score[layer_slice].reshape(rows, -1), score], dim=1)
        order = torch.sort(both_score, dim=1, descending=True, stable=True).indices[:, :shape[2]]
        both_other = torch.cat([self.other[layer_slice].reshape(rows, -1), other], dim=1)
        both_weight = torch.cat([self.weight[layer_slice].reshape(rows, -1), weight], dim=1)
        self.score[layer_slice] = both_score.gather(1, order).reshape(shape)
        self.other[layer_slice] = both_other.gather(1, order).reshape(shape)
        self.weight[layer_slice] = both_weight.gather(1, order).reshape(shape)


def top_along_rows(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of `scores` [rows m], the k largest entries and their positions [rows min(k, m)], sorted by score
    descending; equal scores by the lower position (also at the k-th place: exact, not topk's arbitrary pick)."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        probe = scores.topk(k + 1, dim=1)
        values, positions = probe.values[:, :k], probe.indices[:, :k]
        tied = probe.values[:, k - 1] == probe.values[:, k]  # the k-th place is shared: topk's pick is arbitrary there
        if bool(tied.any()):
            exact = torch.sort(scores[tied], dim=1, descending=True, stable=True)
            values[tied], positions[tied] = exact.values[:, :k], exact.indices[:, :k]
    else:
        exact = torch.sort(scores, dim=1, descending=True, stable=True)
        return exact.values, exact.indices
    by_position = positions.sort(dim=1)
    values = values.gather(1, by_position.indices)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, order), by_position.values.gather(1, order)


def group_maxima(scores: torch.Tensor, dim: int, group: int) -> torch.Tensor:
    """The maximum of every `group` consecutive entries along `dim` of scores [a b], as [other groups]."""
    if dim == 1:
        return scores.view(scores.shape[0], -1, group).amax(dim=2)
    return scores.view(-1, group, scores.shape[1]).amax(dim=1).T


def top_k_along(scores: torch.Tensor, k: int, dim: int, group: int = CANDIDATE_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """`top_along_rows` of scores [a b] along `dim` (1: per row; 0: per column), as [other k], fast: the k largest of a
    line lie in the k groups of `group` consecutive entries with the largest maxima (each of the k holds one, and no
    other group can beat them), so only those k·group candidates are ranked exactly. Lines where the k-th and the
    next group maximum tie are ranked over all their entries (the tie rule must see every tied entry)."""
    length = scores.shape[dim]
    if length % group or length < GROUPED_MIN_RATIO * k * group:
        return top_along_rows(scores if dim == 1 else scores.T, k)
    maxima = group_maxima(scores, dim, group)  # [other groups]
    probe = maxima.topk(k + 1, dim=1)
    groups = probe.indices[:, :k].sort(dim=1).values  # ascending: candidates keep the original order
    candidates = (groups[:, :, None] * group + torch.arange(group, device=scores.device)).reshape(groups.shape[0], -1)
    lines = scores if dim == 1 else scores.T
    values, picked = top_along_rows(lines.gather(1, candidates), k)
    positions = candidates.gather(1, picked)
    tied = probe.values[:, k - 1] == probe.values[:, k]
    if bool(tied.any()):
        values[tied], positions[tied] = top_along_rows(lines[tied], k)
    return values, positions


@dataclass
class ConnectionInputs:
    """What the lists are computed from: the number of entries per list, an optional per-neuron scale
    [layer neuron] (a typical |a|: expected contributions), where to compute, and whether to list the embedding."""

    top_k: int
    scale: torch.Tensor | None = None
    device: torch.device | str = "cpu"
    embed: bool = True
    refactor: bool = False


@dataclass
class ConnectionLists:
    """Every list: `lists[(kind, ranking)]` -> RunningTop (its `score` is what the merges rank by; connections.pt
    leaves it out), the norms [layer neuron] of w_out, w_gate and w_in (`norms["embed"]`: [vocab]) to turn weights into cosines."""

    lists: dict[tuple[str, str], RunningTop]
    norms: dict[str, torch.Tensor]
    scale: torch.Tensor | None
    seconds: dict[str, float] = field(default_factory=dict)


def rankings_of(kind: str, has_scale: bool) -> tuple[str, ...]:
    """The rankings that list `kind` is kept by (expected contribution: inputs only, and only with a scale)."""
    return RANKINGS if has_scale and kind in INPUT_KINDS else RANKINGS[:2]


def ranking_score(weights: torch.Tensor, ranking: str, row_norms: torch.Tensor, column_norms: torch.Tensor,
                  row_scale: torch.Tensor | None) -> torch.Tensor:
    """The score a list is ranked by, for a virtual-weight matrix [upstream downstream]: |w|, |cosine| (the norms
    [upstream], [downstream]) or |w × scale of the upstream neuron| ([upstream])."""
    if ranking == "virtual_weight":
        return weights.abs()
    if ranking == "cosine":
        return weights.abs().mul_(row_norms.clamp_min(NORM_FLOOR).reciprocal()[:, None]).mul_(
            column_norms.clamp_min(NORM_FLOOR).reciprocal()[None, :])
    if row_scale is None:
        raise ValueError("the expected contribution needs a scale")
    return weights.abs().mul_(row_scale.abs()[:, None])


def upstream_blocks(layer: int, d_mlp: int, d_reading: int) -> Iterator[tuple[int, int]]:
    """Blocks [start, stop) of the layers before `layer`, each small enough that its virtual-weight matrix
    [(block neuron) reading neuron] float32 stays under BLOCK_BYTES (at least one layer per block)."""
    per_block = max(1, BLOCK_BYTES // (4 * d_mlp * max(d_reading, 1)))
    for start in range(0, layer, per_block):
        yield start, min(layer, start + per_block)


class OutputWeights:
    """The processed w_out of every layer [neuron d_model] on the device: kept when they fit KEEP_OUTPUTS_BYTES, else
    read again for every reading layer (memory: one block)."""

    def __init__(self, reader: WeightReader, device: torch.device | str, refactor: bool):
        arch = reader.arch
        self.reader, self.device, self.refactor = reader, device, refactor
        self.keep = 4 * arch.n_layers * arch.d_mlp * arch.d_model <= KEEP_OUTPUTS_BYTES
        self.kept: dict[int, torch.Tensor] = {}

    def layer(self, index: int) -> LayerMLP:
        mlp = self.reader.layer(index)
        return refactor_glu(mlp) if self.refactor else mlp

    def block(self, start: int, stop: int) -> torch.Tensor:
        """w_out of layers start..stop-1, stacked: [(layer neuron) d_model]."""
        parts = []
        for index in range(start, stop):
            out = self.kept.get(index)
            if out is None:
                out = self.layer(index).out.to(self.device)
                if self.keep:
                    self.kept[index] = out
            parts.append(out)
        return torch.cat(parts) if len(parts) > 1 else parts[0]


def new_lists(reader: WeightReader, inputs: ConnectionInputs) -> dict[tuple[str, str], RunningTop]:
    """Empty running lists of every kind and ranking; the embedding's have one slot per neuron as the others."""
    arch = reader.arch
    kinds = KINDS if inputs.embed else (*INPUT_KINDS, *READER_KINDS)
    return {(kind, ranking): RunningTop.empty(arch.n_layers, arch.d_mlp, inputs.top_k, inputs.device)
            for kind in kinds for ranking in rankings_of(kind, inputs.scale is not None)}


def merge_block(lists: dict[tuple[str, str], RunningTop], weights: torch.Tensor, reading: int, start: int, stop: int,
                read_by: str, norms: dict[str, torch.Tensor], scale: torch.Tensor | None, top_k: int) -> None:
    """Merge one block's virtual weights [(upstream layer neuron) reading neuron] into the input lists of layer
    `reading` and the reader lists of layers start..stop-1 (`read_by`: gate or linear)."""
    d_mlp = weights.shape[1]
    input_kind, reader_kind, _ = READ_BY[read_by]
    row_norms = norms["out"][start:stop].reshape(-1)
    row_scale = None if scale is None else scale[start:stop].reshape(-1)
    reading_ids = torch.arange(d_mlp, device=weights.device) + reading * d_mlp
    for ranking in rankings_of(input_kind, scale is not None):
        score = ranking_score(weights, ranking, row_norms, norms[read_by][reading], row_scale)
        values, positions = top_k_along(score, top_k, dim=0)  # inputs of each reading neuron
        lists[(input_kind, ranking)].merge(slice(reading, reading + 1), positions + start * d_mlp,
                                           weights.T.gather(1, positions), values)
        if ranking in rankings_of(reader_kind, scale is not None):
            values, positions = top_k_along(score, top_k, dim=1)  # readers of each upstream neuron, in this layer
            lists[(reader_kind, ranking)].merge(slice(start, stop), reading_ids[positions],
                                                weights.gather(1, positions), values)


def merge_embedding(lists: dict[tuple[str, str], RunningTop], w_e: torch.Tensor, reading: int, w_read: torch.Tensor,
                    read_by: str, norms: dict[str, torch.Tensor], top_k: int) -> None:
    """The embedding's tokens into the gate or the linear input of layer `reading` (w_e [vocab d_model], w_read
    [neuron d_model]), in blocks of tokens [token neuron] under BLOCK_BYTES."""
    kind = READ_BY[read_by][2]
    per_block = max(1, BLOCK_BYTES // (4 * w_read.shape[0]))
    for start in range(0, w_e.shape[0], per_block):
        weights = w_e[start:start + per_block] @ w_read.T
        for ranking in rankings_of(kind, False):
            score = ranking_score(weights, ranking, norms["embed"][start:start + per_block], norms[read_by][reading], None)
            values, positions = top_k_along(score, top_k, dim=0)
            lists[(kind, ranking)].merge(slice(reading, reading + 1), positions + start, weights.T.gather(1, positions),
                                         values)


def compute_connections(reader: WeightReader, inputs: ConnectionInputs) -> ConnectionLists:
    """Every list of every neuron, streaming over reading layers and blocks of upstream layers."""
    arch, device = reader.arch, inputs.device
    if not arch.gated:
        raise UserError(f"{reader.source.name} has no gate weights: connections into gates need a gated model")
    norms = {name: torch.zeros(arch.n_layers, arch.d_mlp, device=device) for name in ("out", "gate", "linear")}
    lists, outputs = new_lists(reader, inputs), OutputWeights(reader, device, inputs.refactor)
    scale = None if inputs.scale is None else inputs.scale.float().to(device)
    seconds = {"neurons": 0.0, "embedding": 0.0}
    w_e = reader.embed().float().to(device) if inputs.embed else None
    if w_e is not None:
        norms["embed"] = w_e.norm(dim=-1)
    for reading in range(arch.n_layers):
        mlp = outputs.layer(reading)
        reads = {"gate": mlp.gate.to(device), "linear": mlp.lin.to(device)}
        norms["out"][reading] = mlp.out.to(device).norm(dim=-1)
        for name, w_read in reads.items():
            norms[name][reading] = w_read.norm(dim=-1)
        started = time.perf_counter()
        for start, stop in upstream_blocks(reading, arch.d_mlp, arch.d_mlp):
            w_out = outputs.block(start, stop)
            for name, w_read in reads.items():
                merge_block(lists, w_out @ w_read.T, reading, start, stop, name, norms, scale, inputs.top_k)
        seconds["neurons"] += time.perf_counter() - started
        if w_e is not None:
            started = time.perf_counter()
            for name, w_read in reads.items():
                merge_embedding(lists, w_e, reading, w_read, name, norms, inputs.top_k)
            seconds["embedding"] += time.perf_counter() - started
    return ConnectionLists(lists=lists, norms={k: v.cpu() for k, v in norms.items()},
                           scale=None if scale is None else scale.cpu(), seconds=seconds)


def mean_abs_from_histogram(histogram: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean |a| of every neuron [layer neuron] from its histogram of a ([layer neuron bin] counts, `edges` [bin + 1]):
    each bin counts at the middle of its edges' magnitudes; the open outer bins at their finite edge. Within the
    activation pass's bins (4 per octave) the middle is within 12% of any value of the bin."""
    magnitudes = torch.stack([edges[:-1].abs(), edges[1:].abs()])  # [2 bin]
    finite = torch.where(torch.isinf(magnitudes), torch.nan, magnitudes)
    middle = finite.nanmean(dim=0)  # [bin]
    counts = histogram.double()
    return ((counts * middle).sum(dim=-1) / counts.sum(dim=-1).clamp_min(1)).float()
