"""The results tree of one model: where its files go, and its cosines loaded or computed once.

Layout: `<results root>/<model>/` for the paper's settings (TransformerLens default
processing, corrected rule, threshold 0.5) and `<results root>/<model>/<variant>/` for
others, e.g. `refactored` or `raw_legacy_t0.4`. The per-model artifact is `data.pt`
(or `data.pickle`) holding the cosines, the derived statistics and the metadata.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from gated_core.artifacts import (
    PROJECT_TAG,
    check_provenance,
    find_artifact,
    load_artifact,
    made_from,
    package_versions,
    save_artifact,
)
from gated_core.cli import check_no_links
from gated_core.constants import DEFAULT_RESULTS
from gated_core.errors import UserError
from gated_core.models.arch import ArchInfo, read_arch
from gated_core.models.readers import WeightsInfo, open_weights
from gated_core.models.sources import ModelSource
from wcos_casestudies.constants import CLASS_NAMES, COSINE_NAMES, DEFAULT_THRESHOLD, QUANTILES
from wcos_casestudies.utils import category_stats, classify, model_cosines, model_random_regions, quartiles

COSINES_KIND = "cosines"  # meta["kind"] of data.pt
RESULTS_REMEDY = "move it away, or recompute it with main.py --overwrite"
COSINE_TOLERANCE = 1e-6  # a stored cosine may exceed 1 in magnitude by rounding, not more


@dataclass(frozen=True)
class Settings:
    """Everything that changes the numbers of a per-model artifact."""

    processing: bool = True
    refactor_glu: bool = False
    threshold: float = DEFAULT_THRESHOLD
    rule: str = "corrected"

    @property
    def variant(self) -> str:
        """Sub-folder name for non-default settings ('' for the paper's settings)."""
        parts = []
        if not self.processing:
            parts.append("raw")
        if self.refactor_glu:
            parts.append("refactored")
        if self.rule != "corrected":
            parts.append("legacy")
        if self.threshold != DEFAULT_THRESHOLD:
            parts.append(f"t{self.threshold:g}")
        return "_".join(parts)

    @property
    def matches_publication(self) -> bool:
        """Whether published counts are comparable (TL processing, threshold 0.5, typical rule equivalent)."""
        rule_ok = self.rule == "corrected" or self.refactor_glu
        return self.processing and self.threshold == DEFAULT_THRESHOLD and rule_ok

    def meta(self) -> dict[str, Any]:
        return {"processing": "transformer_lens_default" if self.processing else "none",
                "refactor_glu": self.refactor_glu, "threshold": self.threshold, "rule": self.rule}


def model_folder(root: Path, source: ModelSource, settings: Settings) -> Path:
    """The folder of one model's results under `root`."""
    folder = Path(root) / source.name
    return folder / settings.variant if settings.variant else folder


def _check_tensor(value: Any, shape: tuple[int, ...], name: str, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
        found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise UserError(f"{where}: {name} has shape {found}, but the model's is {shape}")
    return value


def _check_cosines(value: torch.Tensor, name: str, where: str) -> None:
    value = value.double()
    if not bool(torch.isfinite(value).all()) or float(value.abs().max()) > 1 + COSINE_TOLERANCE:
        raise UserError(f"{where}: {name} holds values outside [-1, 1] (from {float(value.min()):.3g} to "
                        f"{float(value.max()):.3g}), which no cosine can be")


def check_contents(data: dict[str, Any], arch: ArchInfo, where: str) -> None:
    """Refuse cosines and derived statistics whose shapes do not fit the model, cosines outside [-1, 1],
    class codes that do not exist and class counts that do not add up to the layer's neurons."""
    shape = (arch.n_layers, arch.d_mlp)
    for name in COSINE_NAMES if arch.gated else ("linout",):
        _check_cosines(_check_tensor(data.get(name), shape, name, where), name, where)
    if "categories" in data:
        codes = _check_tensor(data["categories"], shape, "categories", where)
        if codes.numel() and not 0 <= int(codes.min()) <= int(codes.max()) < len(CLASS_NAMES):
            raise UserError(f"{where}: categories holds class codes outside 0..{len(CLASS_NAMES) - 1}")
    if "category_stats" in data:
        counts = _check_tensor(data["category_stats"], (arch.n_layers, len(CLASS_NAMES)), "category_stats", where)
        if not bool((counts.sum(dim=1) == arch.d_mlp).all()):
            raise UserError(f"{where}: category_stats does not count {arch.d_mlp} neurons in every layer")
    if "quartiles" in data:
        if not isinstance(data["quartiles"], dict):
            raise UserError(f"{where}: quartiles is not a table of cosines")
        for name, value in data["quartiles"].items():
            _check_cosines(_check_tensor(value, (len(QUANTILES), arch.n_layers), f"quartiles[{name}]", where), name, where)


class ModelResults:
    """One model's artifact: cosines always; categories, counts and quartiles on demand."""

    def __init__(self, source: ModelSource, settings: Settings, root: Path = DEFAULT_RESULTS, fmt: str = "pt",
                 overwrite: bool = False, loader: str = "auto", device: str | torch.device = "cpu"):
        self.source, self.settings, self.fmt = source, settings, fmt
        self.folder = model_folder(root, source, settings)
        check_no_links(self.folder, "--results_dir", Path(root))  # the model's folders are ours to make, never links
        self.loader, self.device = loader, device
        self.path = self.folder / f"data.{fmt}"
        self.data: dict[str, Any] = {}
        existing = None if overwrite else find_artifact(self.folder, "data")
        if existing is not None:
            self.data = load_artifact(existing, kind=COSINES_KIND, required=("linout",), remedy=RESULTS_REMEDY)
            self._check_meta(existing)
            try:
                check_contents(self.data, read_arch(source), str(existing))
            except UserError as exc:
                raise UserError(f"{exc}; {RESULTS_REMEDY}") from exc
            self.reused = True
        else:
            self.reused = False

    @cached_property
    def fingerprint(self) -> str:
        """The weights' fingerprint: cached cosines are reused only for the same one."""
        return self.source.weights_fingerprint

    def _check_meta(self, path: Path) -> None:
        meta = self.data["meta"]
        expected = {"model": self.source.name, "gguf": self.source.is_gguf, **self.settings.meta()}
        check_provenance(path, meta, expected, RESULTS_REMEDY, made="holds results with")
        check_provenance(path, meta, made_from(weights=self.fingerprint),
                         "pass another --results_dir, or recompute it with main.py --overwrite",
                         made=f"holds the cosines ({meta.get('provenance')}) of")

    @property
    def meta(self) -> dict[str, Any]:
        return self.data["meta"]

    @property
    def caption(self) -> str:
        """Model and provenance in one line, for plot titles and table headers."""
        settings = self.settings
        weights = "GGUF, dequantised" if self.source.is_gguf else "checkpoint"
        processing = "TransformerLens processing" if settings.processing else "raw weights"
        glu = ", GLU refactored" if settings.refactor_glu else ""
        return f"{self.source.name} ({weights}; {processing}{glu}; t = {settings.threshold:g}, {settings.rule} rule)"

    def cosines(self) -> dict[str, torch.Tensor | None]:
        """gatelin, gateout, linout [layer neuron], computed from the weights unless stored."""
        if "linout" not in self.data:
            started = time.perf_counter()
            reader = open_weights(self.source, processing=self.settings.processing, loader=self.loader, device=self.device)
            if self.settings.refactor_glu and not reader.arch.gated:
                raise UserError(f"--refactor_glu: {self.source.name} has no gate weights")
            values = model_cosines(reader.layers(), reader.arch.n_layers, device=self.device,
                                   refactor=self.settings.refactor_glu, desc=f"cosines {self.source.name}")
            self.data = {
                "meta": {"project": PROJECT_TAG, "kind": COSINES_KIND, **asdict(WeightsInfo.of(reader)), **self.settings.meta(),
                         **made_from(weights=self.fingerprint), "versions": package_versions(),
                         "seconds": round(time.perf_counter() - started, 2)},
                **{k: v for k, v in values.items() if v is not None},
            }
            check_contents(self.data, reader.arch, f"{self.source.path}: the weights do not fit the config")
            self.save()
        return {name: self.data.get(name) for name in ("gatelin", "gateout", "linout")}

    def categories(self) -> torch.Tensor:
        """IO class code of every neuron [layer neuron]."""
        if "categories" not in self.data:
            c = self.cosines()
            self.data["categories"] = classify(c["gatelin"], c["gateout"], c["linout"],
                                               threshold=self.settings.threshold, rule=self.settings.rule).to(torch.int8)
            self.save()
        return self.data["categories"].long()

    def category_stats(self) -> torch.Tensor:
        """Counts per layer in class-code order [layer 11]."""
        if "category_stats" not in self.data:
            self.data["category_stats"] = category_stats(self.categories())
            self.save()
        return self.data["category_stats"]

    def quartiles(self) -> dict[str, torch.Tensor]:
        """0, .25, .5, .75, 1 quantiles per layer of each cosine ([5 layer] each)."""
        if "quartiles" not in self.data:
            self.data["quartiles"] = {name: quartiles(value) for name, value in self.cosines().items() if value is not None}
            self.save()
        return self.data["quartiles"]

    def write_index(self) -> Path:
        """Refresh `index.html`, the page that links every output of this model and these settings."""
        from wcos_casestudies.report import write_results_index

        return write_results_index(self.folder, self.caption)

    def random_regions(self) -> dict[str, torch.Tensor]:
        """Per layer, the 2.5% and 97.5% quantiles of each cosine between mismatched neurons ({cosine: [2 layer]})."""
        if "random_regions" not in self.data:
            self.cosines()
            reader = open_weights(self.source, processing=self.settings.processing, loader=self.loader, device=self.device)
            self.data["random_regions"] = model_random_regions(reader.layers(), reader.arch.n_layers,
                                                               refactor=self.settings.refactor_glu)
            self.save()
        return self.data["random_regions"]

    @property
    def provenance(self) -> str:
        """What the plots' numbers rest on: weights, processing, threshold and rule."""
        from wcos_casestudies.plotting import provenance_line

        settings = self.settings
        return provenance_line(self.meta["provenance"], settings.processing, settings.threshold, settings.rule,
                               settings.refactor_glu)

    def save(self) -> None:
        """Write the artifact atomically in the chosen format."""
        save_artifact(self.data, self.path)
