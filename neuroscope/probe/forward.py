"""The probe's forward pass (`probe_pass`): g, u and a of the chosen neurons at every token, the neurons with the
largest |a| at each token (with the statistics: the largest strength, |a| over the neuron's largest |a| on the
dataset, the viewer's search's ranking of examples) and each neuron's largest a over the text, by the activation pass's hooks, and the
percentiles of values among the dataset's (`histogram_percentiles`, from the histogram of the activation pass).

A text longer than the model's context runs in windows, each its own forward pass with BOS first; BOS itself is run
but not shown. Shapes: per-token values are [token] over the text's tokens (BOS left out), the statistics' tables
[layer neuron (bin)]. Non-finite values (a float16 model overflowing) are counted where they occur (`NonFinite`);
NaN never ranks (left out of the top lists and of each neuron's largest a), ±inf ranks by its magnitude.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from gated_core.errors import UserError
from gated_core.models.loading import load_hf_model
from neuroscope.core.histogram import histogram_codes, histogram_lookup
from neuroscope.core.hooks import mlp_hooks, run_model
from neuroscope.probe.request import ProbeRun
from neuroscope.recompute.examples import Neuron

NAN_SCORE = -1.0  # the score of NaN among |a| (>= 0) in the top lists: NaN never ranks


@dataclass
class NonFinite:
    """Where the pass met inf or NaN in g, u or a (a float16 model overflowing, say), in the layers it reads."""

    tokens: torch.Tensor  # [token] bool
    neurons: torch.Tensor  # [layer neuron] bool
    count: int = 0  # non-finite values, of g, u and a together

    @classmethod
    def empty(cls, tokens: int, n_layers: int, d_mlp: int) -> NonFinite:
        return cls(torch.zeros(tokens, dtype=torch.bool), torch.zeros(n_layers, d_mlp, dtype=torch.bool))

    def add(self, layer: int, start: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        """Count the non-finite values of one layer's g, u, a [pos neuron] of a window starting at token `start`."""
        finite = [torch.isfinite(values) for values in (g, u, a)]
        bad = ~(finite[0] & finite[1] & finite[2])
        if bool(bad.any()):
            self.count += sum(int((~values).sum()) for values in finite)
            self.tokens[start:start + bad.shape[0]] |= bad.any(dim=1).cpu()
            self.neurons[layer] |= bad.any(dim=0).cpu()


@dataclass
class ProbeValues:
    """What one pass over the text found; tokens are those of `ProbeRun.token_ids`."""

    chosen: dict[Neuron, dict[str, torch.Tensor]]  # neuron -> "g", "u", "a": [token] float32
    top_values: torch.Tensor  # [token top] float32: a of the neurons with the largest |a| at each token (NaN: none)
    top_ids: torch.Tensor  # [token top] int64: their layer * d_mlp + neuron
    top_strengths: torch.Tensor | None  # [token top] float32: |a| / the neuron's largest |a| on the dataset (None: no statistics)
    max_values: torch.Tensor  # [layer neuron] float32: the largest a over the text (NaN left out; -inf: none)
    max_tokens: torch.Tensor  # [layer neuron] int64: the token where it is
    windows: list[tuple[int, int]]  # [start, stop) in token_ids of each forward pass
    window_tokens: int  # tokens per forward pass at most, BOS included
    non_finite: NonFinite
    seconds: float = 0.0  # the forward passes with their hooks


def plan_windows(doc_starts: list[int], room: int) -> list[tuple[int, int]]:
    """[start, stop) of every forward pass: each document cut into pieces of at most `room` tokens."""
    return [(start, min(start + room, stop)) for first, stop in zip(doc_starts[:-1], doc_starts[1:])
            for start in range(first, stop, room)]


