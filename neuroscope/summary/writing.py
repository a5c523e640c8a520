"""This project's statistics written in the published summary's form (`b_export_summary.py`), `save_to_disk` and
parquet, with a dataset card.

The published columns hold what the statistics have: the case frequencies (`sign_frequencies`; this project's cases
split at g > 0 and u > 0, so exact zeros count as negative, where the published cases leave them out), and per case
the top lists of a (the sign-combination lists: tokens, so a document may appear more than once, where the published
lists name each document once; k = the statistics' k). What the activation pass does not compute is written as the
published summaries write a case that never occurs (`NOT_COMPUTED`): the per-case means (NaN) and the top lists of
u, g and act(g) (value 0, row 0). This project's columns (`EXTRA_PREFIX`) hold every tensor of the statistics, so
that `b_import_summary.py` reads them back exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gated_core.artifacts import remove_stale_folders, replace_folder, staging_folder
from gated_core.errors import UserError
from gated_core.locks import hold_lock
from neuroscope.activation_pass.activations import COMBINATION_SIGNS
from neuroscope.activation_pass.store import STATS_KEYS, SUMMARY_KEYS
from neuroscope.summary.schema import (
    ACTIVATION,
    CASES,
    DESCRIPTION_KEY,
    META_FILE,
    PUBLISHED_K,
    VALUES,
    extra_column,
    freq_column,
    list_columns,
    listed,
    mean_column,
    published_columns,
)

NOT_COMPUTED = ("the per-case means of a, u, g and act(g) (NaN)", "the top lists of u, g and act(g) (value 0, row 0)")
ROWS_PER_PARQUET_FILE = 50_000  # neurons per parquet file (the OLMo-7B summary: 8 files)
SAVED, PARQUET = "saved", "parquet"  # the export's two forms, folders of its folder


def summary_columns(data: dict[str, Any], n_layers: int, d_mlp: int,
                    complete: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The published columns and this project's of a statistics file's tensors (`data`), one row per neuron; with
    `complete` (`case_pass.CaseTotals.columns`), the published columns are all computed by their definition."""
    rows = n_layers * d_mlp
    columns: dict[str, np.ndarray] = {"layer": np.repeat(np.arange(n_layers), d_mlp),
                                      "neuron": np.tile(np.arange(d_mlp), n_layers)}
    columns.update(computed_columns(complete, rows) if complete is not None else statistics_columns(data, rows))
    columns = {name: columns[name] for name in published_columns()}
    for name in (name for name in (*STATS_KEYS, *SUMMARY_KEYS) if name != "n_tokens"):
        tensor = data[name].numpy()
        columns[extra_column(name)] = tensor.reshape(rows) if tensor.ndim == 2 else tensor.reshape(rows, -1)
    return columns


def statistics_columns(data: dict[str, Any], rows: int) -> dict[str, np.ndarray]:
    """The published columns that the statistics give (frequencies, the top lists of a); the others as a case that
    never occurs (`NOT_COMPUTED`)."""
    columns: dict[str, np.ndarray] = {}
    freqs = data["sign_frequencies"].reshape(rows, len(CASES)).numpy()
    magnitudes = data["combo_values"].reshape(rows, len(CASES), -1).numpy()
    docs = data["combo_docs"].reshape(rows, len(CASES), -1).numpy()
    for index, case in enumerate(CASES):
        columns[freq_column(case)] = freqs[:, index]
        for value in VALUES:
            columns[mean_column(case, value)] = np.full(rows, np.nan)
        empty = docs[:, index] < 0
        for value in (value for value in VALUES if listed(case, value)):
            values_column, rows_column = list_columns(case, value)
            if value == ACTIVATION:
                columns[values_column] = np.where(empty, 0, COMBINATION_SIGNS[index] * magnitudes[:, index]).astype(np.float32)
                columns[rows_column] = np.where(empty, 0, docs[:, index]).astype(np.int64)
            else:
                columns[values_column] = np.zeros(magnitudes[:, index].shape, dtype=np.float32)
                columns[rows_column] = np.zeros(docs[:, index].shape, dtype=np.int64)
    return columns


