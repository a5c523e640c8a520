"""The probe (f_probe.py): its g, u and a against an independent Hugging Face forward hook, its top lists against
every activation, percentiles by hand on a made-up histogram, hostile text escaped, windows of a long text against
direct runs of each window, and bad input in one line before the model loads."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from helpers import PASS_TEXTS, dump_dom, run_pass, visible_text

from gated_core.artifacts import load_artifact
from gated_core.cli import run_main
from gated_core.models.loading import load_tokenizer
from gated_core.models.sources import resolve_model
from neuroscope import f_probe
from neuroscope.activation_pass.store import Statistics
from neuroscope.core.histogram import histogram_bins, histogram_edges
from neuroscope.data.dataset_store import save_dataset
from neuroscope.data.tokenization import build_dataset
from neuroscope.probe.probe import default_name, histogram_percentiles
from neuroscope.view.neuron_view import js_call
from neuroscope.view.parts import Packed
from wcos_casestudies.constants import CLASS_WORDS
from wcos_casestudies.results import ModelResults, Settings

BOS = 256  # the tiny tokenizer's <bos>
TEXT = "Gated neurons read a direction; the gate decides and the linear input scales."
HOSTILE = "<script>alert(1)</script> & <b>bold</b> stays text"


@pytest.fixture(scope="module")
def probe_setup(tiny_models, tmp_path_factory):
    """A tiny Llama (2 layers, 96 neurons, context 2048), a dataset of the test texts and the statistics of its pass."""
    import datasets

    folder = tiny_models["llama"]
    source = resolve_model(str(folder))
    datadir = tmp_path_factory.mktemp("probe")
    dataset, meta = build_dataset(datasets.Dataset.from_dict({"text": PASS_TEXTS}), load_tokenizer(source), None, max_length=48)
    meta.update({"tokenizer": source.name, "dataset": "test"})
    save_dataset(dataset, meta, datadir / "data")
    assert run_pass(folder, datadir, "ref") == 0
    return {"model": folder, "source": source, "datadir": datadir,
            "stats": Statistics.from_file(load_artifact(datadir / "ref" / "stats.pt"))}


def probe(setup, results, *extra):
    argv = ["--model", str(setup["model"]), "--results_dir", str(results), "--device", "cpu", *extra]
    assert run_main(f_probe.main, argv) == 0
    return results / "local" / "llama" / "probe"


def hooked_run(model_folder, ids):
    """g, u, a [layer pos neuron] of one forward pass of the token ids, from hooks on Hugging Face's own modules."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32).eval()
    found = {}

    def keep(key, layer, pre=False):
        if pre:
            return lambda module, inputs: found.__setitem__((key, layer), inputs[0][0])
        return lambda module, inputs, output: found.__setitem__((key, layer), output[0])

    handles = []
    for layer, block in enumerate(model.model.layers):
        handles.append(block.mlp.gate_proj.register_forward_hook(keep("g", layer)))
        handles.append(block.mlp.up_proj.register_forward_hook(keep("u", layer)))
        handles.append(block.mlp.down_proj.register_forward_pre_hook(keep("a", layer, pre=True)))
    with torch.no_grad():
        model(torch.tensor([ids]))
    for handle in handles:
        handle.remove()
    layers = len(model.model.layers)
    return {key: torch.stack([found[(key, layer)] for layer in range(layers)]) for key in ("g", "u", "a")}


def percentile_by_hand(counts, value):
    """The percentile of `value` in a histogram over the bins of histogram_edges(), the bin found edge by edge."""
    edges = histogram_edges().tolist()
    bins = list(zip(edges[:-1], edges[1:]))
    index = next(i for i, (low, high) in enumerate(bins)
                 if ((low < value <= high) if high <= 0 and value < 0 else (low <= value < high and value >= 0)))
    return 100 * (sum(counts[:index]) + counts[index] / 2) / sum(counts)


