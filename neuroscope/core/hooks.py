"""Hooks on a Hugging Face gated MLP: g (gate_proj output, TransformerLens hook_pre), u (up_proj output,
hook_pre_linear) and a = act(g) * u (down_proj input, hook_post) of chosen layers during a forward pass, which can
stop after the last layer needed; one forward pass for the hooks' sake; the check that act(g) keeps the sign of g."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


class StopForward(Exception):
    """Raised by a hook to end a forward pass after the last layer that is needed."""


def decoder_layers(model: Any) -> Sequence[Any]:
    """The decoder blocks of a Hugging Face causal LM whose MLP has gate_proj, up_proj, down_proj."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not all(hasattr(block.mlp, name) for block in layers for name in ("gate_proj", "up_proj", "down_proj")):
        from gated_core.errors import UserError

        raise UserError(f"{type(model).__name__}: not a gated MLP model (needs mlp.gate_proj/up_proj/down_proj)")
    return layers


@contextmanager
def mlp_hooks(model: Any, callback: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None],
              layers: Sequence[int], stop_after: int | None = None) -> Iterator[None]:
    """Call `callback(layer, g, u, a)` with [batch pos neuron] tensors during forward passes.

    g = gate pre-activation (TransformerLens hook_pre), u = linear pre-activation
    (hook_pre_linear), a = act(g) * u (hook_post). With `stop_after`, the forward pass ends
    (StopForward) once that layer's MLP has run.
    """
    blocks = decoder_layers(model)
    stash: dict[int, dict[str, torch.Tensor]] = {}
    handles = []

    def keep(layer: int, name: str):
        def hook(module, inputs, output):
            stash.setdefault(layer, {})[name] = output
        return hook

    def use(layer: int):
        def hook(module, inputs):
            parts = stash.pop(layer)
            callback(layer, parts["g"], parts["u"], inputs[0])
            if stop_after is not None and layer == stop_after:
                raise StopForward
        return hook

    try:
        for layer in layers:
            mlp = blocks[layer].mlp
            handles.append(mlp.gate_proj.register_forward_hook(keep(layer, "g")))
            handles.append(mlp.up_proj.register_forward_hook(keep(layer, "u")))
            handles.append(mlp.down_proj.register_forward_pre_hook(use(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()
        stash.clear()


def run_model(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """One forward pass for the hooks' sake (no logits kept); StopForward ends it early."""
    with torch.inference_mode():
        try:
            model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except StopForward:
            pass


def check_activation_signs(model: Any) -> None:
    """Refuse a model whose act(g) does not keep the sign of g (act(g) >= 0 for g > 0, <= 0 otherwise):
    the sign-combination examples read (g, u) off the signs of g and a. SiLU, GELU and ReLU keep it."""
    act = decoder_layers(model)[0].mlp.act_fn
    parameter = next(model.parameters())
    probe = torch.tensor([-1e4, -30.0, -3.0, -1.0, -1e-3, -1e-30, -0.0, 0.0, 1e-30, 1e-3, 1.0, 3.0, 30.0, 1e4])
    with torch.inference_mode():
        out = act(probe.to(parameter.device, parameter.dtype)).float().cpu()
    if not bool((torch.where(probe > 0, out >= 0, out <= 0)).all()):
        from gated_core.errors import UserError

        raise UserError(f"{type(act).__name__}: act(g) does not keep the sign of g; the sign-combination examples need it")


@contextmanager
def final_norm_input(model: Any) -> Iterator[dict[str, torch.Tensor]]:
    """Capture the residual stream entering the final norm: `captured['x']` [batch pos d_model]."""
    captured: dict[str, torch.Tensor] = {}

    def hook(module, inputs):
        captured["x"] = inputs[0]

    handle = model.model.norm.register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def logits_of(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The model's next-token logits [token vocab] (float32) of final hidden states [token d_model],
    with Gemma 2's final logit soft-capping where the config has it."""
    logits = model.lm_head(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits
