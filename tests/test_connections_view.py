"""The connections in pages and the viewer: what their data carries equals the reader's lists (`Connections.of`,
entry by entry), headless Chromium draws them with links to the connected neurons, and a stale connections.pt is
left out with a note, not shown."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest
import torch
from helpers import dump_dom, read_call, unpack

from gated_core.artifacts import load_artifact, save_artifact
from gated_core.cli import run_main
from neuroscope import d_recompute_vis, g_connections
from neuroscope.view.neuron_view import CONNECTIONS_SHOWN
from wcos_casestudies.connections import INPUT_KINDS, KINDS

LAYER = 1


@pytest.fixture(scope="module")
def connected(viewer, tmp_path_factory):  # noqa: F811
    """Connections of the tiny Llama (with the viewer fixture's statistics), then a viewer of every neuron and the
    page of one neuron, all in one results folder."""
    results = tmp_path_factory.mktemp("connected")
    common = ["--model", str(viewer["source"].path), "--results_dir", str(results), "--device", "cpu",
              "--datadir", str(viewer["pages"].parents[3]), "--activations", "ref"]
    assert run_main(g_connections.main, [*common, "--top_k", "12"]) == 0
    neuron = int(torch.argmax(viewer["stats"]["top_values"][LAYER, :, 0]))
    assert run_main(d_recompute_vis.main, [*common, "--neurons", "all", "--viewer", "all"]) == 0
    assert run_main(d_recompute_vis.main, [*common, "--neurons", f"{LAYER}.{neuron}"]) == 0
    folder = results / "local" / "llama"
    return {"folder": folder, "neuron": neuron, "connections": folder / "connections" / "connections.pt", "common": common}


def expected_lists(connected):
    from wcos_casestudies.connections_store import Connections

    lists = Connections(load_artifact(connected["connections"]))
    by_kind = {}
    for ranking in ("expected_contribution", "virtual_weight"):
        for kind, entries in lists.of(LAYER, connected["neuron"], ranking).items():
            if (ranking == "expected_contribution") == (kind in INPUT_KINDS):
                by_kind[kind] = entries[:CONNECTIONS_SHOWN]
    return by_kind, lists.d_mlp


def test_view_data_equals_the_lists_of_the_reader(connected):
    by_kind, d_mlp = expected_lists(connected)
    _, (_, data) = read_call(connected["folder"] / "neuroscope" / "all" / "data" / f"layer_{LAYER}.js")
    column = list(unpack(data["neurons"])).index(connected["neuron"])
    part = data["connections"]
    assert part["inputs_by"] == "expected_contribution" and list(part["kinds"]) == list(KINDS)
    shown = part["shown"]
    for kind, entries in by_kind.items():
        got = part["kinds"][kind]
        others = unpack(got["other"])[column * shown:(column + 1) * shown]
        want = [e.token if e.token is not None else e.layer * d_mlp + e.neuron for e in entries]
        assert others[:len(want)].tolist() == want and (others[len(want):] == -1).all(), kind
        for name, attribute in (("virtual_weight", "virtual_weight"), ("cosine", "cosine"), ("expected", "expected_contribution")):
            if attribute == "expected_contribution" and kind.endswith("embed"):
                assert name not in got
                continue
            values = unpack(got[name]).astype(np.float32)[column * shown:column * shown + len(want)]
            np.testing.assert_allclose(values, [getattr(e, attribute) for e in entries], rtol=2e-3, atol=1e-4)
    assert sum(len(entries) for entries in by_kind.values()) > 20


@pytest.mark.slow
def test_viewer_and_page_draw_the_connections(connected, tmp_path):
    by_kind, _ = expected_lists(connected)
    neuron = connected["neuron"]
    pages = connected["folder"] / "neuroscope"
    for dom, link in ((dump_dom(f"{(pages / 'all' / 'viewer.html').as_uri()}#{LAYER}.{neuron}"), "#{}"),
                      (dump_dom((pages / f"L{LAYER}" / f"N{neuron}" / "vis.html").as_uri()), None)):
        assert f">Neuron {LAYER}.{neuron}<" in dom and 'id="connections"' in dom
        for kind, entries in by_kind.items():
            section = re.search(rf'id="connections-{kind}">(.*?)</div>', dom, re.S).group(1)
            names = re.findall(r"<li[^>]*><(?:a|span|code)[^>]*>([^<]*)<", section)
            assert [html.unescape(n) for n in names] == [e.other if e.token is None else html.unescape(names[i])
                                                         for i, e in enumerate(entries)], kind
            if link and kind in INPUT_KINDS:  # every neuron is in this viewer: each links to its view
                assert all(f'href="{link.format(e.other)}"' in section for e in entries)
        assert "expected contribution" in dom


@pytest.mark.slow
def test_stale_connections_are_left_out_with_a_note(connected, tmp_path, capsys):
    data = load_artifact(connected["connections"])
    data["meta"]["statistics_fingerprint"] = "statistics of another dataset"
    save_artifact(data, connected["connections"])
    capsys.readouterr()
    neuron = connected["neuron"]
    assert run_main(d_recompute_vis.main, [*connected["common"], "--neurons", f"{LAYER}.{neuron}"]) == 0
    assert "warning: connections not shown" in capsys.readouterr().err
    dom = dump_dom((connected["folder"] / "neuroscope" / f"L{LAYER}" / f"N{neuron}" / "vis.html").as_uri())
    assert "connections.pt is stale" in dom and "no connections here" in dom and 'id="connections-gate_input"' not in dom
