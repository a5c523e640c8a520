"""Running class ablations end to end: which sets, which tokens, one shared baseline, checkpoints.

Files in the output folder (`results/<model>/ablation/<dataset>/`):
- `baseline.pt`: the unablated run's per-token metrics (written once, shared by every set);
- `sets.pt`: one record per finished ablation (its neurons and summary), rewritten after each set,
  so that a killed run resumes without redoing finished sets, and a later run with more sets on the
  same evaluation reuses the baseline and every set it already has;
- `ablation.csv` / `.md` and `ablation.pdf` / `.png`: every set of the folder.
Both `.pt` files record what their numbers were computed from: the evaluation settings, the weights'
and the dataset's fingerprints, and for every mean ablation the fingerprint of the statistics whose
means it used (`Statistics.fingerprint`, which covers their tensors). A run that differs in any of
these is refused (or, with `--overwrite`, starts the folder again): nothing computed from other
inputs is reused.

Under torchrun the ranks split the batches of the plan (each rank its consecutive part, as the shards of the
activation pass) and rank 0 gathers their per-token metrics in plan order, so that it holds exactly the tensors
of one process: the bootstrap over documents, the tables and the files are then rank 0's alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gated_core.artifacts import (
    PROJECT_TAG,
    check_provenance,
    load_artifact,
    made_from,
    remove_stale_temporaries_in,
    save_artifact,
)
from gated_core.errors import UserError
from gated_core.models.sources import ModelSource
from neuroscope.activation_pass.store import MADE_WITH, StatisticsMeta, load_statistics, stats_path
from neuroscope.classes.ablation import METRICS, Ablation, TokenMetrics, evaluate
from neuroscope.classes.ablation_report import Bootstrap, summarize
from neuroscope.classes.neuron_sets import NeuronSet, random_baselines, requested_sets
from neuroscope.core.batches import batch_plan, shard_range
from neuroscope.core.distributed import Ranks, broadcast, gather
from neuroscope.data.dataset_store import check_vocabulary, document_lengths, load_tokenized
from wcos_casestudies.results import ModelResults
from wcos_casestudies.section6 import read_roles

# settings that must agree between the files of an output folder and the run that continues it
EVALUATION_KEYS = ("model", "gguf", "weights_fingerprint", "dataset", "dataset_fingerprint", "documents", "tokens",
            "batch_size", "dtype", "device", "bootstrap", "bootstrap_seed", "level")
FOLDER_NAMES = r"baseline\.pt|sets\.pt|ablation\.(csv|md|pdf|png)"  # every file of an output folder


def check_ablation_folder(folder: Path) -> None:
    """Refuse an output folder that holds none of the ablation's own files (or a killed write's temporary files), and
    one with links in it: a folder of the user's of that name is never written into. The files are written one by
    one (for resumption), so notes of the user's beside them stay where they are."""
    from gated_core.output_folders import RESULTS_ADVICE, check_output_folder, legacy_pattern

    check_output_folder(folder, "ablation", legacy_pattern(FOLDER_NAMES), RESULTS_ADVICE, others_kept=True)


START_AGAIN = "use the same settings, another --results_dir, or --overwrite to start this folder again"
MEANS_KEY = "statistics_fingerprint"  # what a mean ablation's record keeps (`made_from`) of the statistics whose means it used
MTOKEN = 1_000_000


def role_masks(results: ModelResults) -> dict[str, torch.Tensor]:
    """The role masks [layer neuron] of casestudies.py (roles.pt, checked against these weights)."""
    stored = read_roles(results)
    if stored is None:
        raise UserError(f"{results.folder}: no roles.pt; run wcos_casestudies/casestudies.py for this model first (--roles needs it)")
    if not stored.roles:
        raise UserError(f"{results.folder}: roles.pt has no role masks; rerun casestudies.py")
    return stored.roles


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


