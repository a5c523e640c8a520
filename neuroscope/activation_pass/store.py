"""Files of the activation pass: statistics (final, per shard, checkpoint) under DATADIR/SAVE_TO.

Every statistics file records what it was computed from (model, weights fingerprint, dataset and
its fingerprint, settings); a checkpoint is resumed, a shard merged and a final file reused only
when these agree.

The statistics fingerprint (`StatisticsMeta.fingerprint`, `statistics_fingerprint`) is what everything made from
statistics records of them and checks (recomputed values, viewers, mean ablations): a hash of the identity keys of
the file's metadata (`FINGERPRINT_KEYS`: model, weights, dataset and tokenizer fingerprints, settings) and of a
digest of its tensors (`tensors_digest`, written into the metadata when the file is saved, computed on load for
files of an older version). So statistics made again from other inputs, or made again in place with other numbers,
have another fingerprint, while a copy or a move of the same file keeps it.

The file format lives here and only here: the names the tensors are saved under (`file_tensors`,
`neuron_stats_from_file` for the pass), and the typed `Statistics` and `StatisticsMeta` that every
other reader gets from `load_statistics` (tests/test_structure.py checks that no one else reads the
file's keys).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from gated_core.artifacts import PROJECT_TAG, check_provenance, load_artifact, made_from, save_artifact
from gated_core.errors import UserError
from gated_core.fingerprint import FINGERPRINT_CHARS, content_digest
from gated_core.models.sources import ModelSource
from neuroscope.activation_pass.activations import SIGN_COMBINATIONS, STATISTICS_VERSION, NeuronStats
from neuroscope.core.histogram import histogram_bins, typical_bands
from neuroscope.core.ranked import pack_tokens

STATS_KIND = "activation_statistics"  # meta["kind"] of every statistics file
STATS_KEYS = (*(f"{prefix}_{name}" for prefix in ("top", "bottom", "combo", "typical") for name in ("values", "docs", "positions")),
              *NeuronStats.COUNTS)  # the tensors of a statistics file
SUMMARY_KEYS = ("mean", "gate_open", "sign_frequencies")  # NeuronStats.summary(), saved beside the raw counts
# meta keys that must agree between a checkpoint (or shard) and the run that continues (or merges) it
PASS_IDENTITY_KEYS = ("model", "dataset", "documents", "tokens", "k", "batch_size", "dtype", "n_layers", "d_mlp",
            "weights_fingerprint", "dataset_fingerprint", "statistics_version", "examples_without_bos", "typical_per_band")
# what the statistics fingerprint hashes of the metadata: their identity, not where the dataset lies (its contents are
# in the dataset fingerprint) nor how long the pass took; not typical_per_band either, so that statistics of version 2
# (which record none) keep their fingerprint: the typical examples' shape, in the tensors' digest, records it
FINGERPRINT_KEYS = (*(key for key in PASS_IDENTITY_KEYS if key not in ("dataset", "typical_per_band")),
                    "tokenizer_fingerprint", "bos_id")
TENSORS_DIGEST = "tensors_digest"  # meta key: digest of the statistics' tensors (`tensors_digest`)
START_AGAIN = "rerun b_activations.py with --overwrite to start again"
MADE_WITH = "the statistics were made with"  # how messages about the inputs of statistics begin
OLD_STATISTICS_NOTE = ("statistics of an older b_activations.py: no activation histogram, no sign-combination examples, "
                       "and the BOS token may fill the example lists; rerun b_activations.py with --overwrite for them")
NO_TYPICAL_NOTE = ("statistics of an older b_activations.py (version 2): no typical examples; rerun b_activations.py "
                   "with --overwrite for them")
NEW_IN_VERSION_2 = ("combo_values", "combo_docs", "combo_positions", "histogram")  # what older statistics lack
NEW_IN_VERSION_3 = ("typical_values", "typical_docs", "typical_positions")
NEW_IN_VERSION_4 = ("nonfinite",)
NEW_KEYS = (*NEW_IN_VERSION_2, *NEW_IN_VERSION_3, *NEW_IN_VERSION_4)  # what statistics of some older version lack
NO_NONFINITE_NOTE = ("statistics of an older b_activations.py (version 3): tokens whose activation is not finite (±inf "
                     "or NaN, e.g. of a float16 run that overflows) were not counted nor left out, and would make a "
                     "neuron's mean and extremes absurd; rerun b_activations.py with --overwrite for a count")


IMPORTED_KEY = "imported"  # meta key of statistics read from a neuron summary (b_import_summary.py): its path and
# form, and what the summary did not hold ("missing")


def imported_note(meta: dict[str, Any]) -> str | None:
    """What statistics imported from a summary lack (None: not imported, or nothing lacking)."""
    imported = meta.get(IMPORTED_KEY)
    if not isinstance(imported, dict) or not imported.get("missing"):
        return None
    return (f"statistics imported from a published neuron summary ({imported.get('summary')}), which does not hold "
            f"{'; '.join(imported['missing'])}; its example lists rank documents, each by its most extreme token")


def old_statistics_note(version: int) -> str:
    """What statistics of an older `statistics_version` lack."""
    return {2: NO_TYPICAL_NOTE, 3: NO_NONFINITE_NOTE}.get(version, OLD_STATISTICS_NOTE)


def statistics_notes(meta: StatisticsMeta) -> list[str]:
    """What a reader of pages made from statistics with this metadata should know about them."""
    imported = imported_note(meta.extra)
    if imported is not None:
        return [imported]
    if meta.statistics_version < STATISTICS_VERSION:
        return [old_statistics_note(meta.statistics_version)]
    if not meta.examples_without_bos:
        return ["position 0 counts as an example (--include_bos)"]
    return []


def stats_path(folder: Path, num_shards: int = 1, shard_index: int = 0, partial: bool = False) -> Path:
    """stats.pt, stats.shard<i>of<N>.pt, or their `.partial` checkpoints."""
    name = "stats" if num_shards == 1 else f"stats.shard{shard_index}of{num_shards}"
    return Path(folder) / f"{name}{'.partial' if partial else ''}.pt"


def peek_stats_meta(path: Path) -> dict[str, Any] | None:
    """The metadata of a statistics file (or checkpoint) that this project wrote, read without its tensors (memory-
    mapped, unverified: enough to recognise the file, not to trust its numbers); None for any other file."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a statistics file of this project, whatever the reason: no file to recognise
        return None
    meta = data.get("meta") if isinstance(data, dict) else None
    if not isinstance(meta, dict) or meta.get("project") != PROJECT_TAG or meta.get("kind") != STATS_KIND:
        return None
    return meta


