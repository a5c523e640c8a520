"""The published summary's numbers that this project's statistics do not hold, computed by their definition in one
pass of the model over the dataset (`b_export_summary.py --complete`): per neuron and strict sign case of (g, u), the
count of its tokens, the sums of a, u, g and act(g) over them, and for each listed value (`LISTS`) the k dataset
rows (documents) of largest |value| in the case, each by its most extreme token (ties: the lower row). Every real
token counts, the document's first one included, as in the published summaries.

The documents run in their order, in batches of consecutive rows; the running totals are saved every
`checkpoint_every` batches (`CaseCheckpoint`), and a run started again with the same inputs resumes from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gated_core.artifacts import PROJECT_TAG, load_artifact, save_artifact
from neuroscope.activation_pass.activations import COMBINATION_SIGNS
from neuroscope.core.batches import padded_batches
from neuroscope.core.hooks import decoder_layers, mlp_hooks, run_model
from neuroscope.summary.schema import CASES, VALUES, listed

LISTS = tuple((case, value) for case in range(len(CASES)) for value in range(len(VALUES)) if listed(CASES[case], VALUES[value]))
CHECKPOINT_KIND = "summary_pass_checkpoint"
NONE = len(CASES)  # the cell of a token in no strict case (g or u exactly 0, or padding)
CELLS = NONE + 1


def value_sign(case: int, value: int) -> int:
    """The sign every value of `VALUES[value]` has in strict case `case`: a by its combination, u by the linear input's
    sign, g and act(g) by the gate's."""
    gate_open, linear_positive = case < 2, case % 2 == 0
    return (COMBINATION_SIGNS[case], 1 if linear_positive else -1, 1 if gate_open else -1, 1 if gate_open else -1)[value]


@dataclass
class CaseTotals:
    """Running totals: counts [layer neuron case] int64, sums [layer neuron case value] float64, the lists' |value|
    [layer neuron list k] float32 (-inf: empty) and their rows (int64), `tokens` real tokens seen, `next_batch`."""

    counts: torch.Tensor
    sums: torch.Tensor
    magnitudes: torch.Tensor
    rows: torch.Tensor
    tokens: int = 0
    next_batch: int = 0

    @classmethod
    def empty(cls, n_layers: int, d_mlp: int, k: int, device: Any) -> CaseTotals:
        lists = (n_layers, d_mlp, len(LISTS), k)
        return cls(torch.zeros((n_layers, d_mlp, len(CASES)), dtype=torch.long, device=device),
                   torch.zeros((n_layers, d_mlp, len(CASES), len(VALUES)), dtype=torch.float64, device=device),
                   torch.full(lists, -torch.inf, device=device), torch.full(lists, -1, dtype=torch.long, device=device))

    def columns(self) -> dict[str, np.ndarray]:
        """freq [layer neuron case] (of all tokens), mean [layer neuron case value] (NaN where the case never occurs),
        and the lists' signed values and rows [layer neuron list k] in the published form (empty: value 0, row 0)."""
        counts = self.counts.cpu()
        mean = torch.where(counts[..., None] > 0, self.sums.cpu() / counts[..., None].clamp_min(1), torch.nan)
        signs = torch.tensor([value_sign(case, value) for case, value in LISTS], dtype=torch.float32)[:, None]
        magnitudes, empty = self.magnitudes.cpu(), self.rows.cpu() < 0
        return {"freq": (counts.double() / max(self.tokens, 1)).numpy(), "mean": mean.numpy(),
                "values": torch.where(empty | torch.isinf(magnitudes), 0.0, magnitudes * signs).numpy(),
                "rows": torch.where(empty | torch.isinf(magnitudes), 0, self.rows.cpu()).numpy()}


