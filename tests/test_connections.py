"""Connections between neurons (g_connections.py): every list against a brute-force loop over all pairs (both signs,
integer weights full of ties, the tie rule), the folded weights against a Hugging Face forward pass perturbed by
hooks, connections.pt refused when stale, bad input in one line, the CLI end to end, and the class x class table
against a direct count."""

from __future__ import annotations

import pytest
import torch
from helpers import ROOT

from gated_core.cli import run_main
from gated_core.errors import UserError
from gated_core.models.arch import ArchInfo
from gated_core.models.readers import LayerMLP, WeightReader, open_weights
from gated_core.models.sources import resolve_model
from neuroscope import g_connections
from wcos_casestudies.class_connections import class_table, same_layer_random_mask
from wcos_casestudies.connections import (
    EMPTY,
    ConnectionInputs,
    compute_connections,
    mean_abs_from_histogram,
    top_k_along,
)
from wcos_casestudies.connections_store import identity_meta, load_connections, save_connections
from wcos_casestudies.constants import CLASS_NAMES

N_LAYERS, D_MODEL, D_MLP, VOCAB = 5, 8, 128, 200


class IntegerReader(WeightReader):
    """Hand-made weights of small integers, so that many virtual weights tie."""

    loader = "test"

    def __init__(self, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.arch = ArchInfo("llama", N_LAYERS, D_MODEL, D_MLP, VOCAB, "silu", True)
        self.weights = [LayerMLP(*(torch.randint(-2, 3, (D_MLP, D_MODEL), generator=generator).float() for _ in range(3)))
                        for _ in range(N_LAYERS)]
        self.w_e = torch.randint(-2, 3, (VOCAB, D_MODEL), generator=generator).float()

    def layer(self, index: int) -> LayerMLP:
        return self.weights[index]

    def embed(self) -> torch.Tensor:
        return self.w_e


def brute_force(reader: IntegerReader, scale: torch.Tensor, kind: str, ranking: str, layer: int, neuron: int, k: int):
    """The list of one neuron by a loop over every pair, sorted by (-score, index of the other end)."""
    reads = "gate" if kind.startswith("gate") else "lin"
    mine = reader.weights[layer]
    entries = []
    if kind.endswith("embed"):
        others = [(t, reader.w_e[t], None) for t in range(VOCAB)]
        mine_vec = getattr(mine, reads)[neuron]
    elif kind.endswith("input"):
        others = [(lp * D_MLP + j, reader.weights[lp].out[j], scale[lp, j]) for lp in range(layer) for j in range(D_MLP)]
        mine_vec = getattr(mine, reads)[neuron]
    else:
        others = [(lp * D_MLP + j, getattr(reader.weights[lp], reads)[j], scale[layer, neuron])
                  for lp in range(layer + 1, N_LAYERS) for j in range(D_MLP)]
        mine_vec = mine.out[neuron]
    for index, vector, size in others:
        weight = float(vector.double() @ mine_vec.double())
        cosine = weight / float(vector.double().norm() * mine_vec.double().norm())
        score = {"virtual_weight": abs(weight), "cosine": abs(cosine),
                 "expected_contribution": abs(weight * float(size)) if size is not None else None}[ranking]
        entries.append((-score, index, weight))
    entries.sort(key=lambda e: (e[0], e[1]))
    return [(index, weight) for _, index, weight in entries[:k]]


@pytest.mark.parametrize("top_k", [2, 4])  # 2: layer 4's inputs (512 rows) take the fast top-k's grouped path
def test_every_list_equals_a_brute_force_loop_with_ties_by_the_lower_index(top_k):
    reader = IntegerReader()
    scale = torch.arange(N_LAYERS * D_MLP).float().reshape(N_LAYERS, D_MLP) % 7  # some zeros: ties in expected
    found = compute_connections(reader, ConnectionInputs(top_k=top_k, scale=scale, embed=True))
    signs = set()
    for (kind, ranking), top in found.lists.items():
        for layer, neuron in [(0, 0), (1, 5), (2, 127), (4, 64), (4, 3)]:
            expected = brute_force(reader, scale, kind, ranking, layer, neuron, top_k)
            others = [o for o in top.other[layer, neuron].tolist() if o != EMPTY]
            assert others == [index for index, _ in expected], (kind, ranking, layer, neuron)
            assert top.weight[layer, neuron, :len(others)].tolist() == pytest.approx([w for _, w in expected])
            signs.update(1 if w > 0 else -1 for _, w in expected)
    assert signs == {1, -1}
    assert (found.lists[("gate_input", "virtual_weight")].other[0] == EMPTY).all()  # layer 0 reads no neuron
    assert (found.lists[("gate_reader", "cosine")].other[-1] == EMPTY).all()  # nobody reads the last layer


def test_fast_top_k_equals_a_sort_on_ties_and_on_distinct_values():
    generator = torch.Generator().manual_seed(1)
    for scores in (torch.randint(0, 4, (6, 4096), generator=generator).float(), torch.rand(6, 4096, generator=generator)):
        for dim in (0, 1):
            lines = scores if dim == 1 else scores.T.contiguous()
            values, positions = top_k_along(scores if dim == 1 else lines.T, 5, dim=dim)
            for row, line in enumerate(lines.tolist()):
                best = sorted(range(len(line)), key=lambda p: (-line[p], p))[:5]
                assert positions[row].tolist() == best
                assert values[row].tolist() == [line[p] for p in best]


def test_a_perturbation_of_the_residual_moves_the_gate_by_the_virtual_weight_over_rms(tiny_models, tmp_path):
    """Add delta * w_out[l', j] (raw, as the model writes it) before layer l's MLP norm with 1/rms held fixed: the gate
    pre-activation of (l, i) moves by delta * virtual weight / rms."""
    from transformers import AutoModelForCausalLM

    from wcos_casestudies.synthetic import tiny_checkpoint

    folder = tiny_checkpoint("llama", tmp_path / "llama3", seed=3, n_layers=3)
    found = compute_connections(open_weights(resolve_model(str(folder))), ConnectionInputs(top_k=3, embed=False))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    layer, neuron, delta = 2, 7, 0.05
    upstream = int(found.lists[("gate_input", "virtual_weight")].other[layer, neuron, 0])
    weight = float(found.lists[("gate_input", "virtual_weight")].weight[layer, neuron, 0])
    up_layer, up_neuron = divmod(upstream, model.config.intermediate_size)
    w_out = model.model.layers[up_layer].mlp.down_proj.weight[:, up_neuron].detach()  # raw [d_model]
    norm = model.model.layers[layer].post_attention_layernorm
    seen = {}

    def rms_of(x):
        return torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)

    def perturb(module, args):
        seen["rms"] = rms_of(args[0])
        return (args[0] + delta * w_out,) if seen.get("on") else None

    def hold_rms(module, args, output):  # the norm's own output, rescaled to the unperturbed 1/rms
        return output * rms_of(args[0]) / seen["rms"] if seen.get("on") else output

    gates = []
    handles = [norm.register_forward_pre_hook(perturb), norm.register_forward_hook(hold_rms),
               model.model.layers[layer].mlp.gate_proj.register_forward_hook(lambda m, a, out: gates.append(out[0, :, neuron]))]
    ids = torch.tensor([[256, 72, 101, 108, 108, 111, 32, 119]])
    with torch.no_grad():
        model(ids)
        rms = seen["rms"][0, :, 0]
        seen["on"] = True
        model(ids)
        rms_with = seen["rms"]
    for handle in handles:
        handle.remove()
    assert rms_with is not None
    torch.testing.assert_close(gates[1] - gates[0], delta * weight / rms, rtol=1e-3, atol=1e-6)