def file_tensors(stats: NeuronStats) -> dict[str, torch.Tensor]:
    """The tensors of running statistics under the names a statistics file gives them."""
    return {name: getattr(stats, name).contiguous() for name in STATS_KEYS}


def neuron_stats_from_file(data: dict[str, Any], device: torch.device | str = "cpu") -> NeuronStats:
    """Running statistics from a file's tensors (`file_tensors`; KeyError for files without every part)."""
    def stacked(name: str, bottom_sign: int = 1) -> torch.Tensor:
        return torch.cat([data[f"top_{name}"][:, :, None], bottom_sign * data[f"bottom_{name}"][:, :, None],
                          data[f"combo_{name}"]], dim=2).to(device)

    def by_slot(tensor: torch.Tensor) -> torch.Tensor:  # [layer neuron combination band k] -> [layer neuron slot k]
        slots = len(SIGN_COMBINATIONS) * typical_bands()  # named, not -1: k = 0 (--typical_per_band 0) has no elements
        return tensor.reshape(*tensor.shape[:2], slots, tensor.shape[-1]).to(device)

    return NeuronStats(keys=stacked("values", -1), docs=stacked("docs"), positions=stacked("positions"),
                       **{name: data[name].to(device) for name in NeuronStats.COUNTS},
                       sample_tokens=by_slot(pack_tokens(data["typical_docs"], data["typical_positions"])),
                       sample_values=by_slot(data["typical_values"]))


