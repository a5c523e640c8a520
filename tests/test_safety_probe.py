"""Data safety of the probe (f_probe.py) and of project-owned output folders (gated_core/output_folders.py): the
probe writes its folder as one unit, under a lock, never through a link or over a folder of the user's or a probe
of another text; non-finite activations end in valid JSON, flagged; text that is not Unicode, and a FIFO, are
refused in one line; links go only to viewers that hold the neuron; a long text's page stays openable.

Hostile command lines end in one `error:` line with the file tree unchanged (`refused`), before the model loads.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import CORPUS_TEXTS, ROOT, call, dataset_args, dump_dom, pass_args, refused, succeeds, visible_text, write_corpus

from gated_core.errors import UserError
from gated_core.fingerprint import content_digest
from gated_core.locks import hold_lock
from gated_core.models.loading import load_tokenizer
from gated_core.models.sources import resolve_model
from gated_core.output_folders import MARKER_NAME, check_output_folder, folder_marker, rewrite_folder
from neuroscope import a_dataset, b_activations, f_probe
from neuroscope.probe import probe
from neuroscope.view.neuron_view import js_call
from neuroscope.view.parts import Packed


@pytest.fixture(scope="module")
def work(tiny_models):
    """The tiny Llama of the tests (2 layers of 96 neurons, byte tokens; the probe needs no statistics)."""
    return {"model": tiny_models["llama"]}

TEXT = "Gated neurons read a direction; the gate decides and the linear input scales."
OTHER = "Gated neurons read a direction; the other text, with the same first six words."
KIND = "test_output"
LEGACY = re.compile(r"old\.txt")
PROBES = Path("local/llama/probe")  # below --results_dir
D_MLP = 96  # the tiny Llama's neurons a layer
BOS = 256  # the tiny tokenizer's <bos>


def probe_args(work, results: Path, *extra) -> list:
    return ["--model", work["model"], "--results_dir", results, "--device", "cpu", *extra]


def probe_json(folder: Path) -> dict:
    return json.loads((folder / "probe.json").read_text(encoding="utf-8"))


def page_payload(folder: Path) -> dict:
    """The payload that probe.html carries (the argument of probe.start), read back from the page."""
    page = (folder / "probe.html").read_text(encoding="utf-8")
    return json.loads(page[page.index("probe.start(") + len("probe.start("):page.rindex(");</script>")])


# ----------------------------------------------------------------------------- gated_core/output_folders.py


def test_output_folder_check_refuses_links_files_and_folders_of_others(tmp_path):
    def refuses(folder, match):
        with pytest.raises(UserError, match=match):
            check_output_folder(folder, KIND, LEGACY, "advice here")

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    refuses(mine, "holds none of its files, only notes.txt")
    (tmp_path / "link").symlink_to(mine)
    refuses(tmp_path / "link", "link is a symbolic link")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    refuses(tmp_path / "dangling" / "below" / "out", "dangling is a symbolic link")  # a missing parent that is a link
    (tmp_path / "file").write_text("x")
    refuses(tmp_path / "file", "not a folder")
    other = tmp_path / "other"
    other.mkdir()
    (other / MARKER_NAME).write_text(json.dumps({"kind": "viewer", "written_by": "x.py", "files": []}))
    refuses(other, "another kind \\('viewer', written by x.py\\)")
    assert folder_marker(other, KIND) is None and folder_marker(other, "viewer") is not None
    for allowed in (tmp_path / "missing", tmp_path / "empty"):
        check_output_folder(allowed, KIND, LEGACY)
        allowed.mkdir()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "old.txt").write_text("what the previous version wrote")
    check_output_folder(legacy, KIND, LEGACY)
    (legacy / "old.txt").unlink()
    (legacy / "old.txt").symlink_to(mine / "notes.txt")  # a legacy name, but a link
    refuses(legacy, "paths that the test_output did not write \\(old.txt\\)")
    with pytest.raises(UserError, match="holds none of its files"):
        check_output_folder(legacy, KIND, None)  # no legacy pattern: nothing without a marker is replaced


def test_rewrite_folder_writes_one_unit_and_refuses_foreign_files(tmp_path):
    folder = tmp_path / "out"
    with rewrite_folder(folder, KIND, {"digest": "abc"}) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".out.") and not folder.exists()
        (staging / "a.txt").write_text("first")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.txt").write_text("first")
    marker = folder_marker(folder, KIND)
    assert marker["digest"] == "abc" and marker["files"] == ["a.txt", "sub", "sub/b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(RuntimeError), rewrite_folder(folder, KIND, {"digest": "def"}) as staging:
        (staging / "a.txt").write_text("second, never finished")
        raise RuntimeError("stopped half-way")
    assert (folder / "a.txt").read_text() == "first" and folder_marker(folder, KIND)["digest"] == "abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the staging folder went with the error
    (folder / "sub" / "yours.txt").write_text("the user's")
    with pytest.raises(UserError, match=r"did not write \(sub/yours.txt\)"), rewrite_folder(folder, KIND, {}):
        pass
    (folder / "sub" / "yours.txt").unlink()
    with rewrite_folder(folder, KIND, {"digest": "ghi"}) as staging:
        (staging / "c.txt").write_text("third")
    assert sorted(p.name for p in folder.iterdir()) == ["c.txt", MARKER_NAME]  # replaced whole: a.txt and sub went


KILLED_WRITER = """
import sys, time
from pathlib import Path
from gated_core.output_folders import rewrite_folder
with rewrite_folder(Path(sys.argv[1]), "test_output", {"digest": "killed"}) as staging:
    (staging / "a.txt").write_text("half of a second run")
    print("written", flush=True)
    time.sleep(600)