def choose_sets(results: ModelResults, classes: Sequence[str], role_names: Sequence[str], sample_sizes: Sequence[int],
                seed: int) -> list[NeuronSet]:
    """Class, role and sample sets, all checked (unknown names, empty sets, oversize samples are UserErrors)."""
    roles = role_masks(results) if role_names else None
    return requested_sets(results.categories(), classes, roles, role_names, sample_sizes, seed)


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
    means_from: str  # the statistics file the means come from, resolved ('' without means)
    fingerprint: str = ""  # the dataset's fingerprint (its token ids, masks and lengths)
    statistics_fingerprint: str = ""  # of the statistics the means come from ('' without means): what is checked


def check_means_source(path: Path, stats_meta: StatisticsMeta, dataset_dir: Path, data_meta: dict[str, Any],
                       documents: int) -> None:
    """Refuse statistics whose dataset means are not those of the dataset evaluated: another dataset, another
    number of documents, or other contents (the dataset rebuilt since; statistics without a fingerprint)."""
    if stats_meta.dataset != str(dataset_dir.resolve()):
        raise UserError(f"{path}: statistics of the dataset {stats_meta.dataset}, not of {dataset_dir.resolve()}; "
                        "the dataset means must come from the dataset evaluated")
    if stats_meta.documents != documents:
        raise UserError(f"{path}: statistics of {stats_meta.documents} documents, but {dataset_dir} has "
                        f"{documents}; the dataset changed since b_activations.py ran")
    check_provenance(path, made_from(dataset=stats_meta.dataset_fingerprint), made_from(dataset=data_meta["fingerprint"]),
                     f"the dataset means must come from the dataset evaluated: rerun b_activations.py "
                     f"--datadir {path.parent.parent} --dataset {dataset_dir.name} --save_to {path.parent.name} --overwrite",
                     MADE_WITH)


def load_evaluation(datadir: Path, dataset_name: str | None, stats_folder: str, source: ModelSource, mode: str,
                    mtokens: float | None, batch_size: int, vocab: tuple[Any, int]) -> Evaluation:
    """The dataset (default: the one of the statistics), its checked statistics when needed, the rows and batches.

    vocab: (the model's tokenizer, the model's vocabulary size), to refuse a dataset of another tokenizer.
    """
    if batch_size < 1:
        raise UserError(f"--batch_size {batch_size}: must be at least 1")
    path = stats_path(datadir / stats_folder)
    hint = " (mean ablation and the default --dataset need them; zero ablation can name --dataset instead)"
    stats = load_statistics(source, datadir, stats_folder, hint) if mode == "mean" or dataset_name is None else None
    dataset_dir = datadir / dataset_name if dataset_name else Path(stats.meta.dataset)
    dataset, data_meta = load_tokenized(dataset_dir)
    check_vocabulary(data_meta, *vocab, source.argument)
    means = stats.mean if mode == "mean" else None
    if means is not None:
        check_means_source(path, stats.meta, dataset_dir, data_meta, len(dataset))
    lengths = document_lengths(dataset)
    rows = evaluation_rows(lengths, mtokens)
    plan = [[rows[i] for i in batch] for batch in batch_plan([lengths[r] for r in rows], batch_size)]
    return Evaluation(dataset, dataset_dir, rows, plan, sum(lengths[r] for r in rows), means,
                      str(path.resolve()) if means is not None else "", data_meta["fingerprint"],
                      stats.fingerprint if means is not None else "")


def evaluation_meta(evaluation: Evaluation, batch_size: int, dtype: torch.dtype, device: torch.device,
                    bootstrap: BootstrapSettings) -> dict[str, Any]:
    """The settings that fix the evaluation's numbers (see EVALUATION_KEYS)."""
    return {"dataset": str(evaluation.dataset_dir.resolve()), **made_from(dataset=evaluation.fingerprint),
            "documents": len(evaluation.rows),
            "tokens": evaluation.tokens, "batch_size": batch_size, "dtype": str(dtype).removeprefix("torch."),
            "device": device.type, "bootstrap": bootstrap.resamples, "bootstrap_seed": bootstrap.seed,
            "level": bootstrap.level, "forward_pass": "Hugging Face model, unprocessed weights"}


