"""Section 6 / Appendix E for one model: roles, contingency table, case studies, token tables.

`casestudies.py` calls these step by step; every result lands in the model's results
folder (`roles.pt`, `contingency.csv/.md`, `case_studies.csv/.txt`, `tokens/<layer>.<neuron>.csv/.md`).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gated_core.artifacts import (
    PROJECT_TAG,
    atomic_write_text,
    check_provenance,
    find_artifact,
    load_artifact,
    made_from,
    package_versions,
    save_artifact,
    write_table,
)
from gated_core.errors import UserError
from gated_core.models.glu import refactor_glu
from gated_core.models.loading import load_bridge, load_tokenizer
from gated_core.models.readers import WeightReader, open_weights
from gated_core.neurons import NeuronId
from gated_core.results_layout import TOKENS_FOLDER
from wcos_casestudies import roles as R
from wcos_casestudies.constants import CLASS_NAMES, DEFAULT_N_ENTROPY
from wcos_casestudies.results import ModelResults

ROLES_KIND = "roles"  # meta["kind"] of roles.pt
ROLES_REMEDY = "move it away, or recompute it with casestudies.py --overwrite"


@dataclass
class RoleOptions:
    """The knobs of Section 6 / Appendix E (None: the scaled paper default)."""

    n_partition: int | None = None
    n_entropy: int = DEFAULT_N_ENTROPY
    null_space_dim: int | None = None
    attention: bool = True
    min_kurtosis: float | None = None  # floor of the prediction/suppression threshold (None: the paper's rule alone)


@dataclass
class RoleResults:
    """Everything Appendix E needs: per-neuron statistics, role masks and the thresholds used."""

    moments: dict[str, torch.Tensor]
    roles: dict[str, torch.Tensor]  # role -> [layer neuron] bool
    entropy_scores: torch.Tensor  # [neuron] of the last layer
    attention_max: torch.Tensor | None  # [layer neuron] max |cos| with next layer's BOS query directions
    info: dict[str, Any] = field(default_factory=dict)


def check_inputs(source, options: RoleOptions) -> None:
    """Refuse, before any work, a model without gates and role sizes larger than the model."""
    from gated_core.models.arch import read_arch

    arch = read_arch(source)
    arch.require_gated(source.name, "prediction and suppression neurons need gatelin")
    total = arch.n_layers * arch.d_mlp
    if options.n_partition is not None and not 0 < options.n_partition <= total:
        raise UserError(f"--n_partition {options.n_partition}: must be between 1 and the model's {total} neurons")
    if not 0 < options.n_entropy <= arch.d_mlp:
        raise UserError(f"--n_entropy {options.n_entropy}: must be between 1 and the last layer's {arch.d_mlp} neurons")
    if options.null_space_dim is not None and not 0 < options.null_space_dim < arch.d_model:
        raise UserError(f"--null_space_dim {options.null_space_dim}: must be between 1 and d_model - 1 = {arch.d_model - 1}")


def _reader_for(results: ModelResults) -> WeightReader:
    return open_weights(results.source, processing=results.settings.processing, loader=results.loader,
                        device=results.device)


def _out_layers(reader: WeightReader, refactor: bool):
    for layer in reader.layers():
        yield (refactor_glu(layer) if refactor else layer).out


@dataclass(frozen=True)
class StoredRoles:
    """What other scripts use of roles.pt (`read_roles`): the functional roles' masks and the moments of
    cos(w_out, W_U) of every neuron."""

    roles: dict[str, torch.Tensor]  # role (wcos_casestudies.roles.ROLE_NAMES) -> [layer neuron] bool; empty: none stored
    moments: dict[str, torch.Tensor]  # "mean", "variance", "skew", "kurtosis" -> [layer neuron]; empty: none stored


def read_roles(results: ModelResults) -> StoredRoles | None:
    """The roles and moments in roles.pt for this model and these weights, checked (`stored_roles`), or None where
    casestudies.py has not run: how every other module reads roles.pt."""
    stored = stored_roles(results)
    if stored is None:
        return None
    return StoredRoles({name: mask.bool() for name, mask in stored.get("roles", {}).items()}, dict(stored.get("moments", {})))


def stored_roles(results: ModelResults) -> dict[str, Any] | None:
    """What casestudies.py keeps in roles.pt for this model and these weights, checked (kind, model, weights
    fingerprint, the masks' shapes), or None where it has not run: the one reader of roles.pt (its whole contents,
    for casestudies.py's cache; other modules read `read_roles`)."""
    path = find_artifact(results.folder, "roles")
    if path is None:
        return None
    stored = load_roles(path, results)
    shape = tuple(results.categories().shape)
    for name, mask in stored.get("roles", {}).items():
        if tuple(mask.shape) != shape:
            raise UserError(f"{path}: role {name} has shape {tuple(mask.shape)}, the model's neurons {shape}; {ROLES_REMEDY}")
    return stored


def load_roles(path: Path, results: ModelResults) -> dict[str, Any]:
    """The cached role statistics at `path`, refused when they come from another model or other weights."""
    stored = load_artifact(path, kind=ROLES_KIND, remedy=ROLES_REMEDY)
    meta = stored["meta"]
    if meta.get("model") != results.meta["model"]:
        raise UserError(f"{path}: roles of {meta.get('model')}, not {results.meta['model']}; {ROLES_REMEDY}")
    check_provenance(path, meta, made_from(weights=results.fingerprint), ROLES_REMEDY, made="holds the roles of")
    return stored


def _stored_roles(results: ModelResults, overwrite: bool) -> dict[str, Any]:
    """What roles.pt holds for this model and these weights (empty with `overwrite` or when there is none)."""
    return {} if overwrite else stored_roles(results) or {}


def _last_layer_entropy_scores(reader: WeightReader, w_u: torch.Tensor, k_null: int, refactor: bool) -> torch.Tensor:
    """Entropy score of every last-layer neuron: share of w_out in W_U's k smallest singular directions."""
    last = reader.layer(reader.arch.n_layers - 1)
    last = refactor_glu(last) if refactor else last
    return R.entropy_scores(last.out, R.unembed_null_space(w_u, k_null))


def _attention_masks(stored: dict[str, Any], results: ModelResults, gatelin: torch.Tensor,
                     n_layers: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Attention (de)activation masks [layer neuron] and each neuron's largest |cos| with a next-layer BOS query."""
    if "attention_scores" not in stored:
        stored["attention_scores"] = attention_score_table(results, n_layers)
    masks = {name: torch.zeros_like(gatelin, dtype=torch.bool) for name in ("attention_activation", "attention_deactivation")}
    attention_max = torch.zeros_like(gatelin, dtype=torch.float32)
    for layer, layer_scores in enumerate(stored["attention_scores"]):  # layers 0..L-2, [neuron head] each
        masks["attention_activation"][layer], masks["attention_deactivation"][layer] = R.attention_roles(layer_scores, gatelin[layer])
        attention_max[layer] = layer_scores.abs().max(dim=1).values
    return masks, attention_max


def compute_roles(results: ModelResults, options: RoleOptions, overwrite: bool = False) -> RoleResults:
    """Moments, partition / prediction / suppression / entropy / attention neurons (cached in roles.pt)."""
    gatelin = results.cosines()["gatelin"]
    if gatelin is None:
        raise UserError(f"{results.source.name} has no gate weights: prediction and suppression neurons need gatelin")
    n_layers, n_neurons = gatelin.shape
    stored = _stored_roles(results, overwrite)
    reader = _reader_for(results)
    w_u = reader.unembed()
    started = time.perf_counter()
    if "moments" not in stored:
        stored["moments"] = R.unembed_moments(_out_layers(reader, results.settings.refactor_glu), w_u, n_layers,
                                              device=results.device)
        stored["moments_seconds"] = round(time.perf_counter() - started, 2)
    moments = stored["moments"]

    n_partition = options.n_partition or R.default_n_partition(n_layers * n_neurons)
    if options.n_entropy > n_neurons:
        raise UserError(f"--n_entropy {options.n_entropy}: the last layer has only {n_neurons} neurons")
    partition = R.mask_of(R.top_neurons(moments["variance"], n_partition), gatelin.shape)
    prediction, suppression, kurtosis_threshold = R.prediction_suppression(moments, gatelin, partition, options.min_kurtosis)

    k_null = options.null_space_dim or R.default_null_space_dim(w_u.shape[0])
    stored["entropy_scores"] = _last_layer_entropy_scores(reader, w_u, k_null, results.settings.refactor_glu)
    entropy = torch.zeros_like(partition)
    entropy[-1, torch.topk(stored["entropy_scores"], options.n_entropy).indices] = True

    role_masks = {"partition": partition, "prediction": prediction, "suppression": suppression, "entropy": entropy}
    attention_max = None
    if options.attention:
        attention_masks, attention_max = _attention_masks(stored, results, gatelin, n_layers)
        role_masks.update(attention_masks)
    info = {"n_partition": n_partition, "kurtosis_threshold": kurtosis_threshold,
            "kurtosis_rule": float(moments["kurtosis"][partition].max()), "min_kurtosis": options.min_kurtosis,
            "kurtosis_warning": R.selectivity_warning(prediction | suppression, kurtosis_threshold),
            "null_space_dim": k_null, "n_entropy": options.n_entropy, "moments_seconds": stored.get("moments_seconds"),
            "vocab": int(w_u.shape[1])}
    stored["meta"] = {"project": PROJECT_TAG, "kind": ROLES_KIND, "model": results.meta["model"], **results.settings.meta(),
                      **made_from(weights=results.fingerprint),
                      **{key: info[key] for key in ("kurtosis_threshold", "kurtosis_rule", "min_kurtosis", "null_space_dim")},
                      "versions": package_versions()}
    save_artifact(stored, path=results.folder / f"roles.{results.fmt}")
    return RoleResults(moments=moments, roles=role_masks, entropy_scores=stored["entropy_scores"],
                       attention_max=attention_max, info=info)


def attention_score_table(results: ModelResults, n_layers: int) -> list[torch.Tensor]:
    """For layers 0..L-2: cos(w_out, BOS query direction of each head of the next layer), [neuron head] each.

    Needs the whole model in TransformerLens (to run it on BOS).
    """
    bridge = load_bridge(results.source, processing=results.settings.processing, device=results.device)
    directions = R.bos_query_directions(bridge)
    reader = _reader_for(results)
    del bridge
    table = []
    for layer in range(n_layers - 1):
        weights = reader.layer(layer)
        if results.settings.refactor_glu:
            weights = refactor_glu(weights)
        table.append(R.attention_scores(weights.out, directions[layer + 1]))
    return table


def write_contingency(role_results: RoleResults, categories: torch.Tensor, results: ModelResults) -> pd.DataFrame:
    """Roles x 11 classes as CSV and Markdown, and in roles.pt with the role masks."""
    table = R.contingency(role_results.roles, categories)
    write_table(table, results.folder / "contingency")
    path = results.folder / f"roles.{results.fmt}"
    stored = load_roles(path, results)
    stored["roles"] = role_results.roles
    stored["contingency"] = {"roles": list(table["role"]), "classes": list(CLASS_NAMES),
                             "counts": torch.tensor(table[list(CLASS_NAMES)].to_numpy())}
    save_artifact(stored, path)
    return table


def entropy_table(scores: torch.Tensor, layer: int, chosen: torch.Tensor) -> pd.DataFrame:
    """Every last-layer neuron's entropy score, highest first, with its rank and whether it is an entropy neuron
    (`chosen`: [neuron] bool)."""
    order = torch.argsort(scores, descending=True, stable=True)
    return pd.DataFrame({"neuron": [NeuronId(layer, int(i)).name for i in order], "layer": layer, "index": order.tolist(),
                         "score": [round(float(scores[i]), 6) for i in order], "rank": range(1, len(order) + 1),
                         "chosen": chosen[order].tolist()})


def write_entropy_scores(role_results: RoleResults, results: ModelResults) -> list[Path]:
    """`entropy_scores.csv` / `.md` (every last-layer neuron) and their box plot `entropy_scores.pdf` / `.png`."""
    from wcos_casestudies.role_plots import plot_entropy_scores

    info = role_results.info
    layer = role_results.moments["kurtosis"].shape[0] - 1
    table = entropy_table(role_results.entropy_scores, layer, role_results.roles["entropy"][-1])
    write_table(table, results.folder / "entropy_scores",
                title=f"entropy scores of layer {layer} (null space of W_U: {info['null_space_dim']} directions)")
    return plot_entropy_scores(role_results.entropy_scores, layer, info["n_entropy"], info["null_space_dim"],
                               results.folder / "entropy_scores", results.caption)


CASE_STUDY_COLUMNS = ("layer", "neuron", "io_class", "kurtosis", "reason")  # of case_studies.csv
CASE_STUDIES_TABLE = "case_studies.csv"  # the chosen neurons, a `CaseStudy` a row (`read_case_studies`)
CASE_STUDIES_NAMES = "case_studies.txt"  # their LAYER.NEURON names, for --neurons_from


def write_case_studies(chosen: list[R.CaseStudy], folder: Path) -> Path:
    """`case_studies.csv` (where, class, kurtosis, why; its header also when no neuron was chosen) and
    `case_studies.txt` (names for d_recompute_vis.py --neurons)."""
    frame = pd.DataFrame([asdict(c) for c in chosen], columns=list(CASE_STUDY_COLUMNS))
    atomic_write_text(folder / CASE_STUDIES_TABLE, frame.to_csv(index=False))
    path = folder / CASE_STUDIES_NAMES
    atomic_write_text(path, " ".join(c.name for c in chosen) + "\n")
    return path


def read_case_studies(folder: Path) -> list[R.CaseStudy]:
    """The case-study neurons that `write_case_studies` wrote into `folder` (none where casestudies.py has not run)."""
    path = Path(folder) / CASE_STUDIES_TABLE
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [R.CaseStudy(reason=row["reason"], layer=int(row["layer"]), neuron=int(row["neuron"]),
                        io_class=row.get("io_class") or "", kurtosis=float(row.get("kurtosis") or math.nan))
            for row in rows]  # io_class and kurtosis: empty in a file of an older casestudies.py


def token_table(reader: WeightReader, w_u: torch.Tensor, tokenizer: Any, layer: int, neuron: int, k: int,
                refactor: bool = False) -> pd.DataFrame:
    """Top-k tokens by dot product with W_U [d_model vocab] for ±w_out, ±w_in, ±w_gate of one neuron (columns)."""
    weights = reader.layer(layer)
    if refactor:
        weights = refactor_glu(weights)
    columns = {}
    for label, vector in (("w_out", weights.out[neuron]), ("w_in", weights.lin[neuron]), ("w_gate", weights.gate[neuron])):
        for sign, prefix in ((1.0, "+"), (-1.0, "-")):
            indices, _ = R.top_tokens(sign * vector, w_u, k)
            columns[prefix + label] = [repr(tokenizer.decode([int(i)])) for i in indices]
    return pd.DataFrame(columns)


def write_token_tables(results: ModelResults, chosen: list[R.CaseStudy], k: int) -> dict[str, pd.DataFrame]:
    """One token table per chosen neuron under tokens/ (CSV and Markdown)."""
    tokenizer = load_tokenizer(results.source)
    reader = _reader_for(results)
    w_u = reader.unembed()
    tables = {}
    for case in chosen:
        table = token_table(reader, w_u, tokenizer, case.layer, case.neuron, k, refactor=results.settings.refactor_glu)
        write_table(table, results.folder / TOKENS_FOLDER / case.name, title=f"{case.name} ({case.io_class}; {case.reason})")
        tables[case.name] = table
    return tables


def neuron_summary(results: ModelResults, layer: int, neuron: int) -> dict[str, Any]:
    """The three cosines and the class of one neuron."""
    cosines = results.cosines()
    code = int(results.categories()[layer, neuron])
    return {"neuron": NeuronId(layer, neuron).name, **{k: round(float(v[layer, neuron]), 4) for k, v in cosines.items()},
            "class": CLASS_NAMES[code]}