def computed_columns(complete: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """The published columns from the per-case pass's totals (`case_pass.CaseTotals.columns`)."""
    from neuroscope.summary.case_pass import LISTS

    columns: dict[str, np.ndarray] = {}
    freq, mean = complete["freq"].reshape(rows, len(CASES)), complete["mean"].reshape(rows, len(CASES), len(VALUES))
    for index, case in enumerate(CASES):
        columns[freq_column(case)] = freq[:, index]
        for value_index, value in enumerate(VALUES):
            columns[mean_column(case, value)] = mean[:, index, value_index]
    for slot, (case, value) in enumerate(LISTS):
        values_column, rows_column = list_columns(CASES[case], VALUES[value])
        columns[values_column] = complete["values"].reshape(rows, len(LISTS), -1)[:, slot].astype(np.float32)
        columns[rows_column] = complete["rows"].reshape(rows, len(LISTS), -1)[:, slot].astype(np.int64)
    return columns


def export_meta(data: dict[str, Any], complete: bool) -> dict[str, Any]:
    """What the export records of the statistics: their file's metadata, the token count, what it did not compute."""
    meta = {key: value for key, value in data["meta"].items() if key not in ("project", "kind")}
    return {**meta, "n_tokens": int(data["n_tokens"]), "not_computed": [] if complete else list(NOT_COMPUTED)}


def dataset_card(meta: dict[str, Any], rows: int) -> str:
    """The README.md of an export: what it is, its columns, what was not computed."""
    return "\n".join([
        f"# Neuron activation summary of {meta.get('model')}", "",
        f"{rows:,} neurons ({meta.get('n_layers')} layers × {meta.get('d_mlp')}), one row each (row = layer · d_mlp + neuron), "
        f"over {meta.get('tokens'):,} tokens of {Path(str(meta.get('dataset'))).name} ({meta.get('documents'):,} documents).",
        "Columns in the form of the authors' published summaries (GLUScope), per sign case of (gate, linear input)"
        + (", strict signs." if not meta["not_computed"] else
           " (here split at g > 0 and u > 0: exact zeros count as negative, where the published cases leave them out)."),
        *(["Every published column computed by its definition (b_export_summary.py --complete): top lists of the "
           f"{PUBLISHED_K} documents of largest |value| in each case."] if not meta["not_computed"] else
          [f"The top lists of a: the k = {meta.get('k')} tokens of largest |a| in each case (a document may appear more "
           "than once). Not computed by this project's activation pass, written as a case that never occurs:",
           *(f"- {item}" for item in meta["not_computed"])]), "",
        f"Columns starting `{extra_column('')}`: every tensor of this project's statistics, per neuron; the run's metadata "
        f"is in the dataset's description and in `{PARQUET}/{META_FILE}`.", ""])


def write_export(columns: dict[str, np.ndarray], meta: dict[str, Any], folder: Path, overwrite: bool) -> Path:
    """Write the export into `folder` (SAVED: `save_to_disk`, PARQUET: parquet files and META_FILE, README.md), made
    aside and moved in whole; a folder there is replaced only with `overwrite` and only when it is an export."""
    import datasets

    check_export_target(folder, overwrite)
    described = json.dumps({DESCRIPTION_KEY: meta})
    dataset = datasets.Dataset.from_dict(columns, info=datasets.DatasetInfo(description=described))
    with hold_lock(folder):
        remove_stale_folders(folder)  # what a killed export left beside it (an old export set aside goes back)
        staging = staging_folder(folder)
        try:
            write_forms(dataset, described, meta, staging)
            check_export_target(folder, overwrite)  # again: nothing of the user's came in meanwhile
            replace_folder(staging, folder)  # the old export, or the new one, whole at every moment
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    return folder


def write_forms(dataset: Any, described: str, meta: dict[str, Any], staging: Path) -> None:
    """The export's files into `staging`: SAVED, PARQUET (with META_FILE) and the dataset card."""
    dataset.save_to_disk(str(staging / SAVED))
    (staging / PARQUET).mkdir()
    files = max(1, -(-len(dataset) // ROWS_PER_PARQUET_FILE))
    for index in range(files):
        part = dataset.select(range(index * ROWS_PER_PARQUET_FILE, min(len(dataset), (index + 1) * ROWS_PER_PARQUET_FILE)))
        part.to_parquet(str(staging / PARQUET / f"train-{index:05d}-of-{files:05d}.parquet"))
    (staging / PARQUET / META_FILE).write_text(described, encoding="utf-8")
    (staging / "README.md").write_text(dataset_card(meta, len(dataset)), encoding="utf-8")


def check_export_target(folder: Path, overwrite: bool) -> None:
    """Refuse to write where something is, unless `overwrite` and it is an export this tool wrote."""
    if (folder.exists() or folder.is_symlink()) and not (overwrite and is_export(folder)):
        raise UserError(f"{folder} exists" + ("" if overwrite else "; pass --overwrite to replace it") +
                        ("" if is_export(folder) else " (and is no export of this tool: it is left alone)"))


def is_export(folder: Path) -> bool:
    """Whether `folder` is an export this tool wrote (its two forms and the metadata file, no link)."""
    return folder.is_dir() and not folder.is_symlink() and (folder / SAVED).is_dir() and \
        (folder / PARQUET / META_FILE).is_file()