def tensors_digest(data: dict[str, Any]) -> str:
    """Digest of the tensors of statistics (a statistics file's dict, or `file_tensors` and the summaries)."""
    return content_digest({name: data[name] for name in (*STATS_KEYS, *SUMMARY_KEYS) if name in data})[:FINGERPRINT_CHARS]


def statistics_fingerprint(data: dict[str, Any], digest: str | None = None) -> str:
    """The fingerprint of the statistics in a loaded statistics file (`data`: its dict): of their identity keys and of
    their tensors' digest, computed here from the tensors themselves, never taken from the digest the file records:
    statistics rewritten in place with their metadata kept (a tensor edited and saved again) get another fingerprint,
    so what was made from the old numbers is refused (`digest`: that digest, where the caller has it already)."""
    meta = data["meta"]
    digest = digest or tensors_digest(data)
    return content_digest({"identity": {key: meta.get(key) for key in FINGERPRINT_KEYS}, "tensors": digest})[:FINGERPRINT_CHARS]


def save_stats(stats: NeuronStats, meta: dict[str, Any], path: Path, next_batch: int | None = None) -> None:
    """Atomic save of statistics (moved to the CPU) with their metadata and the digest of their tensors."""
    cpu = stats.to("cpu")
    save_statistics_file({**file_tensors(cpu), **cpu.summary()}, meta, path, next_batch)


def save_statistics_file(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: Path,
                         next_batch: int | None = None) -> None:
    """Atomic save of a statistics file: its tensors (`STATS_KEYS`, `SUMMARY_KEYS`; some may be left out) with their
    metadata and their digest."""
    data = {"meta": {"project": PROJECT_TAG, "kind": STATS_KIND, **meta, TENSORS_DIGEST: tensors_digest(tensors)}, **tensors}
    if next_batch is not None:
        data["next_batch"] = next_batch
    save_artifact(data, path)


def check_run(path: Path, meta: dict[str, Any], expect: dict[str, Any], remedy: str = START_AGAIN) -> None:
    """Refuse statistics whose metadata disagrees with `expect` on any key: an input's fingerprint (`MADE_FROM`) or a
    setting (`check_provenance`)."""
    check_provenance(path, meta, expect, remedy, MADE_WITH)


def pass_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """What statistics must agree on with a run to be its result, or a shard with the other shards of its run
    (PASS_IDENTITY_KEYS of `meta`; None for a key that an older file lacks)."""
    return {key: meta.get(key) for key in PASS_IDENTITY_KEYS}


def expected_shape(name: str, meta: dict[str, Any]) -> tuple[Any, ...]:
    """[layer neuron k] for the top and bottom examples, [layer neuron combination k] for the sign-combination
    examples, [layer neuron combination band typical_per_band] for the typical examples, [layer neuron bin] for the
    histogram, [layer neuron] for the sums, [] for the token count."""
    if name == "n_tokens":
        return ()
    layers_neurons = (meta.get("n_layers"), meta.get("d_mlp"))
    if name.startswith("typical_"):
        return (*layers_neurons, len(SIGN_COMBINATIONS), typical_bands(), meta.get("typical_per_band", 0))
    if name.startswith("combo_"):
        return (*layers_neurons, len(SIGN_COMBINATIONS), meta.get("k"))
    if name == "histogram":
        return (*layers_neurons, histogram_bins())
    return (*layers_neurons, meta.get("k")) if name.startswith(("top_", "bottom_")) else layers_neurons


def check_shapes(path: Path, data: dict[str, Any], meta: dict[str, Any]) -> None:
    """Refuse statistics whose tensors do not have the shapes their metadata (layers, neurons, k) gives."""
    for name in (key for key in STATS_KEYS if key in data):
        shape, expected = tuple(getattr(data[name], "shape", ())), expected_shape(name, meta)
        if shape != expected:
            raise UserError(f"{path}: {name} has shape {shape}, not {expected} as its metadata says; the file is damaged")