"""


def test_rewrite_folder_after_a_kill(tmp_path):
    """kill -9 inside the block: the old folder stays whole, the staging folder stays behind, and the next run
    removes it (and a folder set aside by a kill between the two renames)."""
    folder = tmp_path / "out"
    with rewrite_folder(folder, KIND, {"digest": "old"}) as staging:
        (staging / "a.txt").write_text("old")
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(folder)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout.readline().strip() == "written"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    left = [p.name for p in tmp_path.iterdir() if p.name != "out"]
    assert len(left) == 1 and re.fullmatch(r"\.out\.[a-z0-9_]{8}\.partial", left[0]), left
    assert (folder / "a.txt").read_text() == "old" and folder_marker(folder, KIND)["digest"] == "old"
    (tmp_path / ".out.abcdefgh.replaced").mkdir()  # as replace_folder leaves it when killed between its renames
    with rewrite_folder(folder, KIND, {"digest": "new"}) as staging:
        (staging / "a.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (folder / "a.txt").read_text() == "new"


# ----------------------------------------------------------------------------- the probe's folder


def test_probe_never_writes_through_a_link_nor_into_a_folder_of_the_users(work, tmp_path):
    results = tmp_path / "results"
    probes = results / PROBES
    probes.mkdir(parents=True)
    users = tmp_path / "users"
    users.mkdir()
    (users / "probe.json").write_text('{"mine": true}')
    (users / "probe.html").write_text("<p>mine</p>")
    (probes / "linked").symlink_to(users)
    refused(f_probe.main, probe_args(work, results, "--text", TEXT, "--name", "linked"), tmp_path, "is a symbolic link")
    refused(f_probe.main, probe_args(work, results, "--text", TEXT, "--name", "linked", "--overwrite"), tmp_path,
            "is a symbolic link")
    mine = probes / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    refused(f_probe.main, probe_args(work, results, "--text", TEXT, "--name", "mine", "--overwrite"), tmp_path,
            "not a folder of the probe")
    assert (users / "probe.json").read_text() == '{"mine": true}' and (mine / "notes.txt").read_text() == "the user's"
    # the default name, where a link has it: the probe goes beside, and the link's target is untouched
    (probes / probe.default_name(TEXT)).symlink_to(users)
    outcome = succeeds(f_probe.main, probe_args(work, results, "--text", TEXT))
    beside = probes / f"{probe.default_name(TEXT)}-{content_digest([TEXT])[:8]}"
    assert f"goes beside it, to {beside.name}" in outcome.err and probe_json(beside)["meta"]["name"] == beside.name
    assert (users / "probe.json").read_text() == '{"mine": true}'


def test_a_probe_of_another_text_is_refused_or_goes_beside(work, tmp_path):
    results = tmp_path / "results"
    probes = results / PROBES
    succeeds(f_probe.main, probe_args(work, results, "--text", TEXT, "--name", "x", "--neurons", "1.17"))
    marker = folder_marker(probes / "x", "probe")
    assert marker["text_digest"] == content_digest([TEXT]) and marker["files"] == ["probe.html", "probe.json"]
    refused(f_probe.main, probe_args(work, results, "--text", OTHER, "--name", "x"), tmp_path, "a probe of another text")
    succeeds(f_probe.main, probe_args(work, results, "--text", TEXT, "--name", "x", "--neurons", "0.3"))  # the same text
    assert list(probe_json(probes / "x")["neurons"]) == ["0.3"]
    succeeds(f_probe.main, probe_args(work, results, "--text", OTHER, "--name", "x", "--overwrite"))
    assert "".join(probe_json(probes / "x")["tokens"]) == OTHER
    # the default name: the same first words, another text -> beside it, the first one kept
    assert probe.default_name(TEXT) == probe.default_name(OTHER)
    first = probes / probe.default_name(TEXT)
    succeeds(f_probe.main, probe_args(work, results, "--text", TEXT))
    outcome = succeeds(f_probe.main, probe_args(work, results, "--text", OTHER))
    beside = probes / f"{first.name}-{content_digest([OTHER])[:8]}"
    assert "note:" in outcome.err and beside.name in outcome.err
    assert "".join(probe_json(first)["tokens"]) == TEXT and "".join(probe_json(beside)["tokens"]) == OTHER
    succeeds(f_probe.main, probe_args(work, results, "--text", TEXT))  # the same text again: in place, nothing more
    assert sorted(p.name for p in probes.iterdir()) == sorted([first.name, beside.name, "x"])


def test_a_probe_folder_of_the_previous_version_is_replaced_only_as_another_text(work, tmp_path):
    results = tmp_path / "results"
    legacy = results / PROBES / "demo"
    shutil.copytree(ROOT / "results/HuggingFaceTB/SmolLM2-135M-Instruct/probe/demo", legacy)
    (legacy / MARKER_NAME).unlink(missing_ok=True)  # as the previous version wrote it (the committed one is marked)
    (legacy / ".probe.json.abcdefgh.tmp").write_text("left by a killed write of the previous version")
    refused(f_probe.main, probe_args(work, results, "--text", TEXT, "--name", "demo"), tmp_path, "earlier version")
    succeeds(f_probe.main, probe_args(work, results, "--text", TEXT, "--name", "demo", "--overwrite"))
    assert sorted(p.name for p in legacy.iterdir()) == ["probe.html", "probe.json", MARKER_NAME]


def test_the_probe_is_written_as_one_unit_under_a_lock(work, tmp_path, monkeypatch):
    results = tmp_path / "results"
    folder = results / PROBES / "unit"
    argv = probe_args(work, results, "--text", TEXT, "--name", "unit")
    succeeds(f_probe.main, argv)
    before = {name: (folder / name).read_bytes() for name in ("probe.json", "probe.html", MARKER_NAME)}
    with hold_lock(folder):
        assert "is being written by process" in refused(f_probe.main, argv + ["--neurons", "1.17"], tmp_path)
    # what killed runs left beside it goes, under the lock, with the next run
    (folder.parent / ".unit.abcdefgh.partial").mkdir()
    (folder.parent / ".unit.abcdefgh.partial" / "probe.json").write_bytes(b"[" * 1000)
    (folder.parent / ".unit.ijklmnop.replaced").mkdir()

    def fails(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(probe, "probe_html", fails)  # probe.json written, then the page fails
    outcome = call(f_probe.main, argv + ["--neurons", "1.17"])
    assert outcome.code == 2 and "No space left on device" in outcome.err
    assert {name: (folder / name).read_bytes() for name in before} == before  # the old probe, whole
    assert sorted(p.name for p in folder.parent.iterdir()) == ["unit"]  # leftovers and staging gone, lock released
    monkeypatch.undo()
    succeeds(f_probe.main, argv + ["--neurons", "1.17"])
    assert list(probe_json(folder)["neurons"]) == ["1.17"] and list(page_payload(folder)["neurons"]) == ["1.17"]


# ----------------------------------------------------------------------------- the text


def test_text_that_is_not_unicode_and_files_that_are_not_regular(work, tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"ok \xff\xfe")))
    refused(f_probe.main, probe_args(work, results), tmp_path, "stdin: not UTF-8 text (invalid start byte at byte 3)")
    records = tmp_path / "texts.jsonl"
    records.write_text('{"text": "fine"}\n{"text": "lone \\udc80 surrogate"}\n')
    refused(f_probe.main, probe_args(work, results, "--file", records), tmp_path,
            "line 2: not valid Unicode (a lone surrogate U+DC80 at character 5)")
    refused(f_probe.main, probe_args(work, results, "--text", "bytes of argv \udcff"), tmp_path, "lone surrogate U+DCFF")
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    refused(f_probe.main, probe_args(work, results, "--file", fifo), tmp_path, "a FIFO, not a regular file")
    refused(f_probe.main, probe_args(work, results, "--file", tmp_path / "missing.txt"), tmp_path, "no such file")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(TEXT.encode())))
    succeeds(f_probe.main, probe_args(work, results, "--name", "piped"))
    assert "".join(probe_json(results / PROBES / "piped")["tokens"]) == TEXT


# ----------------------------------------------------------------------------- non-finite activations


def hooked(model_folder: Path, ids: list[int], dtype) -> dict[str, torch.Tensor]:
    """g, u, a [layer pos neuron] of one forward pass, from hooks on Hugging Face's own modules."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=dtype).eval()
    found = {}
    for layer, block in enumerate(model.model.layers):
        block.mlp.gate_proj.register_forward_hook(lambda m, i, o, layer=layer: found.__setitem__(("g", layer), o[0]))
        block.mlp.up_proj.register_forward_hook(lambda m, i, o, layer=layer: found.__setitem__(("u", layer), o[0]))
        block.mlp.down_proj.register_forward_pre_hook(lambda m, i, layer=layer: found.__setitem__(("a", layer), i[0][0]))
    with torch.no_grad():
        model(torch.tensor([ids]))
    return {key: torch.stack([found[(key, layer)] for layer in range(2)]).float() for key in ("g", "u", "a")}