def test_values_and_top_lists_equal_a_hugging_face_hook(probe_setup, tmp_path):
    folder = probe(probe_setup, tmp_path, "--text", TEXT, "--neurons", "1.17", "0.3", "--top", "4", "--datadir",
                   str(probe_setup["datadir"]), "--activations", "ref", "--name", "check")
    data = json.loads((folder / "check" / "probe.json").read_text())
    ids = load_tokenizer(probe_setup["source"])(TEXT, add_special_tokens=False)["input_ids"]
    direct = hooked_run(probe_setup["model"], [BOS] + ids)
    assert len(data["tokens"]) == len(ids) and "".join(data["tokens"]) == TEXT
    for name in ("1.17", "0.3"):
        layer, neuron = map(int, name.split("."))
        for key in ("g", "u", "a"):
            assert data["neurons"][name][key] == direct[key][layer, 1:, neuron].tolist(), (name, key)  # exactly equal
    a = direct["a"][:, 1:, :]  # [layer token neuron], BOS left out
    stats = probe_setup["stats"]
    peak = np.maximum(np.abs(stats.top_values[..., 0].float().numpy()), np.abs(stats.bottom_values[..., 0].float().numpy()))
    for token, row in enumerate(data["top"]):  # with the statistics: ranked by |a| over the neuron's largest |a| on them
        every = sorted(((float(np.float32(abs(v)) / peak[layer, n]), f"{layer}.{n}", v) for layer in range(2)
                        for n, v in enumerate(a[layer, token].tolist())), reverse=True)
        by_name = {name: [name, value, strength] for strength, name, value in every}
        assert [entry[2] for entry in row] == [strength for strength, _, _ in every[:4]]  # the 4 strongest (ties in any order)
        assert all(entry == by_name[entry[0]] for entry in row)
    histogram = probe_setup["stats"].histogram
    for name in ("1.17", "0.3"):
        layer, neuron = map(int, name.split("."))
        counts = histogram[layer, neuron].tolist()
        wanted = [percentile_by_hand(counts, v) for v in data["neurons"][name]["a"]]
        assert data["neurons"][name]["percentile"] == pytest.approx(wanted, abs=1e-9)
    best = a.max(dim=1).values  # [layer neuron]
    every = [percentile_by_hand(histogram[layer, n].tolist(), float(best[layer, n])) for layer in range(2) for n in range(96)]
    first = data["text_top"][0]
    assert first["percentile"] == pytest.approx(max(every), abs=1e-9) and len(data["text_top"]) == 4
    assert first["a"] == float(best[tuple(map(int, first["neuron"].split(".")))])
    assert data["meta"]["dataset"] == "data" and data["links"] == {}


def test_percentiles_by_hand_on_a_made_up_histogram():
    edges = histogram_edges()
    bin_of = {value: int(torch.nonzero(edges == value)[0]) for value in (1.0, 2.0)}
    bin_of[-0.5] = int(torch.nonzero(edges == -0.5)[0]) - 1  # negative values: (low, high], this bin ends at -0.5
    counts = torch.zeros(histogram_bins(), dtype=torch.int64)
    counts[bin_of[1.0]], counts[bin_of[2.0]], counts[bin_of[-0.5]] = 10, 30, 60  # 100 values: 60 at -0.5, 10 at 1, 30 at 2
    values = torch.tensor([1.1, 2.0, 100.0, -3.0, -0.55, 1.0, 0.0])
    # below the value's bin, plus half of its bin: 60 + 5, 60 + 10 + 15, all, none, half of 60, 60 + 5, 60 (the bin at 0 is empty)
    expected = [65.0, 85.0, 100.0, 0.0, 30.0, 65.0, 60.0]
    assert histogram_percentiles(counts, values).tolist() == expected
    both = histogram_percentiles(torch.stack([counts, counts.flip(0)]), torch.stack([values, -values]))  # [2 bins], [2 n]
    assert both[0].tolist() == expected
    assert both[1].tolist() == pytest.approx([100 - p for p in expected][:5] + [100 - 65.0, 100 - 60.0])
    assert torch.isnan(histogram_percentiles(torch.zeros(histogram_bins(), dtype=torch.int64), values)).all()


