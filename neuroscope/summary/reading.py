"""A published neuron summary (`schema`) read into this project's statistics (`b_import_summary.py`).

Two kinds of summary:
- the authors' (GLUScope's columns only): the per-case frequencies give the sign-combination frequencies and the
  gate-open frequency, the per-case means of a their frequency-weighted sum the mean activation, and the per-case
  top lists of a the sign-combination lists; the max (min) list is the merge of the lists of the two cases where
  a > 0 (a < 0). What the summary does not hold is marked missing (`MISSING_FROM_PUBLISHED`): the examples' token
  positions (`UNKNOWN_POSITION`; recomputation finds them again, `neuroscope.recompute.locate`), the histogram, the
  typical examples and the count of non-finite tokens. Its lists rank documents (each by its most extreme token in
  the case), not tokens: a document appears at most once per list.
- this project's own export (its `EXTRA_PREFIX` columns and metadata present): every tensor of the statistics, read
  back exactly (`exported_statistics`): the same numbers, the same statistics fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gated_core.errors import UserError
from gated_core.neurons import NeuronId
from neuroscope.activation_pass.activations import FIXED_POINT_BITS
from neuroscope.activation_pass.store import STATS_KEYS, SUMMARY_KEYS, expected_shape
from neuroscope.summary.schema import (
    ACTIVATION,
    CASES,
    DESCRIPTION_KEY,
    META_FILE,
    NEGATIVE_CASES,
    POSITIVE_CASES,
    extra_column,
    freq_column,
    list_columns,
    mean_column,
    published_columns,
)

UNKNOWN_POSITION = -1  # an example's position where its document is known (>= 0) but the summary has no position
MISSING_FROM_PUBLISHED = ("the examples' token positions (found again by recomputation, with the model's weights)",
                          "the activation histogram", "the typical examples", "the count of non-finite tokens")
FREQUENCY_SLACK = 1e-6  # how far the four frequencies' sum may exceed 1 (rounding of the published float32 values)


@dataclass(frozen=True)
class SummaryTable:
    """A summary read into numpy: `columns` by name (a number per neuron [row], a list per neuron [row k]), its rows
    one neuron each (row = layer * d_mlp + neuron), and the run metadata of this project's export (None: none)."""

    path: str
    columns: dict[str, np.ndarray]
    exported_meta: dict[str, Any] | None

    @property
    def rows(self) -> int:
        return len(self.columns["layer"])


def open_summary(path: str, split: str = "train") -> SummaryTable:
    """Read a summary (`open_rows`' forms), refused in one line where a published column is missing or a cell empty."""
    from neuroscope.data.tokenized import open_rows

    rows = open_rows(path, split, "neuron summary")
    missing = [name for name in published_columns() if name not in rows.column_names]
    if missing:
        raise UserError(f"{path}: not a neuron summary in the published form: {len(missing)} columns missing "
                        f"({', '.join(missing[:4])}{', …' if len(missing) > 4 else ''})")
    table = rows.with_format("arrow")[:]
    columns = {name: column_array(table.column(name), f"{path}: column {name}") for name in table.column_names
               if name in published_columns() or name.startswith(extra_column(""))}
    return SummaryTable(str(path), columns, exported_meta(rows.info.description, Path(path)))