def kind(value: float) -> str:
    return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"


@pytest.mark.slow
def test_non_finite_activations_end_in_valid_json_flagged(work, tmp_path):
    """A float16 model whose gate of 1.17 overflows (its first weight 50,000): every value against hooks."""
    from transformers import AutoModelForCausalLM

    hot = tmp_path / "hot"
    model = AutoModelForCausalLM.from_pretrained(work["model"], dtype=torch.float32)
    with torch.no_grad():
        gate = model.model.layers[1].mlp.gate_proj.weight
        gate[17] = 0.0
        gate[17, 0] = 5e4
    model.save_pretrained(hot)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(work["model"] / name, hot / name)
    results = tmp_path / "results"
    outcome = succeeds(f_probe.main, ["--model", hot, "--results_dir", results, "--device", "cpu", "--dtype", "float16",
                                      "--text", TEXT, "--neurons", "1.17", "0.3", "--top", "4", "--name", "hot"])
    folder = results / "local/hot/probe/hot"
    data = probe_json(folder)  # json.loads takes no NaN or Infinity: strict JSON
    ids = load_tokenizer(resolve_model(str(hot)))(TEXT, add_special_tokens=False)["input_ids"]
    direct = hooked(hot, [BOS] + ids, torch.float16)
    direct = {key: values[:, 1:] for key, values in direct.items()}  # BOS left out
    bad = ~(direct["g"].isfinite() & direct["u"].isfinite() & direct["a"].isfinite())  # [layer token neuron]
    a = direct["a"][1, :, 17].tolist()
    assert {kind(v) for v in a if not math.isfinite(v)} >= {"inf", "nan"} and any(map(math.isfinite, a))
    meta = data["meta"]["non_finite"]
    assert meta["count"] == sum(int((~values.isfinite()).sum()) for values in direct.values()) and meta["tokens"] == torch.nonzero(bad.any(dim=2).any(dim=0)).flatten().tolist()
    assert meta["neurons"] == ["1.17"] and "null" in meta["encoding"]
    assert f"note: {meta['count']} non-finite values" in outcome.err
    entry = data["neurons"]["1.17"]
    assert entry["a"] == [v if math.isfinite(v) else None for v in a]
    assert entry["non_finite"]["a"] == {str(t): kind(v) for t, v in enumerate(a) if not math.isfinite(v)}
    assert data["neurons"]["0.3"]["a"] == direct["a"][0, :, 3].tolist() and data["neurons"]["0.3"]["non_finite"] == {}
    for token, row in enumerate(data["top"]):  # NaN never ranks, ±inf first and flagged (float16: ties by |a|)
        every = {f"{layer}.{n}": v for layer in range(2) for n, v in enumerate(direct["a"][layer, token].tolist())}
        sizes = sorted((abs(v) for v in every.values() if not math.isnan(v)), reverse=True)[:4]
        assert len(row) == 4 and [abs(every[entry[0]]) for entry in row] == sizes
        assert all(entry[1:] == ([every[entry[0]]] if math.isfinite(every[entry[0]]) else [None, kind(every[entry[0]])])
                   for entry in row)
    first = data["text_top"][0]
    assert first["neuron"] == "1.17" and first["a"] is None and first["non_finite"] == "inf" and a[first["token"]] == math.inf
    # the page colours by 1.17 alone: its strongest token, picked, is one of ±inf
    succeeds(f_probe.main, ["--model", hot, "--results_dir", results, "--device", "cpu", "--dtype", "float16",
                            "--text", TEXT, "--neurons", "1.17", "--name", "hot1"])
    dom = dump_dom(results / "local/hot/probe/hot1/probe.html")
    assert len(re.findall(r'class="t nonfinite[ "]', dom)) == len(meta["tokens"])
    assert re.search(r"1\.17: a = -?inf ·", visible_text(dom)) and "= inf (non-finite)" in visible_text(dom)


