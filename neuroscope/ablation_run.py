"""Running class ablations end to end: which sets, which tokens, one shared baseline, checkpoints.

Files in the output folder (`results/<model>/ablation/<dataset>/`):
- `baseline.pt`: the unablated run's per-token metrics (written once, shared by every set);
- `sets.pt`: one record per finished ablation (its neurons and summary), rewritten after each set,
  so that a killed run resumes without redoing finished sets, and a later run with more sets on the
  same evaluation reuses the baseline and every set it already has;
- `ablation.csv` / `.md` and `ablation.pdf` / `.png`: every set of the folder.
Both `.pt` files record the evaluation settings; a run with other settings is refused (or, with
`--overwrite`, starts the folder again).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neuroscope.ablation import METRICS, Ablation, TokenMetrics, evaluate
from neuroscope.ablation_report import Bootstrap, summarize
from neuroscope.activations import batch_plan
from neuroscope.data import check_vocabulary, document_lengths, load_tokenized
from neuroscope.neuron_sets import NeuronSet, random_baselines, requested_sets
from neuroscope.store import load_statistics, stats_path
from wcos_casestudies.artifacts import PROJECT_TAG, find_artifact, load_artifact, save_artifact
from wcos_casestudies.errors import UserError
from wcos_casestudies.models.sources import ModelSource

# settings that must agree between the files of an output folder and the run that continues it
RUN_KEYS = ("model", "gguf", "dataset", "documents", "tokens", "batch_size", "dtype", "device",
            "bootstrap", "bootstrap_seed", "level")
MTOKEN = 1_000_000


def load_roles(folder: Path) -> dict[str, torch.Tensor]:
    """The role masks of casestudies.py (roles.pt / roles.pickle in the model's results folder)."""
    path = find_artifact(folder, "roles")
    if path is None:
        raise UserError(f"{folder}: no roles.pt; run wcos_casestudies/casestudies.py for this model first (--roles needs it)")
    roles = load_artifact(path).get("roles")
    if not roles:
        raise UserError(f"{path}: has no role masks; rerun casestudies.py")
    return roles


def ablation_plan(sets: Sequence[NeuronSet], d_mlp: int, mode: str, conditions: Sequence[str],
                  random_seeds: int) -> list[Ablation]:
    """Every set everywhere, then under each sign combination; each followed by its same-layer random sets."""
    ablations: dict[str, Ablation] = {}  # by key: a set named twice runs once
    for neuron_set in sets:
        randoms = random_baselines(neuron_set, d_mlp, range(random_seeds))
        for condition in (None, *conditions):
            for chosen in (neuron_set, *randoms):
                ablation = Ablation(chosen, mode, condition)
                ablations.setdefault(ablation.key, ablation)
    return list(ablations.values())


def choose_sets(categories: torch.Tensor, classes: Sequence[str], role_names: Sequence[str], results_folder: Path,
                sample_sizes: Sequence[int], seed: int) -> list[NeuronSet]:
    """Class, role and sample sets, all checked (unknown names, empty sets, oversize samples are UserErrors)."""
    roles = load_roles(results_folder) if role_names else None
    for name, mask in (roles or {}).items():
        if tuple(mask.shape) != tuple(categories.shape):
            raise UserError(f"{results_folder}: role {name} has shape {tuple(mask.shape)}, the model's classes "
                            f"{tuple(categories.shape)}; rerun casestudies.py --overwrite")
    return requested_sets(categories, classes, roles, role_names, sample_sizes, seed)


def evaluation_rows(lengths: Sequence[int], mtokens: float | None) -> list[int]:
    """The first dataset rows whose tokens reach `mtokens` million (all rows for None), as a_dataset.py counts."""
    if mtokens is None:
        return list(range(len(lengths)))
    if mtokens <= 0:
        raise UserError(f"--Mtokens {mtokens}: must be positive")
    goal, total, rows = mtokens * MTOKEN, 0, []
    for row, length in enumerate(lengths):
        rows.append(row)
        total += length
        if total >= goal:
            break
    return rows


@dataclass
class Evaluation:
    """The tokens every ablation is evaluated on, and the dataset means for mean ablation."""

    dataset: Any
    dataset_dir: Path
    rows: list[int]  # dataset rows evaluated
    plan: list[list[int]]  # batches of dataset rows
    tokens: int  # real tokens of those rows
    means: torch.Tensor | None  # [layer neuron] dataset mean of a (from the statistics), or None
    stats_file: str  # the statistics the means come from ('' without)


def load_evaluation(datadir: Path, dataset_name: str | None, stats_folder: str, source: ModelSource, mode: str,
                    mtokens: float | None, batch_size: int, vocab: tuple[int, int]) -> Evaluation:
    """The dataset (default: the one of the statistics), its checked statistics when needed, the rows and batches.

    vocab: (tokenizer vocabulary, model vocabulary), to refuse a dataset of another tokenizer.
    """
    if batch_size < 1:
        raise UserError(f"--batch_size {batch_size}: must be at least 1")
    dataset_dir = datadir / dataset_name if dataset_name else None
    path = stats_path(datadir / stats_folder)
    hint = " (mean ablation and the default --dataset need them; zero ablation can name --dataset instead)"
    stats = load_statistics(source, datadir, stats_folder, hint) if mode == "mean" or dataset_dir is None else None
    if stats is not None and dataset_dir is not None and stats["meta"].get("dataset") != str(dataset_dir.resolve()):
        raise UserError(f"{path}: statistics of the dataset {stats['meta'].get('dataset')}, not of {dataset_dir.resolve()}; "
                        "the dataset means must come from the dataset evaluated")
    dataset_dir = dataset_dir or Path(stats["meta"]["dataset"])
    dataset, data_meta = load_tokenized(dataset_dir)
    check_vocabulary(data_meta, *vocab, source.name)
    if stats is not None and stats["meta"].get("documents") != len(dataset):
        raise UserError(f"{path}: statistics of {stats['meta'].get('documents')} documents, but {dataset_dir} has "
                        f"{len(dataset)}; the dataset changed since b_activations.py ran")
    lengths = document_lengths(dataset)
    rows = evaluation_rows(lengths, mtokens)
    plan = [[rows[i] for i in batch] for batch in batch_plan([lengths[r] for r in rows], batch_size)]
    means = stats["mean"] if stats is not None and mode == "mean" else None
    return Evaluation(dataset, dataset_dir, rows, plan, sum(lengths[r] for r in rows), means,
                      str(path.resolve()) if means is not None else "")


def evaluation_meta(evaluation: Evaluation, batch_size: int, dtype: torch.dtype, device: torch.device,
                    bootstrap: BootstrapSettings) -> dict[str, Any]:
    """The settings that fix the evaluation's numbers (see RUN_KEYS)."""
    return {"dataset": str(evaluation.dataset_dir.resolve()), "documents": len(evaluation.rows),
            "tokens": evaluation.tokens, "batch_size": batch_size, "dtype": str(dtype).removeprefix("torch."),
            "device": device.type, "bootstrap": bootstrap.resamples, "bootstrap_seed": bootstrap.seed,
            "level": bootstrap.level, "forward_pass": "Hugging Face model, unprocessed weights"}


class AblationStore:
    """`baseline.pt` and `sets.pt` of one output folder, checked against the run's settings."""

    def __init__(self, folder: Path, meta: dict[str, Any], overwrite: bool = False):
        self.folder, self.meta = Path(folder), {"project": PROJECT_TAG, **meta}
        self.baseline_path, self.sets_path = self.folder / "baseline.pt", self.folder / "sets.pt"
        self.records: dict[str, dict[str, Any]] = {}
        self.stored_baseline: dict[str, Any] | None = None
        if overwrite:
            return
        stored = {path: load_artifact(path) for path in (self.baseline_path, self.sets_path) if path.exists()}
        for path, data in stored.items():
            self._check(path, data["meta"])
        self.stored_baseline = stored.get(self.baseline_path)  # loaded once: kept for load_baseline
        if self.sets_path in stored:
            self.records = stored[self.sets_path]["sets"]

    def _check(self, path: Path, stored: dict[str, Any]) -> None:
        for key in RUN_KEYS:
            if stored.get(key) != self.meta.get(key):
                raise UserError(f"{path}: made with {key}={stored.get(key)!r}, not {self.meta.get(key)!r}; "
                                "use the same settings, another --results_dir, or --overwrite to start this folder again")

    def load_baseline(self) -> TokenMetrics | None:
        data = self.stored_baseline
        return None if data is None else TokenMetrics(data["values"], data["documents"])

    def save_baseline(self, baseline: TokenMetrics) -> None:
        save_artifact({"meta": self.meta, "values": baseline.values, "documents": baseline.documents}, self.baseline_path)
        self.records = {}  # a new baseline invalidates sets measured against another one
        save_artifact({"meta": self.meta, "sets": self.records}, self.sets_path)

    def finished(self, ablation: Ablation, means_from: str) -> bool:
        """Whether this ablation (same neurons, same source of means) is already in sets.pt."""
        record = self.records.get(ablation.key)
        return (record is not None and torch.equal(record["members"], ablation.neurons.neurons)
                and record["means_from"] == (means_from if ablation.mode == "mean" else ""))

    def save_set(self, record: dict[str, Any]) -> None:
        self.records[record["key"]] = record
        save_artifact({"meta": self.meta, "sets": self.records}, self.sets_path)


@dataclass
class BootstrapSettings:
    resamples: int = 1000
    seed: int = 0
    level: float = 0.95


def ablation_record(ablation: Ablation, baseline: TokenMetrics, ablated: TokenMetrics, bootstrap: Bootstrap,
                    means_from: str, seconds: float) -> dict[str, Any]:
    """What sets.pt keeps of one ablation: the set, the settings, and the summary of baseline − ablated."""
    if not torch.equal(ablated.documents, baseline.documents):
        raise RuntimeError(f"{ablation.key}: the ablated run saw other tokens than the baseline")
    neuron_set = ablation.neurons
    return {"key": ablation.key, "set": neuron_set.name, "kind": neuron_set.kind, "stands_for": neuron_set.stands_for or "",
            "seed": -1 if neuron_set.seed is None else neuron_set.seed, "mode": ablation.mode,
            "condition": ablation.condition or "all tokens", "neurons": len(neuron_set), "members": neuron_set.neurons,
            "touched": ablated.touched, "tokens": int(baseline.values.shape[0]),
            "means_from": means_from if ablation.mode == "mean" else "", "seconds": round(seconds, 2),
            "summary": summarize(baseline.values - ablated.values, bootstrap)}


def baseline_means(baseline: TokenMetrics) -> dict[str, float]:
    """Mean of each metric over the baseline's tokens (for context in the tables)."""
    return {metric: float(baseline.values[:, i].double().mean()) for i, metric in enumerate(METRICS)}


def run_ablations(load_model: Callable[[], tuple[Any, int]], evaluation: Evaluation, ablations: Sequence[Ablation],
                  store: AblationStore, device: torch.device, bootstrap: BootstrapSettings,
                  progress: Callable[[int], Any] | None = None, stop_after_sets: int | None = None,
                  log: Callable[[str], None] = print) -> TokenMetrics:
    """The baseline (unless stored), then every ablation not yet in the store, each saved when done.

    load_model() gives (model, pad id); it is called only when a forward pass is needed.
    progress(total_batches) makes a progress bar (tqdm-like); stop_after_sets ends early as a killed run would.
    Returns the baseline.
    """
    todo = []
    for ablation in ablations:
        if store.finished(ablation, evaluation.stats_file):
            log(f"reusing {ablation.key} (already in {store.sets_path.name})")
        else:
            todo.append(ablation)
    baseline = store.load_baseline()
    passes = len(todo) + (baseline is None)
    if passes == 0:
        return baseline
    model, pad_id = load_model()
    bar = progress(passes * len(evaluation.plan)) if progress is not None else None
    if baseline is None:
        baseline = evaluate(model, evaluation.dataset, evaluation.plan, pad_id, device, progress=bar)
        store.save_baseline(baseline)
    resamples = Bootstrap.of(baseline.documents, bootstrap.resamples, bootstrap.seed, bootstrap.level)
    for done, ablation in enumerate(todo):
        if stop_after_sets is not None and done >= stop_after_sets:
            log(f"stopped after {done} sets; rerun to resume")
            break
        started = time.perf_counter()
        ablated = evaluate(model, evaluation.dataset, evaluation.plan, pad_id, device, ablation, evaluation.means, bar)
        store.save_set(ablation_record(ablation, baseline, ablated, resamples, evaluation.stats_file,
                                       time.perf_counter() - started))
    if bar is not None:
        bar.close()
    return baseline
