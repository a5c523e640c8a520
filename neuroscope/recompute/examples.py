"""Recompute chosen neurons' gate (g), linear (u) and activation (a) values on their selected
documents: only those documents run, in batches, through the whole model (the final norm's input gives each
example's direct effect on its next token, `neuroscope.recompute.next_token`). The recomputed extreme value at the
stored position must equal the stored one, or the run fails loudly (`RecomputeMismatch`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gated_core.cli import check_regular_file
from gated_core.errors import UserError
from gated_core.fingerprint import short, tokenizer_fingerprint
from gated_core.models.arch import read_arch
from gated_core.models.loading import load_hf_model
from gated_core.models.sources import ModelSource
from gated_core.neurons import NeuronId
from neuroscope.activation_pass.activations import COMBINATION_SIGNS, SIGN_COMBINATIONS
from neuroscope.activation_pass.store import Statistics, StatisticsMeta
from neuroscope.core.batches import padded_batches, subset_plan
from neuroscope.core.histogram import typical_bands
from neuroscope.core.hooks import final_norm_input, mlp_hooks, run_model
from neuroscope.core.ranked import pack_tokens, token_hash
from neuroscope.data.dataset_store import check_vocabulary, load_tokenized
from neuroscope.recompute.next_token import Readout, direct_effects, next_token_ranks, output_weights

Neuron = tuple[int, int]  # (layer, neuron)
PeakEffects = dict[tuple[Neuron, int, int], tuple[int, float | None]]  # (neuron, doc, position) -> (next token, direct effect)
TYPICAL_KINDS = tuple(f"typical {band}" for band in range(typical_bands()))  # a band of |a| each (`typical_lists`)
LIST_KINDS = ("max", "min", *SIGN_COMBINATIONS, *TYPICAL_KINDS)  # the example lists of a neuron, as pages show them


class RecomputeMismatch(RuntimeError):
    """A recomputed activation differs from the stored one: the statistics do not belong to this model/data."""


@dataclass
class Example:
    """One selected document of a neuron, with the neuron's values at every token."""

    doc: int
    position: int  # of the extreme value
    stored: float  # a at the extreme token, as the statistics keep it
    kind: str  # one of LIST_KINDS
    token_ids: list[int]
    act: list[float]
    gate: list[float]
    lin: list[float]
    next_token: int = -1  # the token after the extreme one (-1: none); these four: see neuroscope.recompute.next_token
    direct_effect: float | None = None  # on the logit of next_token (None: no next token)
    next_rank: int = 0  # of next_token in w_out · W_U (1 = most promoted; 0: none)
    ablation_effect: float | None = None  # next-token loss change with only this neuron zeroed there (--ablation_effect)