# ----------------------------------------------------------------------------- links and long texts


def fake_viewer(pages: Path, name: str, neurons: list[tuple[int, int]]) -> None:
    """A viewer's page, meta and index (as viewer.py writes them) holding `neurons`."""
    data = pages / name / "data"
    data.mkdir(parents=True)
    (pages / name / "viewer.html").write_text("<!DOCTYPE html><title>viewer</title>")
    layers = sorted({layer for layer, _ in neurons})
    (data / "meta.js").write_text(js_call("meta", {"d_mlp": D_MLP, "layers": layers}))
    (data / "index.js").write_text(js_call("index", {"ids": Packed.of([layer * D_MLP + n for layer, n in neurons], "i4")}))
    for layer in layers:
        (data / f"layer_{layer}.js").write_text(f"neuroscope.layer({layer}, {{}});\n")


def test_links_go_only_to_viewers_that_hold_the_neuron(work, tmp_path):
    results = tmp_path / "results"
    pages = results / "local/llama/neuroscope"
    fake_viewer(pages, "sub", [(1, n) for n in range(70)])  # 1.0-1.69
    fake_viewer(pages, "cut", [])  # a viewer cut short: its index holds nothing
    (pages / "broken" / "data").mkdir(parents=True)
    (pages / "broken" / "viewer.html").write_text("<!DOCTYPE html>")
    (pages / "broken" / "data" / "layer_1.js").write_text("neuroscope.layer(1, {});\n")  # no index at all
    argv = probe_args(work, results, "--text", TEXT, "--neurons", "1.5", "1.90", "0.3", "--name", "links")
    succeeds(f_probe.main, argv)
    links = probe_json(results / PROBES / "links")["links"]
    assert links["1.5"] == "../../neuroscope/sub/viewer.html#1.5" and "1.90" not in links and "0.3" not in links
    fake_viewer(pages, "whole", [(layer, n) for layer in range(2) for n in range(D_MLP)])
    succeeds(f_probe.main, argv)
    links = probe_json(results / PROBES / "links")["links"]
    assert links["1.5"].startswith("../../neuroscope/sub/") and links["1.90"] == "../../neuroscope/whole/viewer.html#1.90"
    assert links["0.3"] == "../../neuroscope/whole/viewer.html#0.3"


