"""Functional roles of neurons (paper, Section 6 and Appendix E) from their weights.

Shapes: per-layer output weights are [neuron d_model]; W_U is [d_model vocab];
per-model scores are [layer neuron]. Nothing of size layers x neurons x vocabulary is held.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from gated_core.errors import UserError
from gated_core.neurons import NeuronId
from wcos_casestudies.constants import ATTENTION_COSINE, CLASS_NAMES, NORM_EPS, PAPER_N_PARTITION, PARTITION_CAP, SELECTIVE_KURTOSIS

TYPICAL_CLASSES = (0, 2, 4, 6, 7, 9)
ROLE_NAMES = ("partition", "prediction", "suppression", "entropy", "attention_activation", "attention_deactivation")


def unembed_moments(out_layers: Iterable[torch.Tensor], w_u: torch.Tensor, n_layers: int,
                    device: str | torch.device = "cpu", chunk: int = 2048) -> dict[str, torch.Tensor]:
    """Mean, unbiased variance, skew and excess kurtosis over the vocabulary of C = cos(w_out, W_U columns).

    `out_layers` yields each layer's [neuron d_model] output weights. z = (C - mean) / std with
    the unbiased std; skew = mean(z^3), kurtosis = mean(z^4) - 3. Returns [layer neuron] float64 each.
    """
    unit_u = w_u.to(device=device, dtype=torch.float32)
    unit_u = unit_u / unit_u.norm(dim=0, keepdim=True).clamp_min(NORM_EPS)  # [d_model vocab]
    vocab = unit_u.shape[1]
    mean_u = unit_u.mean(dim=1)  # mean over v of cos(w, u_v) = ŵ · mean_v(û_v)
    stats: dict[str, list[torch.Tensor]] = {"mean": [], "variance": [], "skew": [], "kurtosis": []}
    for w_out in tqdm(out_layers, total=n_layers, desc="unembedding moments", leave=False):
        per_layer: dict[str, list[torch.Tensor]] = {name: [] for name in stats}
        for start in range(0, w_out.shape[0], chunk):
            rows = w_out[start:start + chunk].to(device=device, dtype=torch.float32)
            rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
            mean = rows @ mean_u  # [chunk]
            centred = torch.addmm(-mean[:, None].expand(-1, vocab), rows, unit_u)  # C - mean, [chunk vocab]
            square = centred.square()
            second = square.sum(dim=1).double()
            third = square.mul_(centred).sum(dim=1).double()  # square now holds cubes
            fourth = square.mul_(centred).sum(dim=1).double()
            variance = second / (vocab - 1)
            per_layer["mean"].append(mean.double())
            per_layer["variance"].append(variance)
            per_layer["skew"].append(third / vocab / variance.pow(1.5))
            per_layer["kurtosis"].append(fourth / vocab / variance.square() - 3)
            del centred, square
        for name in stats:
            stats[name].append(torch.cat(per_layer[name]).cpu())
    return {name: torch.stack(values) for name, values in stats.items()}


def default_n_partition(n_neurons: int) -> int:
    """The paper's 1000 partition neurons, capped at 5% of a small model's neurons."""
    return max(1, min(PAPER_N_PARTITION, round(n_neurons * PARTITION_CAP)))


def top_neurons(scores: torch.Tensor, n: int) -> torch.Tensor:
    """(layer, neuron) of the n largest scores of a [layer neuron] tensor, largest first: [n 2]."""
    if n > scores.numel():
        raise UserError(f"asked for {n} neurons but the model has only {scores.numel()}")
    flat = torch.topk(scores.flatten(), n).indices
    return torch.stack([flat // scores.shape[1], flat % scores.shape[1]], dim=1)


def mask_of(indices: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Boolean [layer neuron] mask from (layer, neuron) rows."""
    mask = torch.zeros(tuple(shape), dtype=torch.bool)
    if len(indices):
        mask[indices[:, 0], indices[:, 1]] = True
    return mask


