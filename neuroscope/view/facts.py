"""Why a neuron is interesting, from the weights side of the project, for the pages and the viewer:
its IO class and cosines (main.py), its functional roles and the kurtosis and skew of
cos(w_out, W_U) (casestudies.py: roles.pt), the case-study reason (case_studies.csv), and what its
weights do to the logits (`LayerLogitEffects`: w_out · W_U, the tokens of ±w_in and ±w_gate).

Shapes: per-model tables are [layer neuron]; per-layer results are [chosen ...] for the chosen neurons.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from gated_core.errors import UserError
from gated_core.models.glu import refactor_glu
from gated_core.results_layout import CONNECTIONS_FOLDER
from wcos_casestudies.connections_store import CONNECTIONS_FILE, Connections, connections_for_views
from wcos_casestudies.constants import CLASS_NAMES
from wcos_casestudies.results import ModelResults
from wcos_casestudies.roles import ROLE_NAMES, unembed_moments
from wcos_casestudies.section6 import read_case_studies, read_roles

LOGIT_BINS = 40  # bins of the histogram of w_out · W_U, linear between its min and max
INPUT_TABLES = ("+w_in", "-w_in", "+w_gate", "-w_gate")  # token tables of the input weights (direction · W_U)


@dataclass(frozen=True)
class ModelFacts:
    """The weight-side facts of every neuron of a model; roles and moments are empty without roles.pt."""

    categories: torch.Tensor  # [layer neuron] IO class code
    cosines: dict[str, torch.Tensor]  # name -> [layer neuron]
    roles: dict[str, torch.Tensor] = field(default_factory=dict)  # role -> [layer neuron] bool
    moments: dict[str, torch.Tensor] = field(default_factory=dict)  # "skew", "kurtosis" -> [layer neuron]
    reasons: dict[tuple[int, int], str] = field(default_factory=dict)  # (layer, neuron) -> why it is a case study
    notes: list[str] = field(default_factory=list)
    connections: Connections | None = None  # g_connections.py's lists, where they exist for these weights

    def io_class(self, layer: int, neuron: int) -> str:
        return CLASS_NAMES[int(self.categories[layer, neuron])]

    def role_names(self, layer: int, neuron: int) -> list[str]:
        return [name for name in ROLE_NAMES if name in self.roles and bool(self.roles[name][layer, neuron])]


def model_facts(results: ModelResults, statistics_fingerprint: str | None = None) -> ModelFacts:
    """Classes and cosines (computed by main.py's code when missing), roles, moments and case-study reasons
    (read when casestudies.py has written them), and the connections (when g_connections.py has written them for
    these weights and settings, and for the statistics `statistics_fingerprint` where they used statistics)."""
    categories, cosines = results.categories(), {k: v for k, v in results.cosines().items() if v is not None}
    stored, notes = read_roles(results), []
    if stored is None:
        notes.append("no roles.pt (run casestudies.py for the functional roles); kurtosis and skew computed here")
    roles = stored.roles if stored is not None else {}
    moments = {name: stored.moments[name] for name in ("skew", "kurtosis") if stored.moments} if stored is not None else {}
    reasons = {(case.layer, case.neuron): case.reason for case in read_case_studies(results.folder)}
    connections = stored_connections(results, statistics_fingerprint, notes)
    return ModelFacts(categories, cosines, roles, moments, reasons, notes, connections)


def stored_connections(results: ModelResults, statistics_fingerprint: str | None, notes: list[str]) -> Connections | None:
    """connections.pt of these weights and settings, or None with a note (and a warning when it is stale)."""
    path = results.folder / CONNECTIONS_FOLDER / CONNECTIONS_FILE
    if not path.exists():
        notes.append("no connections.pt (run g_connections.py for the connections between neurons)")
        return None
    try:
        return connections_for_views(path, results.source.weights_fingerprint, results.settings.meta(), statistics_fingerprint)
    except UserError as exc:
        print(f"warning: connections not shown: {exc}", file=sys.stderr)
        notes.append("connections not shown: connections.pt is stale (run g_connections.py again)")
        return None


@dataclass
class LayerLogitEffects:
    """What the chosen neurons of one layer write to and read from the logits."""

    promoted: torch.Tensor  # [chosen top] token ids of the largest w_out · W_U
    promoted_values: torch.Tensor  # [chosen top] float32
    suppressed: torch.Tensor  # [chosen top] token ids of the smallest
    suppressed_values: torch.Tensor
    low: torch.Tensor  # [chosen] min of w_out · W_U
    high: torch.Tensor  # [chosen] max
    histogram: torch.Tensor  # [chosen LOGIT_BINS] int64, linear bins from low to high
    input_tokens: dict[str, torch.Tensor]  # INPUT_TABLES name -> [chosen table_top] token ids
    input_values: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [chosen table_top] w · W_U (float32)
    skew: torch.Tensor | None = None  # [chosen] of cos(w_out, W_U), when computed here
    kurtosis: torch.Tensor | None = None

    def columns(self, chosen: list[int]) -> LayerLogitEffects:
        """The effects of some of the chosen neurons (by their place among them)."""
        index = torch.tensor(chosen)
        tables = ("input_tokens", "input_values")
        rows = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in tables}
        return LayerLogitEffects(**{name: None if value is None else value[index] for name, value in rows.items()},
                                 **{name: {key: values[index] for key, values in getattr(self, name).items()} for name in tables})


def logit_histogram(logits: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Counts [rows LOGIT_BINS] of each row of `logits` [rows vocab] in LOGIT_BINS linear bins from low to high."""
    rows, _ = logits.shape
    scale = LOGIT_BINS / (high - low).clamp_min(torch.finfo(logits.dtype).tiny)
    bins = ((logits - low[:, None]) * scale[:, None]).long().clamp_(0, LOGIT_BINS - 1)
    bins += torch.arange(rows, device=logits.device)[:, None] * LOGIT_BINS
    return torch.bincount(bins.view(-1), minlength=rows * LOGIT_BINS).view(rows, LOGIT_BINS)


def layer_logit_effects(results: ModelResults, reader: Any, w_u: torch.Tensor, layer: int, neurons: torch.Tensor,
                        top: int, table_top: int, moments: bool, chunk: int = 512) -> LayerLogitEffects:
    """w_out · W_U of the chosen neurons of one layer (top tokens both ways, range, histogram) and the top
    tokens of ±w_in and ±w_gate; with `moments`, also skew and kurtosis of cos(w_out, W_U). Runs in chunks
    of `chunk` neurons so that only [chunk vocab] is held."""
    weights = reader.layer(layer)
    weights = refactor_glu(weights) if results.settings.refactor_glu else weights
    w_u = w_u.float()
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(neurons), chunk):
        rows = neurons[start:start + chunk]
        logits = weights.out[rows].float() @ w_u  # [chunk vocab]
        up, down = torch.topk(logits, top), torch.topk(-logits, top)
        low, high = logits.aminmax(dim=1)
        found = {"promoted": up.indices, "promoted_values": up.values, "suppressed": down.indices,
                 "suppressed_values": -down.values, "low": low, "high": high, "histogram": logit_histogram(logits, low, high)}
        del logits
        for name, vector in (("w_in", weights.lin), ("w_gate", weights.gate)):
            if vector is None:
                continue
            product = vector[rows].float() @ w_u
            plus, minus = torch.topk(product, table_top), torch.topk(-product, table_top)
            found[f"+{name}"], found[f"-{name}"] = plus.indices, minus.indices
            found[f"+{name} values"], found[f"-{name} values"] = plus.values, -minus.values
        for name, value in found.items():
            parts.setdefault(name, []).append(value)
    joined = {name: torch.cat(values) for name, values in parts.items()}
    effects = LayerLogitEffects(**{name: joined[name] for name in ("promoted", "promoted_values", "suppressed",
                                                                   "suppressed_values", "low", "high", "histogram")},
                                input_tokens={name: joined[name] for name in INPUT_TABLES if name in joined},
                                input_values={name: joined[f"{name} values"] for name in INPUT_TABLES if name in joined})
    if moments:
        computed = unembed_moments([weights.out[neurons]], w_u, 1)
        effects.skew, effects.kurtosis = computed["skew"][0], computed["kurtosis"][0]
    return effects
