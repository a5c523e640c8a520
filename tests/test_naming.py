"""The follow-up's class names (`--naming strengthening`, `gated_core.naming`): shown in plots, Markdown tables, printed
lines, pages and the viewer; stored values and file names keep the paper's, so that a run in either naming writes the
same CSV, the same artifacts and the same viewer data."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from helpers import CONTEXT, WINDOW, dump_dom, refused, visible_text
from matplotlib.text import Text

from gated_core.cli import run_main
from gated_core.naming import DEFAULT_NAMING, canonical, naming, naming_in_use, shown, use_naming
from neuroscope import d_recompute_vis
from neuroscope.classes.neuron_sets import parse_class
from wcos_casestudies import main as main_script
from wcos_casestudies.constants import CLASS_NAMES

# the follow-up's names of the paper's 11 classes, in the paper's order (RW_functionalities, weight_analysis_utils)
FOLLOW_UP_NAMES = ("strengthening", "atypical strengthening", "conditional strengthening", "atypical conditional strengthening",
                   "proportional change", "atypical proportional change", "orthogonal output", "weakening",
                   "atypical weakening", "conditional weakening", "atypical conditional weakening")
PAPER_WORDS = ("enrichment", "depletion")


def test_each_class_in_the_follow_ups_words_and_back():
    assert tuple(shown(name, "strengthening") for name in CLASS_NAMES) == FOLLOW_UP_NAMES
    assert tuple(shown(name, "paper") for name in CLASS_NAMES) == CLASS_NAMES
    assert tuple(canonical(name) for name in FOLLOW_UP_NAMES) == CLASS_NAMES
    assert shown("Depletion and ENRICHMENT; conditional_depletion", "strengthening") == \
        "Weakening and STRENGTHENING; conditional_weakening"
    assert shown("a depletions list, enrichmental", "strengthening") == "a depletions list, enrichmental"  # whole words only
    assert shown("weakening of the signal", "paper") == "weakening of the signal"  # the paper's naming leaves text as is
    assert [parse_class(word) for word in ("conditional_weakening", "Conditional Depletion", "strengthening")] == [9, 9, 0]


def test_the_naming_in_use_is_set_for_a_block_or_a_session():
    assert naming() == DEFAULT_NAMING
    with naming_in_use("strengthening"):
        assert shown("depletion") == "weakening"
        use_naming("paper")  # a notebook's setting within a script's block ends with the block
        assert shown("depletion") == "depletion"
    assert naming() == DEFAULT_NAMING
    with pytest.raises(ValueError, match="no naming 'weak'"):
        use_naming("weak")


def test_every_text_of_a_saved_figure_is_in_the_naming(tmp_path):
    from wcos_casestudies.plotting import save_figure

    fig, ax = plt.subplots()
    ax.bar([0, 1], [1, 2], label="conditional depletion")
    ax.set_xticks([0, 1], ["enrichment", "orthogonal output"])
    ax.set_title("classes: depletion")
    ax.legend()
    with naming_in_use("strengthening"):
        save_figure(fig, tmp_path / "plot", formats=("png",))
    texts = " ".join(t.get_text() for t in fig.findobj(Text))
    plt.close(fig)
    assert "conditional weakening" in texts and "strengthening" in texts and "classes: weakening" in texts
    assert not any(word in texts for word in PAPER_WORDS)


def run_main_py(model: Path, results: Path, *extra: str) -> None:
    assert run_main(main_script.main, ["--model", str(model), "--results_dir", str(results), "--categories",  # a low
                                       "--category_stats", "--plot_coarse", "--threshold", "0.05", *extra]) == 0  # t: all 11


def test_main_py_shows_the_follow_ups_names_and_stores_the_papers(tiny_models, tmp_path, capsys):
    run_main_py(tiny_models["llama"], tmp_path / "paper")
    paper_out = capsys.readouterr().out
    run_main_py(tiny_models["llama"], tmp_path / "follow", "--naming", "strengthening")
    follow_out = capsys.readouterr().out
    paper, follow = (sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
                     for root in (tmp_path / "paper", tmp_path / "follow"))
    assert paper == follow  # the same files, by the same names
    for name in paper:
        a, b = (tmp_path / "paper" / name).read_bytes(), (tmp_path / "follow" / name).read_bytes()
        if name.suffix == ".csv":
            assert a == b, name  # stored values: the paper's names
        if name.suffix == ".md" and "category_stats" in name.name:
            assert b.decode() == shown(a.decode(), "strengthening") and "atypical conditional weakening" in b.decode()
    paper_line, follow_line = (out.split("classes over all layers:")[1].splitlines()[0] for out in (paper_out, follow_out))
    assert any(word in paper_line for word in PAPER_WORDS)  # the tiny model has neurons of those classes
    assert follow_line == shown(paper_line, "strengthening") and not any(word in follow_line for word in PAPER_WORDS)


@pytest.mark.parametrize("script", [main_script, d_recompute_vis])
def test_a_bad_naming_is_one_line_exit_2(script, tiny_models, tmp_path):
    refused(script.main, ["--model", tiny_models["llama"], "--results_dir", tmp_path, "--naming", "weak"], tmp_path,
            "--naming: invalid choice: 'weak'")


@pytest.mark.slow
def test_the_viewer_shows_the_follow_ups_names_with_the_same_data(viewer, tiny_models, tmp_path):
    datadir = Path(viewer["folder"]).parents[4]  # <datadir>/results/local/llama/neuroscope/viewer
    argv = ["--model", str(tiny_models["llama"]), "--datadir", str(datadir), "--activations", "ref", "--results_dir",
            str(tmp_path / "results"), "--device", "cpu", "--neurons", "all", "--window", *map(str, WINDOW),
            "--context", *map(str, CONTEXT), "--naming", "strengthening"]
    assert run_main(d_recompute_vis.main, argv) == 0
    folder = tmp_path / "results" / "local" / "llama" / "neuroscope" / "viewer"
    for path in sorted((Path(viewer["folder"]) / "data").glob("*.js")):
        if path.name != "meta.js":
            assert (folder / "data" / path.name).read_bytes() == path.read_bytes(), path.name
    lists = [p.relative_to(viewer["folder"]) for p in sorted((Path(viewer["folder"]) / "lists").glob("*.html"))]
    for name in lists:
        assert (folder / name).read_text() == shown((Path(viewer["folder"]) / name).read_text(), "strengthening")
    shutil.rmtree(folder / "lists")  # the page, not the plain lists, from here on
    text = visible_text(dump_dom(f"{(folder / 'viewer.html').as_uri()}#?layer=1"))
    assert "IO class" in text and any(name in text for name in FOLLOW_UP_NAMES if name not in CLASS_NAMES)
    assert not any(word in text for word in PAPER_WORDS)