def load_stats(path: Path, expect: dict[str, Any] | None = None, remedy: str = START_AGAIN,
               allow_old: bool = False) -> tuple[NeuronStats | None, dict[str, Any], dict[str, Any]]:
    """Statistics, metadata and the whole file; refuses another kind of file, damaged shapes and a file
    whose metadata disagrees with `expect`. Statistics of an older version (version 1: no histogram, no
    sign-combination examples; version 2: no typical examples; version 3: no count of non-finite tokens) are refused
    too, unless `allow_old` (for pages: then no NeuronStats comes back)."""
    old_keys = tuple(key for key in STATS_KEYS if key not in NEW_KEYS)
    data = load_artifact(path, kind=STATS_KIND, required=("meta", *old_keys, *SUMMARY_KEYS), remedy=remedy)
    meta = data["meta"]
    version = meta.get("statistics_version", 1)
    current = version == STATISTICS_VERSION and all(key in data for key in NEW_KEYS)
    if not current and not allow_old:
        raise UserError(f"{path}: {imported_note(meta) or old_statistics_note(version)}")
    check_run(path, meta, expect or {}, remedy)
    check_shapes(path, data, meta)
    return (neuron_stats_from_file(data) if current else None), meta, data


def model_argument(meta: dict[str, Any]) -> str:
    """The --model value that reaches the model of statistics again (a local model's path, not its name)."""
    name = str(meta.get("model"))
    if name.startswith(("local/", "gguf/")):
        return str(meta.get("model_path", "<the --model that b_activations.py ran with>"))
    return name