@dataclass
class WindowCapture:
    """The hooks' callback for one forward pass (batch 1): the chosen neurons' g, u, a, the per-layer top |a|
    candidates, the running maximum of a and the non-finite values, all of the window's text tokens (BOS, when
    first, left out). NaN never ranks (below every |a| in the top lists, left out of the maximum); ±inf ranks by
    its magnitude."""

    run: ProbeRun
    skip: int  # 1 when the window starts with BOS
    start: int  # the window's first text token in token_ids
    max_values: torch.Tensor  # [layer neuron], updated in place
    max_tokens: torch.Tensor
    chosen: dict[Neuron, dict[str, list[torch.Tensor]]]
    non_finite: NonFinite  # updated in place
    peaks: torch.Tensor | None = None  # [layer neuron] the neurons' largest |a| on the dataset: rank by |a| / peak
    candidates: list[tuple[torch.Tensor, ...]] = field(default_factory=list)  # ([pos k] a, ids, scores)

    def __call__(self, layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        g, u, a = (t[0, self.skip:] for t in (g, u, a))  # [pos neuron]
        a = a.float()
        for neuron in (n for lay, n in self.run.neurons if lay == layer):
            for key, values in (("g", g), ("u", u), ("a", a)):
                self.chosen[(layer, neuron)][key].append(values[:, neuron].float().cpu())
        self.non_finite.add(layer, self.start, g, u, a)
        allowed = self.run.allowed[layer]
        count = int(allowed.sum())
        if count == 0:
            return
        scores = rank_scores(a)
        if self.peaks is not None:
            scores /= self.peaks[layer].to(a.device)
        if count < len(allowed):
            scores.masked_fill_(~allowed.to(a.device), -torch.inf)
        index = scores.topk(min(self.run.request.top, count), dim=-1).indices  # [pos k]
        self.candidates.append((a.gather(-1, index).cpu(), (index + layer * a.shape[-1]).cpu(), scores.gather(-1, index).cpu()))
        best, where = a.masked_fill(a.isnan(), -torch.inf).max(dim=0)
        better = best.cpu() > self.max_values[layer]
        self.max_values[layer] = torch.where(better, best.cpu(), self.max_values[layer])
        self.max_tokens[layer] = torch.where(better, where.cpu() + self.start, self.max_tokens[layer])

    def top(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The window's neurons with the largest |a| (or strength) at each token, over every layer: a, ids and their
        scores (|a|, or |a| / peak), [pos k]."""
        values, ids, scores = (torch.cat([c[part] for c in self.candidates], dim=-1) for part in range(3))
        order = scores.topk(min(k, values.shape[-1]), dim=-1).indices
        return values.gather(-1, order), ids.gather(-1, order), scores.gather(-1, order)


def neuron_peaks(run: ProbeRun) -> torch.Tensor | None:
    """Each neuron's largest |a| on the dataset, max(|max a|, |min a|) of the statistics [layer neuron] (at least the
    smallest float, so that a dead neuron ranks by |a| over it); None without statistics."""
    if run.stats is None:
        return None
    peaks = torch.maximum(run.stats.top_values[..., 0].float().abs(), run.stats.bottom_values[..., 0].float().abs())
    return peaks.nan_to_num(nan=0.0).clamp_min(torch.finfo(torch.float32).tiny)


def rank_scores(a: torch.Tensor) -> torch.Tensor:
    """What the top lists rank by: |a|, NaN below every value (NAN_SCORE) so that it never ranks before a number."""
    return a.abs().masked_fill_(a.isnan(), NAN_SCORE)


def run_probe(run: ProbeRun) -> ProbeValues:
    """Load the model and run every window of the text once with the activation pass's hooks."""
    model, _ = load_hf_model(run.source, dtype=run.dtype, device=run.device, tokenizer=run.tokenizer)
    return probe_pass(run, model)


def probe_pass(run: ProbeRun, model: Any) -> ProbeValues:
    """Run every window of the text once through `model` (loaded in the run's dtype, on its device) with the
    activation pass's hooks."""
    context = int(getattr(model.config, "max_position_embeddings", 0) or 0) or len(run.token_ids) + 1
    window = min(run.request.window_tokens or context, context)
    skip = int(run.bos_id is not None)
    if window <= skip:
        raise UserError(f"--window_tokens {window}: a window needs room for BOS and at least one token")
    windows = plan_windows(run.doc_starts, window - skip)
    if len(windows) > len(run.doc_starts) - 1:
        print(f"note: {len(run.token_ids)} tokens in {len(run.doc_starts) - 1} document(s) and a window of {window} tokens "
              f"(the model's context: {context}): {len(windows)} windows, each its own forward pass"
              f"{' with BOS first' if skip else ''}, so no token sees the text before its window", file=sys.stderr)
    n_layers, d_mlp = run.allowed.shape
    max_values = torch.full((n_layers, d_mlp), -torch.inf)
    max_tokens = torch.zeros((n_layers, d_mlp), dtype=torch.long)
    chosen = {neuron: {"g": [], "u": [], "a": []} for neuron in run.neurons}
    non_finite = NonFinite.empty(len(run.token_ids), n_layers, d_mlp)
    layers = sorted({layer for layer, _ in run.neurons} | set(torch.nonzero(run.allowed.any(dim=1)).flatten().tolist()))
    top_values, top_ids, top_strengths, peaks = [], [], [], neuron_peaks(run)
    started = time.perf_counter()
    for start, stop in windows:
        ids = torch.tensor([([run.bos_id] if skip else []) + run.token_ids[start:stop]], device=run.device)
        capture = WindowCapture(run, skip, start, max_values, max_tokens, chosen, non_finite, peaks)
        with mlp_hooks(model, capture, layers, stop_after=layers[-1]):
            run_model(model, ids, torch.ones_like(ids))
        values, neuron_ids, scores = capture.top(run.request.top)
        top_values.append(values)
        top_ids.append(neuron_ids)
        top_strengths.append(scores)
    seconds = time.perf_counter() - started
    joined = {neuron: {key: torch.cat(parts) for key, parts in values.items()} for neuron, values in chosen.items()}
    report_non_finite(run, non_finite)
    return ProbeValues(joined, torch.cat(top_values), torch.cat(top_ids), None if peaks is None else torch.cat(top_strengths),
                       max_values, max_tokens, windows, window, non_finite, seconds)


def report_non_finite(run: ProbeRun, found: NonFinite) -> None:
    """A note (on stderr and on the page) of how many values of g, u, a were inf or NaN, if any."""
    if not found.count:
        return
    note = (f"{found.count:,} non-finite values (inf or NaN) of g, u or a, at {int(found.tokens.sum()):,} token(s), in "
            f"{int(found.neurons.sum()):,} neuron(s) (the model overflows in {str(run.dtype).removeprefix('torch.')}? "
            "try --dtype float32): written null in probe.json (meta.non_finite lists where), flagged on the page; "
            "NaN never ranks, ±inf ranks by its magnitude")
    run.notes.append(note)
    print(f"note: {note}", file=sys.stderr)


def histogram_percentiles(histogram: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The percentile (0 to 100) of each value in the distribution that a histogram of the activation pass counts:
    100 × (the counts in the bins below the value's bin + half the count of the value's bin) / all counts, i.e. a
    value is taken to lie in the middle of its bin (bins of `histogram.histogram_edges`, the value's bin read from its
    float bits as the pass does). `histogram` [... bin] int64, `values` [... n] -> [... n] float64; NaN where a
    histogram counts nothing."""
    bins = histogram_lookup()[histogram_codes(values.float().contiguous())].long()
    counts = histogram.to(torch.float64)
    below = torch.cumsum(counts, dim=-1) - counts
    total = counts.sum(dim=-1, keepdim=True)
    return 100.0 * (below.gather(-1, bins) + counts.gather(-1, bins) / 2) / total
