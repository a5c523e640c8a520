"""The work of `b_import_summary.py` and `b_export_summary.py`: every input checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gated_core.artifacts import made_from, package_versions
from gated_core.cli import check_output_location
from gated_core.errors import UserError
from gated_core.fingerprint import short
from gated_core.locks import hold_lock
from gated_core.models.arch import read_arch
from gated_core.models.loading import load_tokenizer
from gated_core.models.sources import resolve_model
from neuroscope.activation_pass.activations import STATISTICS_VERSION
from neuroscope.activation_pass.store import (
    IMPORTED_KEY,
    TENSORS_DIGEST,
    load_stats,
    save_statistics_file,
    stats_path,
    tensors_digest,
)
from neuroscope.data.dataset_store import check_vocabulary, is_dataset_folder, load_tokenized
from neuroscope.summary import reading, writing
from neuroscope.summary.schema import PUBLISHED_K


@dataclass(frozen=True)
class ImportRequest:
    """What b_import_summary.py asks for: a summary, the model and text dataset it is of, where the statistics go."""

    summary: str
    model: str
    datadir: Path
    dataset: str  # the text dataset inside datadir (a_dataset.py --tokenized of the published one)
    save_to: str
    dtype: str  # what the summary was computed in: recomputation runs the model so and allows its rounding
    split: str = "train"
    overwrite: bool = False
    full_hash: bool = False


def import_summary(request: ImportRequest) -> Path:
    """Read the summary, check it against the model and the dataset, and write the statistics; returns their path."""
    folder = request.datadir / request.save_to
    check_output_location(folder, "--save_to", inside=request.datadir)
    if is_dataset_folder(folder):
        raise UserError(f"--save_to {request.save_to}: {folder} is a tokenized dataset; write the statistics into a folder "
                        "of their own (another --save_to)")
    path = stats_path(folder)
    if path.exists() and not request.overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    source = resolve_model(request.model, full_hash=request.full_hash)
    arch = read_arch(source)
    dataset, data_meta = load_tokenized(request.datadir / request.dataset)
    tokenizer_print = check_vocabulary(data_meta, load_tokenizer(source), arch.vocab_size, source.argument)
    table = reading.open_summary(request.summary, request.split)
    reading.check_layout(table, arch.n_layers, arch.d_mlp, source.name)
    run = {"model": source.name, "provenance": source.provenance, "gguf": source.is_gguf, "model_path": str(source.path),
           **made_from(weights=source.weights_fingerprint, dataset=data_meta["fingerprint"], tokenizer=tokenizer_print),
           "dataset": str((request.datadir / request.dataset).resolve()), "documents": len(dataset), "tokens": data_meta["tokens"]}
    if table.exported_meta is not None:
        tensors, meta = exported(table, run)
    else:
        k = reading.check_documents(table, len(dataset), request.dataset)
        tensors = reading.published_statistics(table, arch.n_layers, arch.d_mlp, k, data_meta["tokens"])
        meta = {**run, "k": k, "batch_size": None, "dtype": request.dtype, "n_layers": arch.n_layers, "d_mlp": arch.d_mlp,
                "statistics_version": STATISTICS_VERSION, "examples_without_bos": False,
                "bos_id": data_meta.get("bos_token_id") if data_meta.get("add_bos_token", True) else None,
                "typical_per_band": 0, "versions": package_versions(),
                IMPORTED_KEY: {"summary": str(request.summary), "form": "published",
                               "missing": list(reading.MISSING_FROM_PUBLISHED)}}
    folder.mkdir(parents=True, exist_ok=True)
    with hold_lock(path):
        save_statistics_file(tensors, meta, path)
    return path


def exported(table: reading.SummaryTable, run: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The statistics of this project's export and their metadata, refused where they are not of `run`'s model and
    dataset or their columns are not those the metadata was written with."""
    meta = dict(table.exported_meta or {})
    for key, what in (("model", "model"), ("dataset_fingerprint", "text dataset (its tokens)")):
        if meta.get(key) != run[key]:
            raise UserError(f"{table.path}: an export of statistics of another {what} ({short(str(meta.get(key)))}, "
                            f"here {short(str(run[key]))})")
    tensors = reading.exported_statistics(table, meta)
    if meta.get(TENSORS_DIGEST) not in (None, tensors_digest(tensors)):
        raise UserError(f"{table.path}: its columns are not the statistics its metadata was written with (changed since, or "
                        "another export's metadata file)")
    kept = {key: value for key, value in meta.items() if key not in ("n_tokens", "not_computed", TENSORS_DIGEST)}
    return tensors, {**kept, "dataset": run["dataset"], IMPORTED_KEY: {"summary": table.path, "form": "this project's export"}}


@dataclass(frozen=True)
class ExportRequest:
    """What b_export_summary.py asks for: the statistics, where the export goes, and with `complete` the model run
    (its device and batches) that computes the published columns the statistics do not hold."""

    datadir: Path
    activations: str
    save_to: str
    overwrite: bool = False
    complete: bool = False
    model: str | None = None
    device: str = "auto"
    batch_size: int = 8
    checkpoint_every: int = 200
    full_hash: bool = False


def export_summary(request: ExportRequest) -> Path:
    """Write the statistics `activations` in the published form into DATADIR/SAVE_TO; returns that folder."""
    source_path = stats_path(request.datadir / request.activations)
    if not source_path.exists():
        raise UserError(f"{source_path}: no statistics; run b_activations.py --save_to {request.activations} first")
    target = request.datadir / request.save_to
    check_output_location(target, "--save_to", inside=request.datadir)
    writing.check_export_target(target, request.overwrite)
    _, meta, data = load_stats(source_path)
    complete = case_columns(request, meta) if request.complete else None
    columns = writing.summary_columns(data, meta["n_layers"], meta["d_mlp"], complete)
    folder = writing.write_export(columns, writing.export_meta(data, complete is not None), target, request.overwrite)
    checkpoint_path(request).unlink(missing_ok=True)
    return folder


def checkpoint_path(request: ExportRequest) -> Path:
    return request.datadir / f"{request.save_to}.case_pass.partial.pt"


def case_columns(request: ExportRequest, meta: dict[str, Any]) -> dict[str, Any]:
    """--complete: the per-case pass over the statistics' dataset with their model, in their dtype."""
    from gated_core.cli import parse_device
    from neuroscope.activation_pass.store import load_statistics, model_argument
    from neuroscope.recompute.examples import checked_dataset, load_inputs
    from neuroscope.summary.case_pass import CaseCheckpoint, case_pass

    device = parse_device(request.device)
    source = resolve_model(request.model or model_argument(meta), full_hash=request.full_hash)
    stats = load_statistics(source, request.datadir, request.activations, " (the export reads them)")
    dataset, dataset_dir = checked_dataset(stats, None, load_tokenizer(source), source)
    inputs = load_inputs(source, stats, dataset_dir, device, dataset=dataset)
    identity = {**made_from(statistics=stats.fingerprint), "batch_size": request.batch_size, "k": PUBLISHED_K}
    totals = case_pass(inputs.model, inputs.dataset, PUBLISHED_K, request.batch_size, inputs.pad_id, device,
                       CaseCheckpoint(checkpoint_path(request), identity), request.checkpoint_every)
    return totals.columns()