@pytest.mark.slow
def test_a_long_texts_page_shows_windows_and_says_so(work, tmp_path, monkeypatch):
    """A page of at most 400 tokens (PAGE_MAX_TOKENS made small): probe.json holds every token, the page the windows
    around the strongest tokens and the start, the same values for the same tokens."""
    monkeypatch.setattr(probe, "PAGE_MAX_TOKENS", 400)
    text = " ".join(CORPUS_TEXTS) * 5  # byte tokens: about 2,400
    results = tmp_path / "results"
    outcome = succeeds(f_probe.main, probe_args(work, results, "--text", text, "--neurons", "1.17", "--top", "3",
                                                "--name", "long"))
    folder = results / PROBES / "long"
    data, shown = probe_json(folder), page_payload(folder)
    assert len(data["tokens"]) == len(text.encode()) and "".join(data["tokens"]) == text
    page = data["meta"]["page"]
    assert page == shown["meta"]["page"] and page["tokens"] == 400 and not page["complete"]
    assert "probe.html shows 400 of them" in outcome.err and "probe.json holds every value" in page["note"]
    positions = [t for start, stop in page["ranges"] for t in range(start, stop)]
    assert positions == sorted(set(positions)) and len(positions) == 400
    assert shown["tokens"] == [data["tokens"][t] for t in positions] and shown["top"] == [data["top"][t] for t in positions]
    assert shown["neurons"]["1.17"]["a"] == [data["neurons"]["1.17"]["a"][t] for t in positions]
    a = data["neurons"]["1.17"]["a"]
    strongest = max(range(len(a)), key=lambda t: abs(a[t]))
    wanted = {row["token"] for row in data["text_top"]} | {strongest} | set(range(10))  # windows, then the start
    assert wanted <= set(positions)
    dom = dump_dom(folder / "probe.html")
    visible = visible_text(dom)
    assert "This page: the text has" in visible and "tokens not on this page" in visible
    assert len(re.findall(r'class="t( picked)?"', dom)) == 400 and f"Token {strongest}:" in visible


def test_probe_on_statistics_without_typical_examples(work, tmp_path):
    datadir = tmp_path / "data"
    corpus = write_corpus(tmp_path / "corpus.jsonl", CORPUS_TEXTS)
    succeeds(a_dataset.main, dataset_args(datadir, "docs", corpus, work["model"]))
    succeeds(b_activations.main, pass_args(work["model"], datadir, "acts0", "--typical_per_band", "0"))
    results = tmp_path / "results"
    succeeds(f_probe.main, probe_args(work, results, "--text", TEXT, "--neurons", "1.17", "--datadir", datadir,
                                      "--activations", "acts0", "--name", "typical0"))
    data = probe_json(results / PROBES / "typical0")
    assert data["meta"]["dataset"] == "docs" and len(data["neurons"]["1.17"]["percentile"]) == len(TEXT)