def saved(tmp_path, reader, **identity):
    found = compute_connections(reader, ConnectionInputs(top_k=2, embed=False))
    meta = identity_meta("weights-a", {"processing": "transformer_lens_default", "refactor_glu": False}, 2, None)
    meta.update(identity)
    return save_connections(found, tmp_path / "connections.pt", meta), meta


def test_stale_connections_are_refused(tmp_path):
    path, meta = saved(tmp_path, IntegerReader())
    assert load_connections(path, meta).of(1, 0)["gate_input"]
    for change, match in [({"weights_fingerprint": "weights-b"}, "other weights"), ({"top_k": 3}, "top_k=2"),
                          ({"refactor_glu": True}, "refactor_glu"), ({"statistics_fingerprint": "s"}, "without statistics")]:
        with pytest.raises(UserError, match=match):
            load_connections(path, {**meta, **change})
    path, meta = saved(tmp_path, IntegerReader(), statistics_fingerprint="stats-a")
    with pytest.raises(UserError, match="other statistics"):
        load_connections(path, {**meta, "statistics_fingerprint": "stats-b"})


def test_page_lists_carry_cosines_that_equal_a_direct_computation(tmp_path):
    reader = IntegerReader()
    path, meta = saved(tmp_path, reader)
    lists = load_connections(path, meta).of(3, 9, "cosine")
    entry = lists["linear_reader"][0]
    mine, theirs = reader.weights[3].out[9].double(), reader.weights[entry.layer].lin[entry.neuron].double()
    assert entry.cosine == pytest.approx(float(mine @ theirs / (mine.norm() * theirs.norm())))
    assert entry.layer > 3 and entry.expected_contribution is None


def test_mean_abs_from_a_made_up_histogram():
    edges = torch.tensor([-torch.inf, -2.0, -1.0, 0.0, 1.0, 2.0, torch.inf], dtype=torch.float64)
    histogram = torch.tensor([[[1, 0, 2, 3, 0, 4]]])
    by_hand = (1 * 2.0 + 2 * 0.5 + 3 * 0.5 + 4 * 2.0) / 10
    assert float(mean_abs_from_histogram(histogram, edges)[0, 0]) == pytest.approx(by_hand)


