"""A 2-D toy of one gated neuron for `interactive.ipynb`: prototype weights per IO class and a plot.

w_out = (1, 0); each class has a prototype (w_in, w_gate) of unit vectors. For a residual
vector x the neuron adds act(x̂ · w_gate) (x̂ · w_in) w_out, with x̂ = x / ‖x‖.
"""

from __future__ import annotations

import math

import torch
from matplotlib.figure import Figure

from gated_core.naming import shown

W_OUT = (1.0, 0.0)


def _unit(degrees: float) -> tuple[float, float]:
    radians = math.radians(degrees)
    return (math.cos(radians), math.sin(radians))


# class -> (w_in, w_gate), each a 2-D unit vector
PROTOTYPES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "enrichment": (_unit(10), _unit(-10)),
    "conditional enrichment": (_unit(0), _unit(90)),
    "proportional change": (_unit(90), _unit(0)),
    "orthogonal output": (_unit(90), _unit(90)),
    "depletion": (_unit(190), _unit(170)),
    "conditional depletion": (_unit(180), _unit(90)),
}
ACTIVATIONS = {"SiLU (SwiGLU)": torch.nn.functional.silu,
               "GELU tanh (GeGLU)": lambda t: torch.nn.functional.gelu(t, approximate="tanh")}


def prototype_cosines(name: str) -> tuple[float, float, float]:
    """(gatelin, gateout, linout) of a class prototype."""
    w_in, w_gate = (torch.tensor(v) for v in PROTOTYPES[name])
    w_out = torch.tensor(W_OUT)
    return float(w_gate @ w_in), float(w_gate @ w_out), float(w_in @ w_out)


def neuron_output(x: tuple[float, float], name: str, activation: str = "SiLU (SwiGLU)") -> tuple[float, float]:
    """act(x̂ · w_gate) (x̂ · w_in) w_out for the class prototype."""
    x_t = torch.tensor(x, dtype=torch.float64)
    norm = float(x_t.norm())
    if norm == 0:
        return (0.0, 0.0)
    x_hat = x_t / norm
    w_in, w_gate = (torch.tensor(v, dtype=torch.float64) for v in PROTOTYPES[name])
    value = ACTIVATIONS[activation](x_hat @ w_gate) * (x_hat @ w_in)
    return tuple(float(value) * torch.tensor(W_OUT, dtype=torch.float64).numpy())


def polar_to_cartesian(radius: float, degrees: float) -> tuple[float, float]:
    """(x, y) of a point given by radius and angle in degrees."""
    return (radius * math.cos(math.radians(degrees)), radius * math.sin(math.radians(degrees)))


def draw(x: tuple[float, float], name: str, activation: str = "SiLU (SwiGLU)") -> Figure:
    """The residual x, the weights, the neuron's output and the updated residual x + output."""
    out = neuron_output(x, name, activation)
    updated = (x[0] + out[0], x[1] + out[1])
    w_in, w_gate = PROTOTYPES[name]
    gatelin, gateout, linout = prototype_cosines(name)
    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    ax = fig.subplots()
    arrows = [((0, 0), w_in, "tab:green", "w_in"), ((0, 0), w_gate, "tab:purple", "w_gate"),
              ((0, 0), W_OUT, "tab:orange", "w_out"), ((0, 0), x, "black", "x (residual)"),
              (x, out, "tab:red", "neuron output"), ((0, 0), updated, "tab:blue", "x + output")]
    for start, delta, color, label in arrows:
        ax.annotate("", xy=(start[0] + delta[0], start[1] + delta[1]), xytext=start,
                    arrowprops=dict(arrowstyle="->", color=color, lw=2))
        ax.plot([], [], color=color, lw=2, label=label)
    limit = max(1.5, abs(x[0]) + 1.2, abs(x[1]) + 1.2, abs(updated[0]) + 0.3, abs(updated[1]) + 0.3)
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect(1)
    ax.axhline(0, color="0.85", lw=0.8)
    ax.axvline(0, color="0.85", lw=0.8)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"{shown(name)}: gatelin {gatelin:+.2f}, gateout {gateout:+.2f}, linout {linout:+.2f}\n"
                 f"output {out[0]:+.3f} along w_out", fontsize=9)
    return fig
