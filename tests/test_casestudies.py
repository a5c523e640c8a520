"""Section 6 scripts end to end: casestudies.py as a script, Figures 2 and 5, the notebook."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import execute_notebook, run_casestudies

from gated_core.cli import run_main
from wcos_casestudies import defplot, selected_plot
from wcos_casestudies.constants import CLASS_NAMES

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "wcos_casestudies" / "casestudies.py"


def _script(args, cwd=ROOT / "wcos_casestudies"):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_casestudies_runs_as_a_script(tiny_models, tmp_path):
    proc = _script(["--model", str(tiny_models["llama"]), "--results_dir", str(tmp_path), "--top_k", "5"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "local" / "llama"
    table = pd.read_csv(folder / "contingency.csv")
    assert list(table["role"]) == ["partition", "prediction", "suppression", "entropy", "attention_activation",
                                   "attention_deactivation"]
    assert (table[list(CLASS_NAMES)].sum(axis=1) == table["total"]).all()
    assert table.set_index("role").loc["partition", "total"] == 10  # 5% of 192 neurons
    assert table.set_index("role").loc["entropy", "total"] == 2
    names = (folder / "case_studies.txt").read_text().split()
    assert names and all(len(name.split(".")) == 2 for name in names)
    for name in names:
        tokens = pd.read_csv(folder / "tokens" / f"{name}.csv")
        assert list(tokens.columns) == ["+w_out", "-w_out", "+w_in", "-w_in", "+w_gate", "-w_gate"] and len(tokens) == 5
    assert "partition neurons: 10" in proc.stdout
    from gated_core.artifacts import load_artifact

    stored = load_artifact(folder / "roles.pt")
    assert stored["contingency"]["counts"].sum(dim=1).tolist() == [int(stored["roles"][r].sum()) for r in stored["contingency"]["roles"]]
    assert stored["moments"]["kurtosis"].shape == (2, 96)


@pytest.mark.slow
def test_casestudies_bad_inputs(tiny_models, tmp_path):
    proc = _script(["--model", str(tiny_models["gpt2"]), "--results_dir", str(tmp_path)])
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and "gate" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _script(["--model", str(tiny_models["olmo"]), "--results_dir", str(tmp_path), "--n_partition", "100000",
                    "--skip_attention"])
    assert proc.returncode == 2 and "--n_partition" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cosines_of_other_settings_are_refused(tiny_models, tmp_path, monkeypatch):
    """A data.pt made with another threshold (or model) in the folder is an error, not silently reused (the refusal
    in a process of its own: exit status 2 and one line; the first run, which writes data.pt, in this process)."""
    from gated_core.artifacts import load_artifact, save_artifact

    run_casestudies(monkeypatch, ["--model", tiny_models["mistral"], "--results_dir", tmp_path, "--skip_attention"])
    path = tmp_path / "local" / "mistral" / "data.pt"
    data = load_artifact(path)
    data["meta"]["threshold"] = 0.3
    save_artifact(data, path)
    proc = _script(["--model", str(tiny_models["mistral"]), "--results_dir", str(tmp_path), "--skip_attention"])
    assert proc.returncode == 2 and "threshold" in proc.stderr and str(path) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_figures(tiny_models, tmp_path, capsys):
    assert run_main(defplot.main, ["--out", str(tmp_path / "defplot")]) == 0
    assert (tmp_path / "defplot.pdf").stat().st_size > 0 and (tmp_path / "defplot.png").exists()
    argv = ["--model", str(tiny_models["qwen2"]), "--results_dir", str(tmp_path)]
    assert run_main(selected_plot.main, argv) == 0
    assert (tmp_path / "local/qwen2/selected.pdf").exists()
    assert 'src="selected.png"' in (tmp_path / "local/qwen2/index.html").read_text()  # the index shows the new plot
    assert "layers 0 1" in capsys.readouterr().out
    assert run_main(selected_plot.main, argv + ["--layers", "0", "2"]) == 2
    assert "--layers 2" in capsys.readouterr().err
    assert selected_plot.default_layers("meta-llama/Llama-3.2-3B", 28) == [0, 14, 27]
    assert selected_plot.default_layers("x", 30) == [0, 15, 29]


@pytest.mark.slow
def test_notebook_executes_headless():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(ROOT / "interactive.ipynb", as_version=4)
    execute_notebook(notebook)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs)
    assert "conditional depletion" in text
    # the probe's cell rendered once at start: its HTML widget holds the demo text, coloured token by token
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    shown = [m["state"]["value"] for m in state.values() if m["model_name"] == "HTMLModel" and 'class="t"' in m["state"]["value"]]
    assert len(shown) == 1 and shown[0].count('<span class="t"') > 20 and "background:rgb(" in shown[0]
    assert ">Hello<" in shown[0] and "&#x27;" in shown[0]  # tokens escaped


def test_toy_outputs():
    from wcos_casestudies import toy

    # enrichment along w_out: positive output; depletion: negative; orthogonal output: the neuron's
    # output is orthogonal to what it reads, so x along w_out gives nothing
    assert toy.neuron_output((1.0, 0.0), "enrichment")[0] > 0.5
    assert toy.neuron_output((-1.0, 0.0), "depletion")[0] > 0.1  # x against w_out, the output pushes back
    assert toy.neuron_output((1.0, 0.0), "orthogonal output")[0] == pytest.approx(0.0, abs=1e-12)
    assert toy.polar_to_cartesian(2.0, 90.0) == pytest.approx((0.0, 2.0), abs=1e-12)
