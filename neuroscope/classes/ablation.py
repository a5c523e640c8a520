"""Ablating sets of neurons and measuring what changes, token by token (the "Weakening Neurons"
follow-up of Gerstner & Schütze: ablation of whole IO classes).

An ablation replaces the activation a = act(g) * u of chosen neurons, at the hook point of the
activation pass (the input of `down_proj`, TransformerLens `hook_post`):
- zero ablation: a := 0; mean ablation: a := the neuron's mean over the dataset (b_activations.py);
- conditional ablation: only at the tokens where (sign of g, sign of a) is one combination, e.g.
  `gate-post+` (g <= 0 and a > 0); "+" means > 0, "-" means <= 0, as in the activation pass.

Per predicted token (every real token that has a next token) the pass keeps four metrics:
next-token loss (cross-entropy), entropy of the next-token distribution, rank of the correct token
(1 = most likely) and the final-norm scale 1/RMS(x) of the residual x entering the final norm
(the factor an RMSNorm multiplies by, up to its epsilon). Only the hidden states of predicted tokens
go through the unembedding, in chunks, so no [batch pos vocabulary] logits are ever held.
Shapes: activations [batch pos neuron]; per-token metrics [token] in the order of the batch plan.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from gated_core.errors import UserError
from neuroscope.classes.neuron_sets import NeuronSet
from neuroscope.constants import ABLATION_CONDITIONS, ABLATION_MODES
from neuroscope.core.batches import padded_batches
from neuroscope.core.hooks import decoder_layers, final_norm_input, logits_of, mlp_hooks

CONDITIONS = ABLATION_CONDITIONS
MODES = ABLATION_MODES
METRICS = ("loss", "entropy", "rank", "norm_scale")
LOGIT_CHUNK_ELEMENTS = 2 ** 24  # logits held at once (64 MiB in float32): tokens per chunk = this // vocabulary


def parse_condition(word: str) -> str:
    """`gate-post+`, `gate- post+` or `gate-_post+` -> `gate-post+`; else a UserError listing the four."""
    normalised = word.replace(" ", "").replace("_", "").lower()
    if normalised not in CONDITIONS:
        raise UserError(f"unknown sign combination {word!r}; use one of {', '.join(CONDITIONS)} (+ means > 0)")
    return normalised


def condition_signs(condition: str) -> tuple[bool, bool]:
    """`gate-post+` -> (gate positive?, post positive?) = (False, True)."""
    return condition[4] == "+", condition[-1] == "+"


@dataclass(frozen=True)
class Ablation:
    """What to do to a set of neurons: replace a by zero or by its dataset mean, everywhere or under a condition."""

    neurons: NeuronSet
    mode: str = "zero"
    condition: str | None = None  # one of CONDITIONS, or None for every token

    @property
    def key(self) -> str:
        """A unique name of the ablation, e.g. `depletion | zero | gate-post+`."""
        return " | ".join([self.neurons.name, self.mode, self.condition or "all tokens"])


def layer_replacements(ablation: Ablation, means: torch.Tensor | None, device: torch.device,
                       dtype: torch.dtype) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """layer -> (neuron indices [k_l], replacement values [k_l]) on the device, in the model's dtype.

    means: [layer neuron] dataset means of a (needed for mode `mean`).
    """
    if ablation.mode not in MODES:
        raise UserError(f"--mode {ablation.mode}: use one of {', '.join(MODES)}")
    if ablation.mode == "mean" and means is None:
        raise UserError("mean ablation needs the statistics of b_activations.py (the dataset mean of every neuron)")
    result = {}
    for layer, index in ablation.neurons.by_layer().items():
        values = means[layer, index] if ablation.mode == "mean" else torch.zeros(len(index))
        result[layer] = (index.to(device), values.to(device=device, dtype=dtype))
    return result


class ActivationReplacer:
    """An `mlp_hooks` callback that overwrites a (the tensor `down_proj` is about to read) in place.

    Also records, per batch, which tokens had at least one activation replaced (`touched`, [batch pos]).
    """

    def __init__(self, replacements: dict[int, tuple[torch.Tensor, torch.Tensor]], condition: str | None):
        self.replacements = replacements
        self.signs = condition_signs(condition) if condition else None
        self.touched: torch.Tensor | None = None

    def __call__(self, layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        index, values = self.replacements[layer]
        if self.signs is None:
            a.index_copy_(-1, index, values.expand(*a.shape[:-1], -1))
            if self.touched is None:
                self.touched = torch.ones(a.shape[:-1], dtype=torch.bool, device=a.device)
            return
        chosen = a.index_select(-1, index)  # [batch pos k_l]
        gate_positive, post_positive = self.signs
        hit = ((g.index_select(-1, index) > 0) == gate_positive) & ((chosen > 0) == post_positive)
        a.index_copy_(-1, index, torch.where(hit, values, chosen))
        touched = hit.any(-1)
        self.touched = touched if self.touched is None else self.touched | touched


@contextmanager
def ablation_hooks(model: Any, ablation: Ablation | None, means: torch.Tensor | None = None) -> Iterator[ActivationReplacer | None]:
    """Hooks that apply `ablation` during forward passes (nothing for None or an empty set)."""
    if ablation is None or len(ablation.neurons) == 0:
        yield None
        return
    parameter = next(model.parameters())
    replacer = ActivationReplacer(layer_replacements(ablation, means, parameter.device, parameter.dtype),
                                  ablation.condition)
    with mlp_hooks(model, replacer, sorted(replacer.replacements)):
        yield replacer


def token_metrics(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss, entropy and rank of the correct token (1 = top) per token: [token 3] float32.

    logits [token vocab] float32, targets [token] int64.
    """
    log_normaliser = torch.logsumexp(logits, dim=-1)  # [token]
    target_logit = logits.gather(-1, targets[:, None])  # [token 1]
    loss = log_normaliser - target_logit[:, 0]
    probabilities = torch.softmax(logits, dim=-1)
    entropy = log_normaliser - (probabilities * logits).sum(-1)
    rank = (logits > target_logit).sum(-1).float() + 1
    return torch.stack([loss, entropy, rank], dim=-1)