@dataclass(frozen=True)
class StatisticsMeta:
    """What a statistics file records it was computed from and how; `recorded`: the keys the file has (an older
    b_activations.py wrote fewer), `extra`: any key not named here, kept as it is."""

    model: str | None = None
    dataset: str | None = None  # the dataset's folder, resolved
    documents: int | None = None
    tokens: int = 0
    k: int | None = None  # examples per neuron and list
    dtype: str | None = None  # e.g. "float32"
    n_layers: int | None = None
    d_mlp: int | None = None
    statistics_version: int = 1
    examples_without_bos: bool = False
    typical_per_band: int = 0  # typical examples per sign combination and band (0: none, or an older version)
    bos_id: int | None = None  # the token every document starts with (None: none)
    weights_fingerprint: str | None = None
    dataset_fingerprint: str | None = None
    tokenizer_fingerprint: str | None = None
    recorded: frozenset[str] = frozenset()
    extra: dict[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None  # of the statistics (`statistics_fingerprint`): what artifacts made from them record

    @classmethod
    def from_file(cls, meta: dict[str, Any], fingerprint: str | None = None) -> StatisticsMeta:
        """The metadata of a statistics file (its `meta` dict) and the statistics' `fingerprint`."""
        named = {f.name for f in fields(cls)} - {"recorded", "extra", "fingerprint"}
        return cls(**{key: value for key, value in meta.items() if key in named}, recorded=frozenset(meta),
                   extra={key: value for key, value in meta.items() if key not in named}, fingerprint=fingerprint)

    def first_token(self, fallback: int | None) -> int | None:
        """The recorded first token of every document (None: none), or `fallback` where the file records none."""
        return self.bos_id if "bos_id" in self.recorded else fallback


@dataclass(frozen=True)
class Statistics:
    """The statistics of every neuron as `b_activations.py` saved them. Example lists: [layer neuron k] (top:
    descending, bottom: ascending; document -1: empty slot), sign combinations [layer neuron combination k] (|a|,
    descending); counts and summaries [layer neuron]; the histogram [layer neuron bin]; typical examples
    [layer neuron combination band typical_per_band]: combinations in SIGN_COMBINATIONS' order, bands of |a| between
    `histogram.typical_band_edges()`, each band's sample sorted by `ranked.token_hash` (its first j are a uniform
    sample of j; document -1: empty slot, fewer tokens in that band; value a, 0 in empty slots). Statistics of the
    first version have no sign-combination lists and no histogram (None); of the first two, no typical examples; of
    the first three, no count of non-finite tokens (None: unknown). Every statistic of a neuron leaves out its tokens
    whose a, g or u is not finite (`nonfinite` [layer neuron] counts them): its mean and frequencies are over its
    n_tokens - nonfinite other tokens."""

    top_values: torch.Tensor
    top_docs: torch.Tensor
    top_positions: torch.Tensor
    bottom_values: torch.Tensor
    bottom_docs: torch.Tensor
    bottom_positions: torch.Tensor
    post_sum: torch.Tensor  # int64, fixed point
    gate_positive: torch.Tensor
    lin_positive: torch.Tensor
    both_positive: torch.Tensor
    n_tokens: torch.Tensor  # [] int64
    mean: torch.Tensor  # mean activation (over the neuron's finite tokens)
    gate_open: torch.Tensor  # how often the gate is open
    sign_frequencies: torch.Tensor  # [layer neuron combination]
    meta: StatisticsMeta
    combo_values: torch.Tensor | None = None
    combo_docs: torch.Tensor | None = None
    combo_positions: torch.Tensor | None = None
    histogram: torch.Tensor | None = None  # int64, bins of histogram_edges()
    typical_values: torch.Tensor | None = None  # float32 a
    typical_docs: torch.Tensor | None = None  # int64
    typical_positions: torch.Tensor | None = None  # int64
    nonfinite: torch.Tensor | None = None  # [layer neuron] int64: tokens left out, a, g or u not finite (None: unknown)

    @classmethod
    def from_file(cls, data: dict[str, Any], digest: str | None = None) -> Statistics:
        """The statistics of a loaded statistics file (the dict `load_stats` reads), with their fingerprint (`digest`:
        their tensors' digest, where the caller has computed it)."""
        names = {f.name for f in fields(cls)} - {"meta"}
        meta = StatisticsMeta.from_file(data["meta"], statistics_fingerprint(data, digest))
        return cls(**{key: value for key, value in data.items() if key in names}, meta=meta)

    @property
    def fingerprint(self) -> str:
        """What every artifact made from these statistics records of them (`statistics_fingerprint`)."""
        return str(self.meta.fingerprint)

    @property
    def n_layers(self) -> int:
        return int(self.top_values.shape[0])

    @property
    def d_mlp(self) -> int:
        return int(self.top_values.shape[1])

    @property
    def k(self) -> int:
        return int(self.top_values.shape[2])

    @property
    def typical_per_band(self) -> int:
        """Typical examples per sign combination and band (0: none recorded)."""
        return 0 if self.typical_docs is None else int(self.typical_docs.shape[-1])


def load_statistics(source: ModelSource, datadir: Path, activations: str, hint: str = "") -> Statistics:
    """The statistics file of `b_activations.py --save_to ACTIVATIONS`, checked to be of this model and its weights
    (`hint`: why the script needs them, for the message when they are missing)."""
    path = stats_path(datadir / activations)
    if not path.exists():
        raise UserError(f"{path}: no statistics; run b_activations.py --datadir {datadir} --save_to {activations} first{hint}")
    remedy = f"run b_activations.py --datadir {datadir} --save_to {activations} --overwrite"
    _, meta, stats = load_stats(path, remedy=remedy, allow_old=True)
    if meta.get("model") != source.name:
        raise UserError(f"{path}: statistics of {meta.get('model')}, not of {source.name}; pass --model {model_argument(meta)}")
    if meta.get("weights_fingerprint") is not None:  # statistics of an older version carry none: recomputation checks them
        check_provenance(path, meta, made_from(weights=source.weights_fingerprint), remedy, MADE_WITH)
    digest = tensors_digest(stats)
    if meta.get(TENSORS_DIGEST) not in (None, digest):
        print(f"note: {path}: its numbers differ from those b_activations.py saved (tensor digest {meta[TENSORS_DIGEST][:8]}, "
              f"now {digest[:8]}): they were changed after the pass, and count as other statistics", file=sys.stderr)
    return Statistics.from_file(stats, digest)
