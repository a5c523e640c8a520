"""Sign refactoring of gated neurons: flipping w_in and w_out together leaves the function unchanged."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UserError
from .readers import LayerMLP


def glu_signs(layer: LayerMLP) -> torch.Tensor:
    """-1 for neurons with w_gate · w_in < 0, else +1: [neuron]."""
    if layer.gate is None:
        raise UserError("--refactor_glu needs a gated model")
    dots = (layer.gate.double() * layer.lin.double()).sum(dim=-1)
    return torch.where(dots < 0, -1.0, 1.0)


def refactor_glu(layer: LayerMLP) -> LayerMLP:
    """Flip w_in and w_out of neurons with w_gate · w_in < 0 (the network's function is unchanged)."""
    signs = glu_signs(layer).to(layer.lin.dtype)[:, None]
    return LayerMLP(gate=layer.gate, lin=layer.lin * signs, out=layer.out * signs)


def refactor_glu_hf_model(model: Any, signs: list[torch.Tensor]) -> None:
    """Apply per-layer neuron signs to a Hugging Face model's up_proj and down_proj, in place."""
    layers = model.model.layers
    with torch.no_grad():
        for mlp_signs, block in zip(signs, layers):
            s = mlp_signs.to(block.mlp.up_proj.weight.dtype)
            block.mlp.up_proj.weight.mul_(s[:, None])
            if block.mlp.up_proj.bias is not None:
                block.mlp.up_proj.bias.mul_(s)
            block.mlp.down_proj.weight.mul_(s[None, :])