def norm_scale(residual: torch.Tensor) -> torch.Tensor:
    """1 / RMS over d_model of residual vectors [token d_model], in float32: [token]."""
    return torch.rsqrt(residual.float().pow(2).mean(-1))


@dataclass
class TokenMetrics:
    """Per-token metrics of one evaluation pass, in the order of the batch plan."""

    values: torch.Tensor  # [token 4] float32, columns in METRICS order
    documents: torch.Tensor  # [token] int64: the dataset row each predicted token belongs to
    touched: int = 0  # predicted tokens at which the ablation replaced at least one activation


def batch_metrics(model: Any, hidden: torch.Tensor, residual: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """METRICS of predicted tokens from final hidden states and final-norm inputs [token d_model]: [token 4]."""
    chunk = max(1, LOGIT_CHUNK_ELEMENTS // model.config.vocab_size)
    parts = [token_metrics(logits_of(model, hidden[i:i + chunk]), targets[i:i + chunk])
             for i in range(0, hidden.shape[0], chunk)]
    metrics = torch.cat(parts) if parts else hidden.new_zeros(0, len(METRICS) - 1, dtype=torch.float32)
    return torch.cat([metrics, norm_scale(residual)[:, None]], dim=-1)


def evaluate(model: Any, dataset: Any, plan: Sequence[Sequence[int]], pad_id: int, device: torch.device,
             ablation: Ablation | None = None, means: torch.Tensor | None = None, progress: Any = None) -> TokenMetrics:
    """Run the batches of `plan` (lists of dataset rows) with `ablation` applied; per-token METRICS on the CPU.

    A predicted token is a real token followed by a real token (documents are right-padded);
    its metrics are those of the distribution over the next token.
    """
    decoder_layers(model)
    values, documents, touched = [], [], 0
    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        replacer = stack.enter_context(ablation_hooks(model, ablation, means))
        captured = stack.enter_context(final_norm_input(model))
        for batch in padded_batches(dataset, plan, pad_id, device, progress=progress):
            if replacer is not None:
                replacer.touched = None
            hidden = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 use_cache=False).last_hidden_state
            predicted = batch.attention_mask[:, 1:].bool()  # [batch pos-1]
            values.append(batch_metrics(model, hidden[:, :-1][predicted], captured["x"][:, :-1][predicted],
                                        batch.input_ids[:, 1:][predicted]).cpu())
            row_ids = torch.tensor(batch.docs, device=device)[:, None].expand_as(predicted)
            documents.append(row_ids[predicted].cpu())
            if replacer is not None and replacer.touched is not None:
                touched += int(replacer.touched[:, :-1][predicted].sum())
    return TokenMetrics(torch.cat(values), torch.cat(documents), touched)