def column_array(column: Any, label: str) -> np.ndarray:
    """A column of numbers [row], or of lists of one length [row k] (nested lists flattened per row), as numpy."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        raise UserError(f"{label}: {column.null_count} empty cells")
    flat = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    while pa.types.is_list(flat.type) or pa.types.is_large_list(flat.type) or pa.types.is_fixed_size_list(flat.type):
        lengths = pc.list_value_length(flat).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise UserError(f"{label}: lists of different lengths ({lengths.min()} to {lengths.max()})")
        flat = pc.list_flatten(flat)
    values = flat.to_numpy(zero_copy_only=False)
    return values.reshape(len(column), -1) if len(values) != len(column) else values


def exported_meta(description: str | None, path: Path) -> dict[str, Any] | None:
    """The statistics metadata of this project's export (None: none): in the dataset's description (a `save_to_disk`
    folder), else in META_FILE beside its parquet files (parquet keeps no description)."""
    try:
        meta = json.loads(description or "{}")
    except ValueError:
        meta = {}
    sidecar = (path if path.is_dir() else path.parent) / META_FILE
    if not (isinstance(meta, dict) and DESCRIPTION_KEY in meta) and sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{sidecar}: not the metadata of an export ({exc})") from exc
    meta = meta.get(DESCRIPTION_KEY) if isinstance(meta, dict) else None
    if meta is not None and not isinstance(meta, dict):
        raise UserError(f"{path}: its {DESCRIPTION_KEY!r} is not the metadata of statistics")
    return meta


def check_layout(table: SummaryTable, n_layers: int, d_mlp: int, model: str) -> None:
    """Refuse a summary whose rows are not this model's neurons, row = layer * d_mlp + neuron."""
    if table.rows != n_layers * d_mlp:
        raise UserError(f"{table.path}: a summary of {table.rows:,} neurons; {model} has {n_layers} layers × {d_mlp:,} "
                        f"neurons = {n_layers * d_mlp:,}: a summary of another model")
    layers, neurons = np.divmod(np.arange(table.rows), d_mlp)
    wrong = np.flatnonzero((table.columns["layer"] != layers) | (table.columns["neuron"] != neurons))
    if len(wrong):
        row = int(wrong[0])
        found = NeuronId(int(table.columns["layer"][row]), int(table.columns["neuron"][row]))
        raise UserError(f"{table.path}: row {row} is neuron {found}, not {NeuronId(int(layers[row]), int(neurons[row]))} "
                        "(rows must be layer * d_mlp + neuron, in order)")


def check_documents(table: SummaryTable, documents: int, dataset: str) -> int:
    """Refuse example rows outside the text dataset; returns the lists' length k."""
    lengths = set()
    for case in CASES:
        values, rows = (table.columns[name] for name in list_columns(case, ACTIVATION))
        lengths.add(values.shape[-1] if values.ndim == 2 else 0)
        used = rows[values != 0]
        if used.size and (used.min() < 0 or used.max() >= documents):
            raise UserError(f"{table.path}: examples of dataset rows up to {used.max():,}; {dataset} has {documents:,} "
                            "documents: a summary of another text dataset")
    if len(lengths) != 1 or 0 in lengths:
        raise UserError(f"{table.path}: the top lists of a have lengths {sorted(lengths)}, not one length")
    return lengths.pop()


def case_frequencies(table: SummaryTable, n_layers: int, d_mlp: int) -> np.ndarray:
    """[layer neuron case] float64, checked: each within [0, 1], their sum at most 1."""
    freqs = np.stack([table.columns[freq_column(case)] for case in CASES], axis=-1).astype(np.float64)
    if not np.isfinite(freqs).all() or freqs.min() < 0 or (freqs.sum(axis=-1) > 1 + FREQUENCY_SLACK).any():
        raise UserError(f"{table.path}: case frequencies outside [0, 1] or summing to more than 1: not frequencies")
    return freqs.reshape(n_layers, d_mlp, len(CASES))


def merged_list(values: np.ndarray, rows: np.ndarray, cases: tuple[int, ...], k: int, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """The k largest (`descending`) or smallest values of the given cases' lists [row case k] together, ties by the
    lower document; empty slots: -inf (+inf) and document -1."""
    picked_values = values[:, cases].reshape(len(values), -1)
    picked_rows = rows[:, cases].reshape(len(rows), -1)
    empty = picked_rows < 0
    keys = np.where(empty, np.inf, -picked_values if descending else picked_values)
    order = np.lexsort((np.where(empty, np.iinfo(np.int64).max, picked_rows), keys), axis=-1)[:, :k]
    out_values = np.take_along_axis(np.where(empty, -np.inf if descending else np.inf, picked_values), order, -1)
    return out_values, np.take_along_axis(picked_rows, order, -1)


def case_lists(table: SummaryTable) -> tuple[np.ndarray, np.ndarray]:
    """The per-case top lists of a: signed values and documents [row case k], float32 / int64; a padding slot (value
    0, or NaN) is empty: value 0, document -1."""
    values = np.stack([table.columns[list_columns(case, ACTIVATION)[0]] for case in CASES], axis=1).astype(np.float32)
    rows = np.stack([table.columns[list_columns(case, ACTIVATION)[1]] for case in CASES], axis=1).astype(np.int64)
    empty = (values == 0) | ~np.isfinite(values)
    return np.where(empty, 0, values), np.where(empty, -1, rows)


def published_statistics(table: SummaryTable, n_layers: int, d_mlp: int, k: int, tokens: int) -> dict[str, torch.Tensor]:
    """The statistics tensors (a statistics file's keys, `STATS_KEYS` and `SUMMARY_KEYS`) that the authors' columns
    give, for a text dataset of `tokens` tokens; the histogram, typical examples and non-finite count are left out."""
    freqs = case_frequencies(table, n_layers, d_mlp)
    means = np.stack([table.columns[mean_column(case, ACTIVATION)] for case in CASES], axis=-1).astype(np.float64)
    mean = np.where(freqs > 0, freqs * np.nan_to_num(means.reshape(freqs.shape)), 0).sum(axis=-1)
    values, rows = case_lists(table)
    shape = (n_layers, d_mlp, k)
    top_values, top_docs = merged_list(values, rows, POSITIVE_CASES, k, descending=True)
    bottom_values, bottom_docs = merged_list(values, rows, NEGATIVE_CASES, k, descending=False)
    combo = np.where(rows >= 0, np.abs(values), -np.inf).reshape(n_layers, d_mlp, len(CASES), k)
    counts = np.rint(freqs * tokens).astype(np.int64)
    tensors = {"top_values": top_values.reshape(shape), "top_docs": top_docs.reshape(shape),
               "bottom_values": bottom_values.reshape(shape), "bottom_docs": bottom_docs.reshape(shape),
               "combo_values": combo, "combo_docs": rows.reshape(n_layers, d_mlp, len(CASES), k),
               "post_sum": np.rint(mean * tokens * 2.0 ** FIXED_POINT_BITS).astype(np.int64),
               "gate_positive": counts[..., 0] + counts[..., 1], "lin_positive": counts[..., 0] + counts[..., 2],
               "both_positive": counts[..., 0], "n_tokens": np.array(tokens, dtype=np.int64),
               "mean": mean, "gate_open": freqs[..., 0] + freqs[..., 1], "sign_frequencies": freqs}
    for name in ("top", "bottom", "combo"):
        docs = tensors[f"{name}_docs"]
        tensors[f"{name}_positions"] = np.where(docs >= 0, UNKNOWN_POSITION, -1).astype(np.int64)
    return {name: torch.from_numpy(np.array(array)) for name, array in tensors.items()}


def exported_statistics(table: SummaryTable, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every statistics tensor of this project's export, reshaped by its metadata (`expected_shape`)."""
    tensors = {}
    for name in (*STATS_KEYS, *SUMMARY_KEYS):
        if name == "n_tokens":
            tensors[name] = torch.tensor(int(meta["n_tokens"]), dtype=torch.long)
            continue
        column = extra_column(name)
        if column not in table.columns:
            raise UserError(f"{table.path}: this project's column {column} is missing: the export is incomplete")
        shape = expected_shape(name, meta) if name in STATS_KEYS else \
            (meta["n_layers"], meta["d_mlp"], *(() if name != "sign_frequencies" else (len(CASES),)))
        array = table.columns[column]
        if array.size != int(np.prod(shape)):
            raise UserError(f"{table.path}: column {column} holds {array.size} numbers, not the {int(np.prod(shape))} "
                            "its metadata gives")
        tensors[name] = torch.from_numpy(np.array(array).reshape(shape))
    return tensors