class CaseReducer:
    """The hook callback that folds one batch's g, u, a [batch pos neuron] into the totals, layer by layer."""

    def __init__(self, model: Any, totals: CaseTotals):
        self.acts = [block.mlp.act_fn for block in decoder_layers(model)]
        self.totals = totals
        self.valid: torch.Tensor | None = None  # [batch pos 1] bool: real tokens
        self.batch_rows: torch.Tensor | None = None  # [batch] dataset rows

    def start(self, attention_mask: torch.Tensor, rows: list[int]) -> None:
        self.valid = attention_mask.bool()[..., None]
        self.batch_rows = torch.tensor(rows, dtype=torch.long, device=attention_mask.device)

    def __call__(self, layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        values = [t.float() for t in (a, u, g, self.acts[layer](g))]  # VALUES' order, each [batch pos neuron]
        cases = self.cases(values[2], values[1])  # [batch*pos neuron]
        totals, d_mlp = self.totals, a.shape[-1]
        ones = torch.ones_like(cases)
        totals.counts[layer] += torch.zeros((CELLS, d_mlp), dtype=torch.long, device=a.device).scatter_add_(0, cases, ones)[:NONE].T
        rows = cases.shape[0] // len(self.batch_rows)  # positions per document
        doc_cases = cases + CELLS * torch.arange(len(self.batch_rows), device=a.device).repeat_interleave(rows)[:, None]
        for index, value in enumerate(values):
            flat = value.flatten(0, 1)
            sums = torch.zeros((CELLS, d_mlp), dtype=torch.float64, device=a.device).scatter_add_(0, cases, flat.double())
            totals.sums[layer, :, :, index] += sums[:NONE].T
            slots = [(slot, case) for slot, (case, listed_value) in enumerate(LISTS) if listed_value == index]
            if slots:  # each document's largest |value| per case: [batch case neuron]
                best = torch.full((len(self.batch_rows) * CELLS, d_mlp), -torch.inf, device=a.device)
                best = best.scatter_reduce_(0, doc_cases, flat.abs(), "amax").view(len(self.batch_rows), CELLS, d_mlp)
                for slot, case in slots:
                    self.merge(layer, slot, best[:, case].T)

    def cases(self, gate: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
        """Each (token, neuron)'s strict case (CASES' index), NONE where g or u is 0 or the token is padding:
        [batch*pos neuron] int64."""
        case = (gate <= 0).long() * 2 + (linear <= 0).long()
        return torch.where((gate == 0) | (linear == 0) | ~self.valid, NONE, case).flatten(0, 1)

    def merge(self, layer: int, slot: int, best: torch.Tensor) -> None:
        """Fold the batch's per-document |value| [neuron batch] into list `slot`: the k largest, ties by the lower row
        (the kept entries come from earlier rows, the batch's rows ascend, and the sort is stable)."""
        totals = self.totals
        values = torch.cat([totals.magnitudes[layer, :, slot], best], dim=1)
        rows = torch.cat([totals.rows[layer, :, slot], self.batch_rows[None].expand(best.shape[0], -1)], dim=1)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :totals.magnitudes.shape[-1]]
        totals.magnitudes[layer, :, slot] = values.gather(1, order)
        totals.rows[layer, :, slot] = torch.where(torch.isinf(values.gather(1, order)), -1, rows.gather(1, order))


@dataclass(frozen=True)
class CaseCheckpoint:
    """Where the running totals are saved, and what they must agree on to be resumed."""

    path: Path
    identity: dict[str, Any]

    def load(self) -> CaseTotals | None:
        """The saved totals of the same run, if any (those of another run are started again)."""
        if not self.path.exists():
            return None
        data = load_artifact(self.path, kind=CHECKPOINT_KIND)
        if data["meta"].get("identity") != self.identity:
            return None
        return CaseTotals(**{key: data[key] for key in ("counts", "sums", "magnitudes", "rows")},
                          tokens=int(data["tokens"]), next_batch=int(data["next_batch"]))

    def save(self, totals: CaseTotals) -> None:
        save_artifact({"meta": {"project": PROJECT_TAG, "kind": CHECKPOINT_KIND, "identity": self.identity}, "counts": totals.counts,
                       "sums": totals.sums, "magnitudes": totals.magnitudes, "rows": totals.rows,
                       "tokens": totals.tokens, "next_batch": totals.next_batch}, self.path)


def case_pass(model: Any, dataset: Any, k: int, batch_size: int, pad_id: int, device: Any, checkpoint: CaseCheckpoint,
              checkpoint_every: int = 200) -> CaseTotals:
    """Run every document of `dataset` (in row order) and return the totals; resumes from `checkpoint`."""
    layers = decoder_layers(model)
    d_mlp = layers[0].mlp.gate_proj.out_features
    totals = checkpoint.load() or CaseTotals.empty(len(layers), d_mlp, k, device)
    totals = CaseTotals(*(t.to(device) for t in (totals.counts, totals.sums, totals.magnitudes, totals.rows)),
                        tokens=totals.tokens, next_batch=totals.next_batch)
    plan = [list(range(start, min(start + batch_size, len(dataset)))) for start in range(0, len(dataset), batch_size)]
    reducer = CaseReducer(model, totals)
    with mlp_hooks(model, reducer, range(len(layers))), tqdm(total=len(plan), initial=totals.next_batch,
                                                              desc="per-case means and lists", unit="batch") as progress:
        for batch in padded_batches(dataset, plan, pad_id, device, range(totals.next_batch, len(plan)), progress):
            reducer.start(batch.attention_mask, batch.docs)
            run_model(model, batch.input_ids, batch.attention_mask)
            totals.tokens += int(batch.attention_mask.sum())
            totals.next_batch = batch.index + 1
            if checkpoint_every and totals.next_batch % checkpoint_every == 0 and totals.next_batch < len(plan):
                checkpoint.save(totals)
    return totals
