"""Files of the activation pass: statistics (final, per shard, checkpoint) under DATADIR/SAVE_TO."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neuroscope.activations import STATISTICS_VERSION, NeuronStats
from wcos_casestudies.artifacts import PROJECT_TAG, load_artifact, save_artifact
from wcos_casestudies.errors import UserError

# meta keys that must agree between a checkpoint (or shard) and the run that continues (or merges) it
RUN_KEYS = ("model", "dataset", "documents", "tokens", "k", "batch_size", "dtype", "n_layers", "d_mlp",
            "statistics_version", "examples_without_bos")
OLD_STATISTICS_NOTE = ("statistics of an older b_activations.py: no activation histogram, no sign-combination examples, "
                       "and the BOS token may fill the example lists; rerun b_activations.py with --overwrite for them")


def statistics_notes(meta: dict[str, Any]) -> list[str]:
    """What a reader of pages made from statistics with this metadata should know about them."""
    if meta.get("statistics_version", 1) < STATISTICS_VERSION:
        return [OLD_STATISTICS_NOTE]
    if not meta.get("examples_without_bos", False):
        return ["position 0 counts as an example (--include_bos)"]
    return []


def stats_path(folder: Path, num_shards: int = 1, shard_index: int = 0, partial: bool = False) -> Path:
    """stats.pt, stats.shard<i>of<N>.pt, or their `.partial` checkpoints."""
    name = "stats" if num_shards == 1 else f"stats.shard{shard_index}of{num_shards}"
    return Path(folder) / f"{name}{'.partial' if partial else ''}.pt"


def save_stats(stats: NeuronStats, meta: dict[str, Any], path: Path, next_batch: int | None = None) -> None:
    """Atomic save of statistics (moved to the CPU) with their metadata."""
    cpu = stats.to("cpu")
    data = {"meta": {"project": PROJECT_TAG, **meta}, **cpu.state_dict(), **cpu.summary()}
    if next_batch is not None:
        data["next_batch"] = next_batch
    save_artifact(data, path)


def load_stats(path: Path, expect: dict[str, Any] | None = None) -> tuple[NeuronStats, dict[str, Any], dict[str, Any]]:
    """Statistics, metadata and the whole file; refuses a file whose meta disagrees with `expect`."""
    data = load_artifact(path)
    meta = data["meta"]
    if meta.get("statistics_version", 1) != STATISTICS_VERSION:
        raise UserError(f"{path}: {OLD_STATISTICS_NOTE}")
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise UserError(f"{path}: statistics with {key}={meta.get(key)!r}, not {value!r}; "
                            "use the matching settings, or --overwrite to start again")
    return NeuronStats.from_state_dict(data), meta, data