@pytest.mark.slow
def test_hostile_text_is_escaped_and_links_go_to_the_viewer(probe_setup, tmp_path):
    viewer = tmp_path / "local" / "llama" / "neuroscope" / "viewer" / "viewer.html"
    viewer.parent.mkdir(parents=True)
    viewer.write_text("<!DOCTYPE html><title>viewer</title>")
    (viewer.parent / "data").mkdir()
    (viewer.parent / "data" / "layer_1.js").write_text("neuroscope.layer(1, {});\n")
    # links go to viewers that hold the neuron, by their meta and index (96 neurons a layer)
    (viewer.parent / "data" / "meta.js").write_text(js_call("meta", {"d_mlp": 96, "layers": [1]}))
    (viewer.parent / "data" / "index.js").write_text(js_call("index", {"ids": Packed.of([96 + 4, 96 + 5], "i4")}))
    folder = probe(probe_setup, tmp_path, "--text", HOSTILE, "--neurons", "1.5", "--top", "3") / default_name(HOSTILE)
    assert default_name(HOSTILE) == "script-alert-1-script-b-bold"
    page = (folder / "probe.html").read_text()
    assert "<script>alert" not in page and "<b>bold" not in page and page.count("</script>") == 1
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|(src|href)\s*=\s*[\"'](https?:|//)", page, re.I)
    data = json.loads((folder / "probe.json").read_text())
    assert data["links"]["1.5"] == "../../neuroscope/viewer/viewer.html#1.5"
    assert (folder / data["links"]["1.5"].partition("#")[0]).resolve() == viewer.resolve()
    dom = dump_dom(folder / "probe.html")
    visible = visible_text(dom)
    assert HOSTILE in visible and "<script>alert" not in dom and "<b>" not in dom  # the markup stayed text
    assert "Probe · " + default_name(HOSTILE) in visible and "colour by neuron" in visible
    assert "Neurons with the largest a on this text" in visible and 'href="../../neuroscope/viewer/viewer.html#1.5"' in dom
    assert len(re.findall(r'class="t( picked)?"', dom)) == len(data["tokens"]) and "rgb(" in dom and 'class="t picked"' in dom