def stored_lists(stats: Statistics, layer: int) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(kind, signed values, documents, positions), each [neuron k], of every example list the statistics have for
    the neurons of one layer (files of the first version have no sign-combination lists, those of the first two no
    typical examples)."""
    lists = [("max", stats.top_values[layer], stats.top_docs[layer], stats.top_positions[layer]),
             ("min", stats.bottom_values[layer], stats.bottom_docs[layer], stats.bottom_positions[layer])]
    if stats.combo_values is not None:
        for index, (kind, sign) in enumerate(zip(SIGN_COMBINATIONS, COMBINATION_SIGNS)):
            lists.append((kind, sign * stats.combo_values[layer, :, index], stats.combo_docs[layer, :, index],
                          stats.combo_positions[layer, :, index]))
    if stats.typical_docs is not None:
        lists.extend(zip(TYPICAL_KINDS, *typical_lists(stats, layer)))
    return lists


def typical_lists(stats: Statistics, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The typical examples of each band of |a| of the neurons of one layer, whatever their sign combination:
    (values, documents, positions), each [band neuron k], k = typical_per_band, sorted by `ranked.token_hash` (-1:
    empty slot).

    The pass keeps, per sign combination and band, the k tokens of smallest hash; the k smallest of their union
    are the k smallest of the whole band, so each band's list is again a uniform sample of its tokens."""
    k = stats.typical_per_band

    def by_band(tensor: torch.Tensor) -> torch.Tensor:  # [neuron combination band k] -> [neuron band combination*k]
        return tensor[layer].transpose(1, 2).flatten(2)

    docs, positions, values = (by_band(t) for t in (stats.typical_docs, stats.typical_positions, stats.typical_values))
    order = token_hash(pack_tokens(docs, positions)).argsort(dim=-1)[..., :k]

    def picked(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.gather(-1, order).transpose(0, 1)

    return picked(values), picked(docs), picked(positions)


def selected_documents(stats: Statistics, layer: int, neuron: int) -> list[tuple[str, int, int, float]]:
    """(kind, document, position, stored value) of every example of a neuron (max, min, sign combinations, typical)."""
    rows = []
    for kind, values, docs, positions in stored_lists(stats, layer):
        for doc, pos, value in zip(docs[neuron].tolist(), positions[neuron].tolist(), values[neuron].tolist()):
            if doc >= 0:
                rows.append((kind, doc, pos, value))
    return rows


def recompute(model: Any, dataset: Any, requests: dict[Neuron, dict[int, list[int]]], batch_size: int, pad_id: int,
              device: torch.device) -> tuple[dict[Neuron, dict[int, tuple[list[float], list[float], list[float]]]], PeakEffects]:
    """For each neuron and each of its documents (`requests`: neuron -> document -> its examples' extreme positions):
    (act, gate, lin) at every real token, and the next token and direct effect of each example.

    Every needed document runs once, batched by length.
    """
    by_doc: dict[int, list[Neuron]] = {}
    for key, docs in requests.items():
        for doc in docs:
            by_doc.setdefault(doc, []).append(key)
    docs = sorted(by_doc)
    lengths = [int(x) for x in dataset.select(docs)["length"]] if "length" in dataset.column_names else \
        [sum(m) for m in dataset.select(docs)["attention_mask"]]
    results: dict[Neuron, dict[int, tuple[list[float], list[float], list[float]]]] = {key: {} for key in requests}
    effects: PeakEffects = {}
    readout = Readout.of(model)
    for batch in padded_batches(dataset, subset_plan(docs, lengths, batch_size), pad_id, device):
        wanted = sorted({key for doc in batch.docs for key in by_doc[doc]})
        captured, residual = capture_neurons(model, batch.input_ids, batch.attention_mask, wanted)
        for row, doc in enumerate(batch.docs):
            length = int(batch.attention_mask[row].sum())
            for key in by_doc[doc]:
                act, gate, lin = (t[row, :length].tolist() for t in captured[key])
                results[key][doc] = (act, gate, lin)
        peaks = [(key, doc, row, position) for row, doc in enumerate(batch.docs) for key in by_doc[doc]
                 for position in requests[key][doc]]
        effects.update(peak_effects(model, readout, batch, captured, residual, peaks))
    return results, effects


def peak_effects(model: Any, readout: Readout, batch: Any, captured: dict[Neuron, tuple[torch.Tensor, ...]],
                 residual: torch.Tensor, peaks: list[tuple[Neuron, int, int, int]]) -> PeakEffects:
    """The next token and direct effect of examples (neuron, document, batch row, position) of one batch, layer by layer."""
    effects: PeakEffects = {}
    for layer in sorted({key[0] for key, _, _, _ in peaks}):
        here = [peak for peak in peaks if peak[0][0] == layer]
        rows, positions = (torch.tensor([peak[i] for peak in here]) for i in (2, 3))
        a = torch.stack([captured[key][0][row, position] for key, _, row, position in here])
        w_out = output_weights(model, layer, torch.tensor([key[1] for key, _, _, _ in here]))
        tokens, values = direct_effects(readout, residual, batch.input_ids, batch.attention_mask, rows, positions, a, w_out)
        for (key, doc, _, position), token, value in zip(here, tokens.tolist(), values.tolist()):
            effects[(key, doc, position)] = (token, None if token < 0 else value)
    return effects


def capture_neurons(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    wanted: list[Neuron]) -> tuple[dict[Neuron, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], torch.Tensor]:
    """One forward pass: (a, g, u) [batch pos] of each wanted neuron, and the final norm's input [batch pos d_model]."""
    columns: dict[int, list[int]] = {}
    for layer, neuron in wanted:
        columns.setdefault(layer, []).append(neuron)
    captured: dict[Neuron, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def capture(layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        index = torch.tensor(columns[layer], device=a.device)
        values = [t.index_select(-1, index).float().cpu() for t in (a, g, u)]  # each [batch pos neuron]
        for column, neuron in enumerate(columns[layer]):
            captured[(layer, neuron)] = tuple(v[..., column] for v in values)

    with mlp_hooks(model, capture, sorted(columns)), final_norm_input(model) as residual:
        run_model(model, input_ids, attention_mask)
    return captured, residual["x"]


def tolerance(value: float, dtype: str) -> float:
    """How far a recomputed value may be from the stored one (different batches, same dtype)."""
    relative = 1e-4 if dtype == "float32" else 3e-2
    return relative * abs(value) + (1e-5 if dtype == "float32" else 1e-2)


def recompute_examples(model: Any, dataset: Any, stats: Statistics, neurons: Sequence[Neuron], batch_size: int,
                       pad_id: int, device: torch.device) -> dict[Neuron, list[Example]]:
    """Every selected document of every neuron, recomputed and checked against the statistics, with each example's
    next token, direct effect and rank (`neuroscope.recompute.next_token`)."""
    selected = {key: selected_documents(stats, *key) for key in neurons}
    requests: dict[Neuron, dict[int, list[int]]] = {key: {} for key in selected}
    for key, rows in selected.items():
        for _, doc, position, _ in sorted(rows, key=lambda row: row[1]):
            requests[key].setdefault(doc, []).append(position)
    values, effects = recompute(model, dataset, requests, batch_size, pad_id, device)
    dtype = stats.meta.dtype
    readout = Readout.of(model)
    examples: dict[Neuron, list[Example]] = {}
    for key, rows in selected.items():
        examples[key] = []
        for kind, doc, position, stored in rows:
            act, gate, lin = values[key][doc]
            if position >= len(act) or abs(act[position] - stored) > tolerance(stored, dtype):
                got = act[position] if position < len(act) else "nothing (document too short)"
                raise RecomputeMismatch(
                    f"neuron {NeuronId(*key)}, document {doc}, position {position}: stored {kind} {stored:.6g}, "
                    f"recomputed {got}; the statistics were not made by this model on this dataset")
            token_ids = dataset[doc]["input_ids"][:len(act)]
            examples[key].append(Example(doc, position, stored, kind, token_ids, act, gate, lin, *effects[(key, doc, position)]))
        targets = np.array([e.next_token for e in examples[key]], dtype=np.int64)
        ranks = next_token_ranks(readout, model, key[0], np.full(len(targets), key[1], dtype=np.int64), targets)
        for example, rank in zip(examples[key], ranks.tolist()):
            example.next_rank = rank
    return examples


@dataclass
class Inputs:
    """What recomputation needs: model, tokenizer, dataset, statistics."""

    model: Any
    tokenizer: Any
    dataset: Any
    dataset_name: str
    stats: Statistics
    pad_id: int
    device: torch.device


def check_tokenizer(tokenizer: Any, stats_meta: StatisticsMeta, data_meta: dict[str, Any] | None, source: ModelSource) -> None:
    """Refuse a tokenizer other than the one the statistics were made with: by the tokenizer fingerprint they record,
    or (statistics of an older b_activations.py) the one their dataset records, given its metadata `data_meta`;
    with neither, a note. Called before the model loads."""
    recorded = stats_meta.tokenizer_fingerprint
    if recorded is None and data_meta is not None:
        check_vocabulary(data_meta, tokenizer, read_arch(source).vocab_size, source.argument)
    elif recorded is None:
        print("note: the statistics record no tokenizer fingerprint (made by an older b_activations.py): the tokens are "
              "decoded with the model's tokenizer unchecked", file=sys.stderr)
    elif recorded != (current := tokenizer_fingerprint(tokenizer)):
        raise UserError(f"the tokenizer of {source.argument} is another tokenizer than the one the statistics were made with "
                        f"(tokenizer fingerprint {short(current)}, statistics {short(recorded)}: other "
                        "tokens, ids or special tokens, or its tokenizer files changed since); pass the --model they were made "
                        "with, or make the dataset and the statistics again (a_dataset.py, b_activations.py)")


def checked_dataset(stats: Statistics, dataset_dir: Path | None, tokenizer: Any = None,
                    source: ModelSource | None = None) -> tuple[Any, Path]:
    """The dataset of the statistics (or `dataset_dir`) and its folder, refused when its documents or its
    tokens are not those the statistics were made on, or (given the model's `tokenizer` and `source`) when the
    tokenizer is not theirs (`check_tokenizer`)."""
    meta = stats.meta
    dataset_dir = dataset_dir if dataset_dir is not None else Path(meta.dataset)
    dataset, data_meta = load_tokenized(dataset_dir)
    if len(dataset) != meta.documents:
        raise UserError(f"{dataset_dir} has {len(dataset)} documents, the statistics were made on {meta.documents}")
    stored = meta.dataset_fingerprint
    if stored is not None and stored != data_meta["fingerprint"]:  # statistics of an older version carry none
        raise UserError(f"{dataset_dir}: its tokens are not those the statistics were made on (fingerprint "
                        f"{short(data_meta['fingerprint'])}, statistics {short(stored)}: rebuilt since, or another dataset); "
                        "pass the --dataset they were made on, or run b_activations.py again with --overwrite")
    if tokenizer is not None:
        check_tokenizer(tokenizer, meta, data_meta, source)
    return dataset, dataset_dir


def load_inputs(source: ModelSource, stats: Statistics, dataset_dir: Path | None, device: torch.device,
                dataset: Any = None, tokenizer: Any = None) -> Inputs:
    """The dataset of the statistics (or `dataset_dir`; `dataset` when it is loaded and checked already),
    checked against them, and the model in the statistics' dtype (with `tokenizer`, checked already, if given)."""
    if dataset is None:
        dataset, dataset_dir = checked_dataset(stats, dataset_dir)
    model, tokenizer = load_hf_model(source, dtype=getattr(torch, stats.meta.dtype), device=device, tokenizer=tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Inputs(model, tokenizer, dataset, Path(dataset_dir).name, stats, pad_id, device)


def requested_neurons(names: list[str], neurons_from: Path | None, source: ModelSource, whole_layers: bool = False) -> list[Neuron]:
    """The neurons named on the command line or in a file, checked and deduplicated: `LAYER.NEURON`,
    `LAYER.*` (every neuron of a layer) or `all`; with `whole_layers`, every neuron of their layers."""
    arch = read_arch(source)
    names = list(names)
    if neurons_from is not None:
        check_regular_file(neurons_from, "--neurons_from", "a text file of LAYER.NEURON names")
        try:
            names += neurons_from.read_bytes().decode("utf-8").split()
        except UnicodeDecodeError as exc:
            raise UserError(f"--neurons_from {neurons_from}: not a UTF-8 text file of LAYER.NEURON names") from exc
    if names == ["all"]:
        return [NeuronId(layer, neuron) for layer in range(arch.n_layers) for neuron in range(arch.d_mlp)]
    if not names:
        raise UserError("no neurons given; use --neurons LAYER.NEURON ... (or LAYER.*, or all) or --neurons_from FILE")
    chosen = set()
    for name in names:
        if name.endswith(".*"):
            layer, _ = NeuronId.parse(name[:-1] + "0", arch.n_layers, arch.d_mlp)
            chosen.update(NeuronId(layer, neuron) for neuron in range(arch.d_mlp))
        else:
            chosen.add(NeuronId.parse(name, arch.n_layers, arch.d_mlp))
    if whole_layers:
        chosen = {NeuronId(layer, neuron) for layer in {layer for layer, _ in chosen} for neuron in range(arch.d_mlp)}
    return sorted(chosen)


def neuron_folder(folder: Path, neuron: Neuron) -> Path:
    """`<neuroscope folder>/L<layer>/N<neuron>`: the page and the recomputed values of one neuron."""
    return Path(folder) / f"L{neuron[0]}" / f"N{neuron[1]}"