def prediction_suppression(moments: dict[str, torch.Tensor], gatelin: torch.Tensor, partition: torch.Tensor,
                           min_kurtosis: float | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Masks of prediction and suppression neurons and the kurtosis threshold used.

    Both have excess kurtosis above the largest among partition neurons (the paper's rule), or above
    `min_kurtosis` where that is larger; prediction when sign(gatelin) * sign(skew) > 0, else suppression.
    """
    kurtosis = moments["kurtosis"]
    threshold = float(kurtosis[partition.bool()].max())
    if min_kurtosis is not None:
        threshold = max(threshold, float(min_kurtosis))
    high = kurtosis > threshold
    agree = torch.sign(gatelin) * torch.sign(moments["skew"]) > 0
    return high & agree, high & ~agree, threshold


def selectivity_warning(high: torch.Tensor, threshold: float) -> str | None:
    """A warning with the numbers when the kurtosis threshold lets through neurons whose vocabulary distribution is
    hardly heavier-tailed than a Gaussian's (excess kurtosis below a Laplace distribution's); None otherwise.
    `high`: [layer neuron] mask of prediction or suppression neurons."""
    if threshold >= SELECTIVE_KURTOSIS:
        return None
    total, last_three = int(high.sum()), int(high[-3:].sum())
    return (f"warning: the prediction/suppression threshold is an excess kurtosis of {threshold:.2f}, below "
            f"{SELECTIVE_KURTOSIS:g} (a Laplace distribution's): {total} of {high.numel()} neurons "
            f"({100 * total / high.numel():.1f}%) pass, {last_three} of them in the last three layers; the role is not "
            f"selective here. --min_kurtosis sets a fixed floor (as Gurnee et al. did)")


def default_null_space_dim(d_model: int) -> int:
    """k = 40 for d_model 4096 (the paper's choice), scaled: max(1, round(40 d_model / 4096))."""
    return max(1, round(40 * d_model / 4096))


def unembed_null_space(w_u: torch.Tensor, k: int) -> torch.Tensor:
    """Left singular vectors of W_U [d_model vocab] for its k smallest singular values: [d_model k]."""
    w_u = w_u.double()
    eigenvalues, eigenvectors = torch.linalg.eigh(w_u @ w_u.T)  # ascending: squared singular values
    return eigenvectors[:, :k].float()


def entropy_scores(w_out: torch.Tensor, null_space: torch.Tensor) -> torch.Tensor:
    """‖projection of w_out onto the null space‖ / ‖w_out‖ for each neuron of [neuron d_model]: [neuron]."""
    w_out = w_out.float()
    return (w_out @ null_space).norm(dim=1) / w_out.norm(dim=1).clamp_min(NORM_EPS)


def bos_query_directions(bridge) -> torch.Tensor:
    """q_{A,h} = W_Q[A, h] k_{A,h}(BOS): the residual direction that makes head h of layer A attend to BOS.

    Runs the model on BOS alone (position 0, where rotary embeddings are the identity).
    Returns [layer head d_model] (layer 0 included; only layers >= 1 are used).
    """
    bos = bridge.tokenizer.bos_token_id
    if bos is None:
        raise UserError("the tokenizer has no BOS token: attention (de)activation neurons cannot be found")
    n_layers = bridge.cfg.n_layers
    names = [f"blocks.{layer}.attn.hook_k" for layer in range(n_layers)]
    with torch.no_grad():
        _, cache = bridge.run_with_cache(torch.tensor([[bos]], device=bridge.cfg.device), names_filter=lambda n: n in names)
        w_q = bridge.W_Q.float()  # [layer head d_model d_head]
        n_heads = w_q.shape[1]
        directions = []
        for layer in range(n_layers):
            keys = cache[names[layer]][0, 0].float()  # [kv_head d_head]
            keys = keys.repeat_interleave(n_heads // keys.shape[0], dim=0)  # grouped-query: head h reads kv h // group
            directions.append(torch.einsum("hmd,hd->hm", w_q[layer], keys))
    return torch.stack(directions).cpu()


def attention_scores(w_out: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """cos(w_out of each neuron, q of each head): [neuron head] for [neuron d_model] and [head d_model]."""
    w_out = w_out.float() / w_out.float().norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
    directions = directions.float() / directions.float().norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
    return w_out @ directions.T


def attention_roles(scores: torch.Tensor, gatelin: torch.Tensor,
                    threshold: float = ATTENTION_COSINE) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation and deactivation masks [neuron] from one layer's [neuron head] scores.

    A neuron counts when |score| > threshold for some head of the next layer; deactivation
    if gatelin * (score of its strongest head) > 0, else activation.
    """
    strongest = scores.gather(1, scores.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    counts = scores.abs().max(dim=1).values > threshold
    deactivation = counts & (gatelin * strongest > 0)
    return counts & ~deactivation, deactivation


def contingency(roles: dict[str, torch.Tensor], categories: torch.Tensor) -> pd.DataFrame:
    """Rows: roles; columns: the 11 IO classes; cells: neuron counts (rows sum to role sizes)."""
    rows = []
    for role, mask in roles.items():
        counts = torch.bincount(categories[mask].long().flatten(), minlength=len(CLASS_NAMES))
        rows.append({"role": role, **{name: int(n) for name, n in zip(CLASS_NAMES, counts)}, "total": int(mask.sum())})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class CaseStudy:
    """A chosen neuron: why it was chosen, where it is, and its class."""

    reason: str
    layer: int
    neuron: int
    io_class: str
    kurtosis: float

    @property
    def name(self) -> str:
        return NeuronId(self.layer, self.neuron).name


def case_study_neurons(prediction: torch.Tensor, suppression: torch.Tensor, kurtosis: torch.Tensor,
                       categories: torch.Tensor) -> list[CaseStudy]:
    """The highest-kurtosis prediction and suppression neurons, then for each other typical class
    the highest-kurtosis prediction neuron of that class."""

    def best(mask: torch.Tensor, reason: str) -> CaseStudy | None:
        if not mask.any():
            return None
        scores = torch.where(mask, kurtosis, torch.tensor(-math.inf, dtype=kurtosis.dtype))
        layer, neuron = NeuronId.from_flat(scores.argmax(), scores.shape[1])
        return CaseStudy(reason, layer, neuron, CLASS_NAMES[int(categories[layer, neuron])], float(kurtosis[layer, neuron]))

    chosen = [c for c in (best(prediction, "highest-kurtosis prediction neuron"),
                          best(suppression, "highest-kurtosis suppression neuron")) if c is not None]
    covered = {c.io_class for c in chosen}
    for code in TYPICAL_CLASSES:
        if CLASS_NAMES[code] in covered:
            continue
        pick = best(prediction & (categories == code), f"highest-kurtosis prediction neuron of class {CLASS_NAMES[code]}")
        if pick is not None:
            chosen.append(pick)
    return chosen


def top_tokens(direction: torch.Tensor, w_u: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and values of the k tokens with the largest dot product direction · W_U[:, v]."""
    logits = direction.float() @ w_u.float()
    values, indices = torch.topk(logits, min(k, logits.numel()))
    return indices, values
