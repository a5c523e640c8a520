"""`main.py` end to end: outputs, reuse, the published comparison, and every bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from gated_core.artifacts import load_artifact
from gated_core.cli import run_main
from gated_core.models.readers import open_weights
from gated_core.models.sources import ModelSource, resolve_model
from wcos_casestudies import main as main_script
from wcos_casestudies import section5
from wcos_casestudies.constants import CLASS_NAMES
from wcos_casestudies.reference import published_counts
from wcos_casestudies.results import ModelResults, Settings
from wcos_casestudies.utils import category_stats, classify, model_cosines

ALL_FLAGS = ["--categories", "--category_stats", "--quartiles", "--plot_fine", "--plot_coarse",
             "--plot_quartiles", "--plot_all_medians"]


def _run(argv, capsys):
    code = run_main(main_script.main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def test_all_flags_on_tiny_checkpoint(tiny_models, tmp_path, capsys):
    results = tmp_path / "results"
    code, out, err = _run(ALL_FLAGS + ["--model", str(tiny_models["llama"]), "--results_dir", str(results),
                                       "--device", "cpu"], capsys)
    assert code == 0, err
    folder = results / "local" / "llama"
    for name in ("data.pt", "category_stats.csv", "category_stats.md", "quartiles.csv", "fine.pdf", "fine.png",
                 "coarse.pdf", "coarse.png", "boxplot.pdf", "boxplot.png"):
        assert (folder / name).stat().st_size > 0, name
    assert (results / "medians.pdf").exists() and (results / "medians.png").exists()
    data = load_artifact(folder / "data.pt")
    meta = data["meta"]
    assert meta["model"] == "local/llama" and meta["processing"] == "transformer_lens_default"
    assert meta["rule"] == "corrected" and meta["threshold"] == 0.5 and not meta["gguf"]
    assert "torch" in meta["versions"] and meta["loader"] == "lowmem"
    # stored numbers equal an independent computation through TransformerLens
    reader = open_weights(resolve_model(str(tiny_models["llama"])), loader="tl")
    cos = model_cosines(reader.layers(), reader.arch.n_layers)
    assert torch.allclose(data["linout"], cos["linout"], atol=1e-6)
    expected = category_stats(classify(cos["gatelin"], cos["gateout"], cos["linout"]))
    assert torch.equal(data["category_stats"], expected)
    assert data["quartiles"]["linout"].shape == (5, 2)
    csv_lines = (folder / "category_stats.csv").read_text().splitlines()
    assert csv_lines[0] == "layer," + ",".join(CLASS_NAMES) and len(csv_lines) == 3

    # second run reuses every file it does not need to rewrite
    before = (folder / "data.pt").stat().st_mtime_ns
    code, out, _ = _run(["--categories", "--model", str(tiny_models["llama"]), "--results_dir", str(results)], capsys)
    assert code == 0 and "reused" in out and (folder / "data.pt").stat().st_mtime_ns == before


def test_variants_go_to_their_own_folders(tiny_models, tmp_path, capsys):
    results = tmp_path / "results"
    base = ["--model", str(tiny_models["gemma2"]), "--results_dir", str(results), "--category_stats"]
    assert _run(base, capsys)[0] == 0
    assert _run(base + ["--refactor_glu", "--format", "pickle"], capsys)[0] == 0
    assert _run(base + ["--no_processing", "--legacy_copysign", "--threshold", "0.3"], capsys)[0] == 0
    plain = load_artifact(results / "local/gemma2/data.pt")
    refactored = load_artifact(results / "local/gemma2/refactored/data.pickle")
    other = load_artifact(results / "local/gemma2/raw_legacy_t0.3/data.pt")
    assert refactored["meta"]["refactor_glu"] and (refactored["gatelin"] >= 0).all()
    assert torch.equal(plain["category_stats"], refactored["category_stats"])
    assert other["meta"]["processing"] == "none" and other["meta"]["rule"] == "legacy_copysign"


def test_non_gated_model_classified_by_linout(tiny_models, tmp_path, capsys):
    code, out, err = _run(["--model", str(tiny_models["gpt2"]), "--results_dir", str(tmp_path), "--category_stats",
                           "--quartiles", "--plot_coarse"], capsys)
    assert code == 0, err
    stats = load_artifact(tmp_path / "local/gpt2/data.pt")["category_stats"]
    assert stats[:, [1, 2, 3, 4, 5, 8, 9, 10]].sum() == 0 and stats.sum() == 2 * 96


def test_comparison_with_published_counts(tmp_path, capsys):
    """A source named like a paper model gets the side-by-side table; equal counts give zero differences."""
    hub_id = "meta-llama/Llama-3.2-1B"
    published = published_counts(hub_id)
    results = ModelResults(ModelSource(name=hub_id, path=tmp_path, provenance="test"), Settings(), root=tmp_path)
    section5.compare_with_publication(results, published)
    out = capsys.readouterr().out
    assert "0 of 131072 neurons in a different class" in out
    table = (results.folder / "comparison_published.csv").read_text().splitlines()
    assert len(table) == 1 + 16 * 11 and all(line.endswith(",0") for line in table[1:])


def _assert_user_error(argv, capsys, results, match):
    before = _snapshot(results)
    code, out, err = _run(argv + ["--results_dir", str(results)], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], err
    assert "Traceback" not in err
    assert _snapshot(results) == before, "a bad input changed the results tree"


def test_bad_inputs(tiny_models, tmp_path, capsys):
    results = tmp_path / "results"
    _assert_user_error(["--model", "no-such-model"], capsys, results, "unknown model")
    _assert_user_error(["--model", "meta-llama/Llama-2-7b-hf"], capsys, results, "nor in the Hugging Face cache")
    (tmp_path / "folder").mkdir()
    _assert_user_error(["--model", str(tmp_path / "folder")], capsys, results, "not a model checkpoint")
    _assert_user_error(["--model", str(tiny_models["gpt2"]), "--plot_fine"], capsys, results, "not a gated model")
    for value in ("0", "1", "1.5", "-0.2", "nan"):
        _assert_user_error(["--model", str(tiny_models["llama"]), "--threshold", value], capsys, results, "--threshold")
    _assert_user_error(["--model", str(tiny_models["gpt2"]), "--loader", "lowmem"], capsys, results, "--loader lowmem")


def test_unreadable_artifacts_are_never_recomputed_over(tiny_models, tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["--model", str(tiny_models["qwen2"]), "--category_stats"]
    assert _run(argv + ["--results_dir", str(results)], capsys)[0] == 0
    data = results / "local/qwen2/data.pt"
    data.write_bytes(data.read_bytes()[:200])
    truncated = data.read_bytes()
    _assert_user_error(argv, capsys, results, str(data))
    assert data.read_bytes() == truncated
    data.unlink()
    (data.parent / "data.pickle").write_bytes(b"\x80\x04K\x01.")  # a valid pickle, but not ours
    _assert_user_error(argv, capsys, results, "data.pickle")
    # --overwrite is the way out
    assert _run(argv + ["--results_dir", str(results), "--overwrite"], capsys)[0] == 0
    assert load_artifact(data)["meta"]["model"] == "local/qwen2"


@pytest.mark.slow
def test_embedded_default_from_script_folder(tmp_path):
    """`cd wcos_casestudies; python main.py ...` on the embedded SmolLM2, as a user runs it."""
    proc = subprocess.run([sys.executable, "main.py", *ALL_FLAGS, "--results_dir", str(tmp_path)],
                          cwd=main_script.__file__.rsplit("/", 1)[0], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = tmp_path / "HuggingFaceTB/SmolLM2-135M-Instruct"
    data = load_artifact(folder / "data.pt")
    assert data["meta"]["gguf"] and data["linout"].shape == (30, 1536)
    assert "GGUF" in proc.stdout and "±0.082" in proc.stdout
    assert data["category_stats"].sum() == 30 * 1536
    for name in ("fine.pdf", "coarse.pdf", "boxplot.pdf"):
        assert (folder / name).exists()


@pytest.mark.slow
def test_bad_input_exit_status_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "wcos_casestudies.main", "--model", "28-4737", "--results_dir",
                           str(tmp_path)], cwd=str(main_script.__file__.rsplit("/", 2)[0]), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: unknown model")
    assert list(tmp_path.iterdir()) == []


def test_published_references_cover_the_paper_models():
    from gated_core.models.registry import PAPER_MODELS
    from wcos_casestudies.reference import published_medians

    for hub_id in PAPER_MODELS.values():
        counts, medians = published_counts(hub_id), published_medians(hub_id)
        assert counts is not None and medians is not None, hub_id
        assert counts.shape == (len(medians), 11), hub_id
    assert published_counts("allenai/OLMo-7B-0424-hf").sum(dim=1).unique().tolist() == [11008]
