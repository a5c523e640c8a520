"""The one home of a neuron's name: `NeuronId(layer, neuron)`, written `LAYER.NEURON` (e.g. `28.4737`) on the command
line, in messages, tables, page names and links, and packed as `layer * d_mlp + neuron` where a single integer id is
stored (connection lists, the viewer's index, the probe's top neurons)."""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import UserError

NAME_PATTERN = re.compile(r"[0-9]+\.[0-9]+")  # what a stored `layer.neuron` name looks like (ASCII digits only)


class NeuronId(NamedTuple):
    """One MLP neuron: its layer and its index in the layer. Immutable, and equal to the plain `(layer, neuron)`
    pair, so that it keys the same dicts and unpacks like one."""

    layer: int
    neuron: int

    def __str__(self) -> str:
        return f"{self.layer}.{self.neuron}"

    @property
    def name(self) -> str:
        """`layer.neuron`, e.g. `28.4737`."""
        return str(self)

    def flat(self, d_mlp: int) -> int:
        """The packed id `layer * d_mlp + neuron`."""
        return self.layer * d_mlp + self.neuron

    @classmethod
    def from_flat(cls, index: int, d_mlp: int) -> NeuronId:
        """The neuron of a packed id `layer * d_mlp + neuron`."""
        layer, neuron = divmod(int(index), d_mlp)
        return cls(layer, neuron)

    @classmethod
    def from_name(cls, name: str) -> NeuronId:
        """The neuron of a stored `layer.neuron` name (one this project wrote; user input goes through `parse`)."""
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"not a LAYER.NEURON name: {name!r}")
        layer, neuron = name.split(".")
        return cls(int(layer), int(neuron))

    @classmethod
    def parse(cls, text: str, n_layers: int, d_mlp: int) -> NeuronId:
        """A neuron named on the command line, '28.4737', checked against the model's size: a UserError otherwise."""
        parts = text.split(".")
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
            raise UserError(f"neuron {text!r}: write neurons as LAYER.NEURON, e.g. 28.4737")
        layer, neuron = int(parts[0]), int(parts[1])
        if layer >= n_layers or neuron >= d_mlp:
            raise UserError(f"neuron {text}: out of range; the model has layers 0..{n_layers - 1} and neurons 0..{d_mlp - 1}")
        return cls(layer, neuron)


def neuron_name(layer: int, neuron: int) -> str:
    """`layer.neuron` of a neuron given by its two numbers (`NeuronId(layer, neuron).name`)."""
    return NeuronId(layer, neuron).name


def is_neuron_name(text: str) -> bool:
    """Whether `text` is a stored `layer.neuron` name."""
    return bool(NAME_PATTERN.fullmatch(text))


def sort_names(names) -> list[str]:
    """`layer.neuron` names in (layer, neuron) order."""
    return sorted(names, key=NeuronId.from_name)
