"""`connections.pt`: every connection list of a model (wcos_casestudies.connections), with what it was made from, and
the reader API for pages: `load_connections(...).of(layer, neuron)` gives the lists of one neuron ready to show.

Stored per list (`lists["<kind>/<ranking>"]`): `other` [layer neuron k] int32 (an upstream/downstream neuron packed as
layer * d_mlp + neuron, a token id for the embedding kinds; -1: empty slot) and `virtual_weight` [layer neuron k]
float32; the cosines and the expected contributions follow from `norms` (of w_out, w_gate, w_in [layer neuron], of the
embedding's rows [vocab]) and `scale` [layer neuron] (absent without statistics), so they are not stored twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gated_core.artifacts import PROJECT_TAG, check_provenance, load_artifact, made_from, package_versions, save_artifact
from gated_core.errors import UserError
from gated_core.neurons import NeuronId
from wcos_casestudies.connections import EMBED_KINDS, EMPTY, INPUT_KINDS, KINDS, NORM_FLOOR, ConnectionLists

CONNECTIONS_KIND = "connections"  # meta["kind"] of connections.pt
CONNECTIONS_FILE = "connections.pt"
CONNECTIONS_REMEDY = "make them again with neuroscope-connections (it overwrites the file)"
READ_NORM = {"gate": "gate", "linear": "linear"}  # the first word of a kind -> the norm of the weights it reads with


def save_connections(found: ConnectionLists, path: Path, meta: dict[str, Any]) -> Path:
    """Write `connections.pt` atomically: the lists (other int32, virtual weight float32), norms, scale and `meta`
    (which must hold the fingerprints of what the lists were made from)."""
    lists = {f"{kind}/{ranking}": {"other": top.other.to(torch.int32).cpu(), "virtual_weight": top.weight.cpu()}
             for (kind, ranking), top in found.lists.items()}
    data = {"meta": {"project": PROJECT_TAG, "kind": CONNECTIONS_KIND, "versions": package_versions(),
                     "seconds": {k: round(v, 2) for k, v in found.seconds.items()}, "written": time.strftime("%Y-%m-%d"),
                     **meta},
            "lists": lists, "norms": found.norms}
    if found.scale is not None:
        data["scale"] = found.scale
    return save_artifact(data, path)


@dataclass(frozen=True)
class Connection:
    """One entry of a list: the neuron (layer, neuron) or the token at the other end, and the numbers."""

    rank: int  # 1 = first
    layer: int | None  # None for a token of the embedding
    neuron: int | None
    token: int | None  # the token id (embedding kinds), else None
    virtual_weight: float
    cosine: float
    expected_contribution: float | None  # virtual weight x the upstream neuron's scale; None without statistics

    @property
    def other(self) -> str:
        """`LAYER.NEURON`, or `token <id>`."""
        return f"token {self.token}" if self.token is not None else NeuronId(self.layer, self.neuron).name


class Connections:
    """The lists of a loaded connections.pt (`load_connections`)."""

    def __init__(self, data: dict[str, Any]):
        self.meta: dict[str, Any] = data["meta"]
        self.lists: dict[str, dict[str, torch.Tensor]] = data["lists"]
        self.norms: dict[str, torch.Tensor] = data["norms"]
        self.scale: torch.Tensor | None = data.get("scale")
        self.n_layers, self.d_mlp = (int(v) for v in self.norms["out"].shape)

    @property
    def rankings(self) -> list[str]:
        """The rankings stored (virtual_weight, cosine, and expected_contribution with statistics)."""
        return sorted({key.split("/")[1] for key in self.lists}, key=["virtual_weight", "cosine", "expected_contribution"].index)

    @property
    def kinds(self) -> list[str]:
        """The kinds stored, in the order of connections.KINDS."""
        present = {key.split("/")[0] for key in self.lists}
        return [kind for kind in KINDS if kind in present]

    def _entry(self, kind: str, rank: int, layer: int, neuron: int, other: int, weight: float) -> Connection:
        reads = READ_NORM[kind.split("_")[0]]
        if kind in EMBED_KINDS:
            cosine = weight / max(float(self.norms["embed"][other] * self.norms[reads][layer, neuron]), NORM_FLOOR)
            return Connection(rank, None, None, other, weight, cosine, None)
        other_layer, other_neuron = NeuronId.from_flat(other, self.d_mlp)
        if kind in INPUT_KINDS:
            out_norm, read_norm, upstream = self.norms["out"][other_layer, other_neuron], self.norms[reads][layer, neuron], (other_layer, other_neuron)
        else:
            out_norm, read_norm, upstream = self.norms["out"][layer, neuron], self.norms[reads][other_layer, other_neuron], (layer, neuron)
        cosine = weight / max(float(out_norm * read_norm), NORM_FLOOR)
        expected = None if self.scale is None else weight * float(self.scale[upstream])
        return Connection(rank, other_layer, other_neuron, None, weight, cosine, expected)

    def of(self, layer: int, neuron: int, ranking: str = "virtual_weight") -> dict[str, list[Connection]]:
        """kind -> the list of neuron (layer, neuron) by `ranking` (the reader kinds have no expected_contribution
        ranking: the scale is their own neuron's, so it is the virtual-weight ranking; that one comes back)."""
        if not (0 <= layer < self.n_layers and 0 <= neuron < self.d_mlp):
            raise UserError(f"neuron {NeuronId(layer, neuron)}: out of range; the lists cover layers 0..{self.n_layers - 1} and "
                            f"neurons 0..{self.d_mlp - 1}")
        if ranking not in self.rankings:
            raise UserError(f"ranking {ranking!r} not stored; connections.pt has {', '.join(self.rankings)}")
        found = {}
        for kind in self.kinds:
            key = f"{kind}/{ranking}" if f"{kind}/{ranking}" in self.lists else f"{kind}/virtual_weight"
            others = self.lists[key]["other"][layer, neuron].tolist()
            weights = self.lists[key]["virtual_weight"][layer, neuron].tolist()
            found[kind] = [self._entry(kind, rank + 1, layer, neuron, other, weight)
                           for rank, (other, weight) in enumerate(zip(others, weights)) if other != EMPTY]
        return found

    def layer_lists(self, layer: int, neurons: torch.Tensor, kind: str, ranking: str, shown: int) -> dict[str, torch.Tensor]:
        """The first `shown` entries of one list of several neurons of a layer at once (what `of` gives one by one):
        `other` [neuron shown] int64 (packed neuron or token id, EMPTY: none), `virtual_weight`, `cosine` and, with
        statistics, `expected_contribution` (float32, 0 where empty)."""
        key = f"{kind}/{ranking}" if f"{kind}/{ranking}" in self.lists else f"{kind}/virtual_weight"
        other = self.lists[key]["other"][layer, neurons, :shown].long()
        weight = self.lists[key]["virtual_weight"][layer, neurons, :shown].float()
        empty, safe = other == EMPTY, other.clamp(min=0)
        reads = self.norms[READ_NORM[kind.split("_")[0]]]
        if kind in EMBED_KINDS:
            norms = self.norms["embed"][safe] * reads[layer, neurons][:, None]
        elif kind in INPUT_KINDS:
            norms = self.norms["out"].reshape(-1)[safe] * reads[layer, neurons][:, None]
        else:
            norms = self.norms["out"][layer, neurons][:, None] * reads.reshape(-1)[safe]
        found = {"other": other, "virtual_weight": weight.masked_fill(empty, 0.0),
                 "cosine": (weight / norms.clamp(min=NORM_FLOOR)).masked_fill(empty, 0.0)}
        if self.scale is not None and kind not in EMBED_KINDS:
            scale = self.scale.reshape(-1)[safe] if kind in INPUT_KINDS else self.scale[layer, neurons][:, None]
            found["expected_contribution"] = (weight * scale).masked_fill(empty, 0.0)
        return found

    def table(self, neurons: list[tuple[int, int]], rankings: list[str] | None = None) -> Any:
        """A DataFrame of the lists of `neurons`: neuron, kind, rank_by, rank, other, virtual_weight, cosine,
        expected_contribution (empty without statistics)."""
        import pandas as pd

        rows = []
        for layer, neuron in neurons:
            for ranking in rankings or self.rankings:
                for kind, entries in self.of(layer, neuron, ranking).items():
                    if ranking == "expected_contribution" and kind not in INPUT_KINDS:
                        continue
                    rows += [{"neuron": NeuronId(layer, neuron).name, "kind": kind, "rank_by": ranking, "rank": e.rank,
                              "other": e.other, "virtual_weight": e.virtual_weight, "cosine": e.cosine,
                              "expected_contribution": e.expected_contribution} for e in entries]
        return pd.DataFrame(rows, columns=["neuron", "kind", "rank_by", "rank", "other", "virtual_weight", "cosine",
                                           "expected_contribution"])


def identity_meta(weights_fingerprint: str, settings_meta: dict[str, Any], top_k: int,
                  statistics_fingerprint: str | None) -> dict[str, Any]:
    """What connections.pt records it was made from and with (and `load_connections` checks)."""
    return {**made_from(weights=weights_fingerprint, statistics=statistics_fingerprint), "top_k": top_k,
            "processing": settings_meta["processing"], "refactor_glu": settings_meta["refactor_glu"]}


def load_connections(path: Path, expected: dict[str, Any]) -> Connections:
    """connections.pt, refused unless it was made from the weights, settings and statistics in `expected`
    (`identity_meta` of now; `top_k` None: any): one line naming the file, what changed and the remedy."""
    return checked_connections(path, read_connections(path), expected)


def read_connections(path: Path) -> dict[str, Any]:
    """The contents of a connections.pt, unchecked (`checked_connections` checks them)."""
    return load_artifact(path, kind=CONNECTIONS_KIND, required=("lists", "norms"), remedy=CONNECTIONS_REMEDY)


def checked_connections(path: Path, data: dict[str, Any], expected: dict[str, Any]) -> Connections:
    """The lists of `data` (read from `path`), refused unless made as `expected` says (see `load_connections`)."""
    meta = data["meta"]
    check_provenance(path, meta, made_from(weights=expected["weights_fingerprint"]), CONNECTIONS_REMEDY,
                     made="holds the connections of")
    settings = {key: expected[key] for key in ("processing", "refactor_glu", "top_k")
                if not (key == "top_k" and expected[key] is None)}  # top_k None: any
    check_provenance(path, meta, settings, CONNECTIONS_REMEDY, made="holds connections made with")
    if meta.get("statistics_fingerprint") != expected["statistics_fingerprint"]:
        if expected["statistics_fingerprint"] is None or meta.get("statistics_fingerprint") is None:
            had = "with" if meta.get("statistics_fingerprint") else "without"
            raise UserError(f"{path}: holds connections made {had} statistics (expected contributions), unlike this "
                            f"run; {CONNECTIONS_REMEDY}")
        check_provenance(path, meta, made_from(statistics=expected["statistics_fingerprint"]), CONNECTIONS_REMEDY)
    return Connections(data)


def connections_for_views(path: Path, weights_fingerprint: str, settings_meta: dict[str, Any],
                          statistics_fingerprint: str | None) -> Connections:
    """The connections that pages and viewers show: made from these weights and settings, with any top_k, and with
    statistics only if with these (`statistics_fingerprint`, the statistics of the pages); refused otherwise."""
    data = read_connections(path)
    made_with = data["meta"].get("statistics_fingerprint")
    expected = identity_meta(weights_fingerprint, settings_meta, None, None if made_with is None else statistics_fingerprint)
    return checked_connections(path, data, expected)