def test_class_table_equals_a_direct_count(tmp_path):
    reader = IntegerReader(seed=2)
    path, meta = saved(tmp_path, reader)
    connections = load_connections(path, meta)
    categories = torch.randint(0, len(CLASS_NAMES), (N_LAYERS, D_MLP), generator=torch.Generator().manual_seed(0))
    table = class_table(connections, categories, seeds=2)
    row = table[(table.kind == "gate_input") & (table.reader_class == CLASS_NAMES[3]) & (table.upstream_class == CLASS_NAMES[5])].iloc[0]
    cosines, total = [], 0
    for layer in range(1, N_LAYERS):
        for neuron in range(D_MLP):
            if categories[layer, neuron] == 3:
                for entry in connections.of(layer, neuron, "cosine")["gate_input"]:
                    total += 1
                    if categories[entry.layer, entry.neuron] == 5:
                        cosines.append(abs(entry.cosine))
    assert row.connections == len(cosines) and row.share == pytest.approx(len(cosines) / total)
    assert row.mean_abs_cosine == pytest.approx(sum(cosines) / len(cosines), rel=1e-5)
    mask = categories == 3
    drawn = same_layer_random_mask(mask, 7)
    assert torch.equal(drawn.sum(dim=1), mask.sum(dim=1)) and not torch.equal(drawn, mask)


@pytest.fixture(scope="module")
def run_tiny(tiny_models, tmp_path_factory):
    results = tmp_path_factory.mktemp("conn_results")
    argv = ["--model", str(tiny_models["llama"]), "--results_dir", str(results), "--device", "cpu", "--top_k", "3",
            "--neurons", "1.5", "0.2"]
    assert run_main(g_connections.main, argv) == 0
    return results / "local" / "llama" / "connections"


def test_cli_writes_the_artifact_the_csv_and_the_class_table(run_tiny, tiny_models):
    import pandas as pd

    folder = run_tiny
    assert {"connections.pt", "connections.csv", "class_connections.csv", "class_connections.png"} <= {p.name for p in folder.iterdir()}
    frame = pd.read_csv(folder / "connections.csv", dtype={"neuron": str, "other": str})
    assert list(frame.columns[:2]) == ["neuron", "kind"] and {"other", "virtual_weight", "cosine"} <= set(frame.columns)
    assert set(frame.neuron) == {"1.5", "0.2"}
    source = resolve_model(str(tiny_models["llama"]))
    found = compute_connections(open_weights(source), ConnectionInputs(top_k=3))
    first = frame[(frame.neuron == "1.5") & (frame.kind == "gate_input") & (frame.rank_by == "virtual_weight")]
    assert first.virtual_weight.tolist() == pytest.approx(found.lists[("gate_input", "virtual_weight")].weight[1, 5].tolist())


def test_bad_input_ends_in_one_line(tiny_models, tmp_path, capsys):
    def fails(argv, match):
        capsys.readouterr()
        out = tmp_path / "out"
        assert run_main(g_connections.main, ["--model", str(tiny_models["llama"]), "--results_dir", str(out), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:") and match in err, err
        assert not (out / "local" / "llama" / "connections").exists()

    fails(["--top_k", "0"], "--top_k 0")
    fails(["--neurons", "9.9"], "out of range")
    fails(["--neurons", "1-17"], "LAYER.NEURON")
    fails(["--activations", "ref"], "give --datadir too")
    fails(["--datadir", str(tmp_path), "--activations", "nope"], "no statistics")
    embedded_statistics = ROOT / "data" / "activations" / "stats.pt"  # SmolLM2's, committed with the project
    if embedded_statistics.is_file():
        fails(["--datadir", str(ROOT / "data"), "--activations", "activations"], "not of local/llama")


@pytest.mark.parametrize("family", ["llama", "gemma2", "olmo"])
def test_embedding_rows_are_what_the_model_adds_to_the_residual_stream(tiny_models, family):
    """reader.embed()[t] against Hugging Face's hidden state before layer 0 (Gemma scales it by sqrt(d_model); a
    LayerNorm model's processing centres it over d_model, which its norms do anyway)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models[family], dtype=torch.float32).eval()
    ids = torch.tensor([[256, 72, 101, 299]])
    with torch.no_grad():
        residual = model(ids, output_hidden_states=True).hidden_states[0][0]
    if family == "olmo":
        residual = residual - residual.mean(dim=-1, keepdim=True)
    w_e = open_weights(resolve_model(str(tiny_models[family])), loader="lowmem").embed()
    torch.testing.assert_close(w_e[ids[0]], residual, rtol=1e-5, atol=1e-5)