class AblationStore:
    """`baseline.pt` and `sets.pt` of one output folder, checked against the run's settings and inputs.

    statistics_fingerprint: the run's `Evaluation.statistics_fingerprint` ('' for a run without means); the folder's
    finished mean ablations must have used the means of the same statistics."""

    def __init__(self, folder: Path, meta: dict[str, Any], overwrite: bool = False, statistics_fingerprint: str = ""):
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
            self._check_means(statistics_fingerprint)

    def _check(self, path: Path, stored: dict[str, Any]) -> None:
        """Refuse a file of the folder made from other inputs (weights, dataset: their fingerprints) or settings."""
        check_provenance(path, stored, {key: self.meta.get(key) for key in EVALUATION_KEYS}, START_AGAIN,
                         "the ablation results there were made with")

    def _check_means(self, statistics_fingerprint: str) -> None:
        """Refuse a folder whose mean ablations used the means of other statistics than this run's (statistics made
        again in place, or other statistics): they would be reused, or reported beside sets measured with these means."""
        if not statistics_fingerprint:
            return
        for record in self.records.values():
            if record["mode"] == "mean":
                check_provenance(self.sets_path, record, made_from(statistics=statistics_fingerprint), START_AGAIN,
                                 f"its mean ablation {record['key']!r} used the means of")

    def remove_leftovers(self) -> None:
        """Remove the temporary files of this folder's atomic writes that a killed run left behind (call this only
        while holding the folder's lock, so that no other run is writing them)."""
        remove_stale_temporaries_in(self.folder)

    def load_baseline(self) -> TokenMetrics | None:
        data = self.stored_baseline
        return None if data is None else TokenMetrics(data["values"], data["documents"])

    def save_baseline(self, baseline: TokenMetrics) -> None:
        save_artifact({"meta": self.meta, "values": baseline.values, "documents": baseline.documents}, self.baseline_path)
        self.records = {}  # a new baseline invalidates sets measured against another one
        save_artifact({"meta": self.meta, "sets": self.records}, self.sets_path)

    def finished(self, ablation: Ablation, statistics_fingerprint: str) -> bool:
        """Whether this ablation (same neurons, means of the same statistics) is already in sets.pt."""
        record = self.records.get(ablation.key)
        return (record is not None and torch.equal(record["members"], ablation.neurons.neurons)
                and record.get(MEANS_KEY, "") == (statistics_fingerprint if ablation.mode == "mean" else ""))

    def save_set(self, record: dict[str, Any]) -> None:
        self.records[record["key"]] = record
        save_artifact({"meta": self.meta, "sets": self.records}, self.sets_path)


@dataclass
class BootstrapSettings:
    resamples: int = 1000
    seed: int = 0
    level: float = 0.95


def ablation_record(ablation: Ablation, baseline: TokenMetrics, ablated: TokenMetrics, bootstrap: Bootstrap,
                    evaluation: Evaluation, seconds: float) -> dict[str, Any]:
    """What sets.pt keeps of one ablation: the set, the settings, and the summary of baseline − ablated."""
    if not torch.equal(ablated.documents, baseline.documents):
        raise RuntimeError(f"{ablation.key}: the ablated run saw other tokens than the baseline")
    neuron_set = ablation.neurons
    return {"key": ablation.key, "set": neuron_set.name, "kind": neuron_set.kind, "stands_for": neuron_set.stands_for or "",
            "seed": -1 if neuron_set.seed is None else neuron_set.seed, "mode": ablation.mode,
            "condition": ablation.condition or "all tokens", "neurons": len(neuron_set), "members": neuron_set.neurons,
            "touched": ablated.touched, "tokens": int(baseline.values.shape[0]),
            "means_from": evaluation.means_from if ablation.mode == "mean" else "",
            **made_from(statistics=evaluation.statistics_fingerprint if ablation.mode == "mean" else ""),
            "seconds": round(seconds, 2),
            "summary": summarize(baseline.values - ablated.values, bootstrap)}


def baseline_means(baseline: TokenMetrics) -> dict[str, float]:
    """Mean of each metric over the baseline's tokens (for context in the tables)."""
    return {metric: float(baseline.values[:, i].double().mean()) for i, metric in enumerate(METRICS)}