def test_long_text_runs_in_windows_like_direct_runs(probe_setup, tmp_path, capsys):
    text = " ".join(PASS_TEXTS) * 4  # byte tokens: more than the tiny model's context of 2048
    ids = load_tokenizer(probe_setup["source"])(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 2048
    folder = probe(probe_setup, tmp_path, "--text", text, "--neurons", "1.17", "--name", "long")
    assert "windows" in capsys.readouterr().err
    data = json.loads((folder / "long" / "probe.json").read_text())
    assert data["meta"]["windows"] == [[0, 2047], [2047, len(ids)]] and len(data["neurons"]["1.17"]["a"]) == len(ids)
    for start, stop in data["meta"]["windows"]:
        direct = hooked_run(probe_setup["model"], [BOS] + ids[start:stop])
        assert data["neurons"]["1.17"]["a"][start:stop] == direct["a"][1, 1:, 17].tolist()
    # a .jsonl file: one document per record, each in windows of its own (here of 6 tokens and BOS)
    records = tmp_path / "texts.jsonl"
    records.write_text("\n".join(json.dumps({"text": t}) for t in PASS_TEXTS[:3]) + "\n")
    folder = probe(probe_setup, tmp_path, "--file", str(records), "--neurons", "0.3", "--window_tokens", "7", "--name", "docs")
    data = json.loads((folder / "docs" / "probe.json").read_text())
    tokenizer = load_tokenizer(probe_setup["source"])
    for document, (first, stop) in enumerate(zip(data["meta"]["documents"][:-1], data["meta"]["documents"][1:])):
        doc_ids = tokenizer(PASS_TEXTS[document], add_special_tokens=False)["input_ids"]
        assert stop - first == len(doc_ids)
        for start in range(first, stop, 6):
            direct = hooked_run(probe_setup["model"], [BOS] + doc_ids[start - first:start - first + 6])
            assert data["neurons"]["0.3"]["a"][start:min(start + 6, stop)] == direct["a"][0, 1:, 3].tolist()


def test_bad_input_ends_in_one_line_before_the_model_loads(probe_setup, tmp_path, capsys):
    stats = ["--datadir", str(probe_setup["datadir"]), "--activations", "ref"]

    def fails(argv, match, model=None):
        capsys.readouterr()
        assert run_main(f_probe.main, ["--model", model or str(probe_setup["model"]), "--results_dir", str(tmp_path / "out"),
                                       "--device", "cpu", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:") and match in err, err
        assert not (tmp_path / "out").exists()

    fails(["--text", "  \n "], "the text is empty")
    fails(["--text", TEXT, "--neurons", "9.9"], "out of range")
    fails(["--text", TEXT, "--neurons", "1-17"], "LAYER.NEURON")
    fails(["--text", TEXT, *stats], "statistics of local/llama", model="smollm2-135m")
    fails(["--text", TEXT, "--activations", "ref"], "give --datadir too")
    fails(["--text", TEXT, "--datadir", str(probe_setup["datadir"]), "--activations", "nope"], "no statistics")
    fails(["--text", TEXT, "--layers", "5"], "--layers 5: out of range")
    fails(["--text", TEXT, "--classes", "nonsense"], "unknown IO class")
    fails(["--file", str(tmp_path / "text.csv")], ".txt file or a .jsonl file")
    fails(["--file", str(tmp_path / "missing.txt")], "no such file")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"txt": "no text field"}\n')
    fails(["--file", str(broken)], "line 2: no \"text\" field")


def test_filters_keep_the_top_lists_to_their_neurons(probe_setup, tmp_path):
    categories = ModelResults(probe_setup["source"], Settings(), root=tmp_path).categories()
    code = int(torch.mode(categories[1]).values)  # the commonest class of layer 1
    folder = probe(probe_setup, tmp_path, "--text", TEXT, "--layers", "1", "--classes", CLASS_WORDS[code], "--top", "3",
                   "--name", "filtered")
    data = json.loads((folder / "filtered" / "probe.json").read_text())
    names = {name for row in data["top"] for name, _ in row} | {row["neuron"] for row in data["text_top"]}
    assert names and all(name.startswith("1.") and int(categories[1, int(name[2:])]) == code for name in names)
    assert data["neurons"] == {} and data["meta"]["filters"] == {"layers": [1], "classes": [CLASS_WORDS[code]], "roles": []}


def test_text_from_stdin_and_neurons_from_a_file(probe_setup, tmp_path, monkeypatch):
    import io

    names = tmp_path / "neurons.txt"
    names.write_text("1.17 0.3\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(TEXT))
    folder = probe(probe_setup, tmp_path, "--neurons_from", str(names)) / default_name(TEXT)
    data = json.loads((folder / "probe.json").read_text())
    assert "".join(data["tokens"]) == TEXT and sorted(data["neurons"]) == ["0.3", "1.17"]
    assert folder.name == "gated-neurons-read-a-direction-the"


# ---- the notebook's probe (neuroscope/probe/notebook.py): probe_text, token_colour, coloured_html

def test_probe_text_equals_probe_pass_and_a_hook(probe_setup, tmp_path):
    from gated_core.errors import UserError
    from gated_core.models.loading import load_hf_model
    from neuroscope.probe.notebook import probe_text
    from neuroscope.probe.probe import ProbeRequest, open_probe, probe_pass
    from neuroscope.view.neuron_view import token_texts

    model, tokenizer = load_hf_model(probe_setup["source"])
    found = probe_text(model, tokenizer, TEXT, ["1.17", " 0.3"])
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert found.tokens == token_texts(tokenizer, ids) and sorted(found.neurons) == ["0.3", "1.17"]
    run = open_probe(ProbeRequest(model=str(probe_setup["model"]), documents=[TEXT], settings=Settings(),
                                  results_dir=tmp_path, neurons=["1.17", "0.3"], device="cpu"))
    passed = probe_pass(run, model)
    direct = hooked_run(probe_setup["model"], [BOS] + ids)
    for (layer, neuron), values in passed.chosen.items():
        for key in ("g", "u", "a"):
            assert torch.equal(found.neurons[f"{layer}.{neuron}"][key], values[key]), (layer, neuron, key)
            assert found.neurons[f"{layer}.{neuron}"][key].tolist() == direct[key][layer, 1:, neuron].tolist()
    for names, match in ((["1-17"], "LAYER.NEURON"), (["2.0"], "out of range"), ([], "no neuron given")):
        with pytest.raises(UserError, match=match):
            probe_text(model, tokenizer, TEXT, names)
    with pytest.raises(UserError, match="the text is empty"):
        probe_text(model, tokenizer, " \n", ["1.17"])


def test_token_colour_is_the_viewers_scale():
    import shutil
    import subprocess

    from neuroscope.probe.notebook import token_colour
    from neuroscope.view.html import ASSETS

    assert token_colour(0.0, 2.0) == "rgb(255,255,255)" and token_colour(1.0, 0.0) == "rgb(255,255,255)"
    assert token_colour(2.0, 2.0) == "rgb(255,0,0)" and token_colour(-7.0, 2.0) == "rgb(0,0,255)"  # clamped
    assert token_colour(0.5, 1.0) == "rgb(255,128,128)" and token_colour(-0.5, 1.0) == "rgb(128,128,255)"  # 127.5 up
    cases = [(value / 8, scale) for value in range(-20, 21) for scale in (0.0, 0.3, 1.0, 2.5)] + [(1e-9, 1e-9)]
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: draw.colour not compared")
    script = (ASSETS / "common.js").read_text(encoding="utf-8") + (
        f"\nconsole.log(JSON.stringify({json.dumps(cases)}.map(function (c) {{ return draw.colour(c[0], c[1]); }})));")
    colours = json.loads(subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60, check=True).stdout)
    assert [token_colour(value, scale) for value, scale in cases] == colours


def test_coloured_html_escapes_and_colours_the_strongest_token_fully():
    from neuroscope.probe.notebook import coloured_html

    tokens = ["<script>", "alert(1)", "</script>", " & <b>", "\n", ""]
    a, g, u = [0.5, -2.0, 1.0, 0.001, 0.0, 2.0 - 1e-9], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [-1.0, -2.0, 0.25, 0.5, 0.0, 1.0]
    page = coloured_html(tokens, torch.tensor(a), g, u)
    assert "<script>" not in page and "</script>" not in page and "<b>" not in page
    spans = re.findall(r'<span class="t" title="([^"]*)"( style="background:([^"]*)")?>([^<]*)</span>', page)
    assert [text for *_, text in spans] == ["&lt;script&gt;", "alert(1)", "&lt;/script&gt;", " &amp; &lt;b&gt;", "⏎\n", "∅"]
    assert spans[1][2] == "rgb(0,0,255)" and spans[2][2] == "rgb(255,128,128)" and spans[0][2] == "rgb(255,191,191)"
    assert spans[3][1] == "" and spans[4][1] == ""  # (almost) zero: no colour, as on the pages
    assert "a -2 · g 2 · u -2" in spans[1][0] and "&quot;&lt;script&gt;&quot;" in spans[0][0]
    page = coloured_html(["x", "y"], [3.0, -1.0], [1.0, 1.0], [3.0, -1.0])
    assert 'style="background:rgb(255,0,0)">x<' in page