def plan_part(plan: Sequence[Sequence[int]], ranks: Ranks) -> list[Sequence[int]]:
    """The consecutive batches of `plan` that this rank evaluates (all of them for one process)."""
    first, last = shard_range(len(plan), ranks.world, ranks.rank)
    return list(plan[first:last])


def evaluate_by_ranks(model: Any, evaluation: Evaluation, pad_id: int, device: torch.device, ranks: Ranks,
                      ablation: Ablation | None = None, progress: Any = None) -> TokenMetrics | None:
    """`evaluate` of the plan, each rank its part, gathered on rank 0 in plan order (None on the other ranks):
    the same per-token tensors as one process, since every batch is the same batch whichever rank runs it."""
    plan = plan_part(evaluation.plan, ranks)
    part = evaluate(model, evaluation.dataset, plan, pad_id, device, ablation, evaluation.means, progress) if plan else None
    parts = gather(ranks, part)
    if parts is None:
        return None
    parts = [metrics for metrics in parts if metrics is not None]
    if len(parts) == 1:
        return parts[0]
    return TokenMetrics(torch.cat([metrics.values for metrics in parts]), torch.cat([metrics.documents for metrics in parts]),
                        sum(metrics.touched for metrics in parts))


def still_to_do(ablations: Sequence[Ablation], store: AblationStore, evaluation: Evaluation,
                log: Callable[[str], None]) -> tuple[list[int], bool]:
    """Indexes of the ablations not yet in the store, and whether the baseline must be computed."""
    todo = []
    for index, ablation in enumerate(ablations):
        if store.finished(ablation, evaluation.statistics_fingerprint):
            log(f"reusing {ablation.key} (already in {store.sets_path.name})")
        else:
            todo.append(index)
    return todo, store.stored_baseline is None


def run_ablations(load_model: Callable[[], tuple[Any, int]], evaluation: Evaluation, ablations: Sequence[Ablation],
                  store: AblationStore | None, device: torch.device, bootstrap: BootstrapSettings,
                  progress: Callable[[int], Any] | None = None, stop_after_sets: int | None = None,
                  log: Callable[[str], None] = print, ranks: Ranks | None = None) -> TokenMetrics | None:
    """The baseline (unless stored), then every ablation not yet in the store, each saved when done.

    load_model() gives (model, pad id); it is called only when a forward pass is needed.
    progress(total_batches) makes a progress bar (tqdm-like); stop_after_sets ends early as a killed run would.
    ranks: under torchrun, every rank calls this with the same `ablations`; only rank 0 has the `store` (None on
    the others), decides what is left to do, writes and gets the baseline back (the others get None).
    Returns the baseline.
    """
    ranks = ranks or Ranks()
    todo_indexes, need_baseline = broadcast(ranks, still_to_do(ablations, store, evaluation, log) if ranks.first else None)
    todo = [ablations[index] for index in todo_indexes]
    baseline = store.load_baseline() if ranks.first else None
    passes = len(todo) + need_baseline
    if passes == 0:
        return baseline
    model, pad_id = load_model()
    bar = progress(passes * len(plan_part(evaluation.plan, ranks))) if progress is not None else None
    if need_baseline:
        baseline = evaluate_by_ranks(model, evaluation, pad_id, device, ranks, progress=bar)
        if ranks.first:
            store.save_baseline(baseline)
    resamples = Bootstrap.of(baseline.documents, bootstrap.resamples, bootstrap.seed, bootstrap.level) if ranks.first else None
    for done, ablation in enumerate(todo):
        if stop_after_sets is not None and done >= stop_after_sets:
            log(f"stopped after {done} sets; rerun to resume")
            break
        started = time.perf_counter()
        ablated = evaluate_by_ranks(model, evaluation, pad_id, device, ranks, ablation, bar)
        if ranks.first:
            store.save_set(ablation_record(ablation, baseline, ablated, resamples, evaluation, time.perf_counter() - started))
    if bar is not None:
        bar.close()
    return baseline
