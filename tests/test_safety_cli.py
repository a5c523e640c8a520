"""Data safety, round 2: one line for system errors, the cell script, the page scripts.

A full disk, a read-only file system or a denied write is one `error:` line naming the path, with no
temporary file left; Ctrl-C in casestudies.py ends like the other scripts; casestudies.py runs with
--loader tl and agrees with the low-memory loader; a run that finds no case-study neuron still writes
readable tables; c_neuron_vis.py refuses the recomputed values of another neuron; b2_recompute.py
writes under the pages lock.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import call, execute_notebook, page_args, refused, run_casestudies

from gated_core.artifacts import TEMPORARY_SUFFIX, load_artifact
from gated_core.locks import hold_lock
from neuroscope import b2_recompute, c_neuron_vis
from wcos_casestudies import main as main_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "wcos_casestudies" / "casestudies.py"


# ----------------------------------------------------------------------------- helpers


def fail_temporary_writes(monkeypatch, code: int, at: str) -> None:
    """Make the system call `at` ("open" or "fsync") fail with `code` for the temporary files of the atomic
    writers only, as a full disk or a read-only file system does (the kernel names no file on fsync)."""
    if at == "open":
        real_open = os.open

        def system_open(path, flags, *args, **kwargs):
            if str(path).endswith(TEMPORARY_SUFFIX) and flags & os.O_CREAT:
                raise OSError(code, os.strerror(code), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", system_open)
    else:
        real_fsync = os.fsync

        def system_fsync(fd):
            if os.readlink(f"/proc/self/fd/{fd}").endswith(TEMPORARY_SUFFIX):
                raise OSError(code, os.strerror(code))
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", system_fsync)


def cell_script(tmp_path: Path, prelude: str, argv: list, console: bool = True) -> subprocess.CompletedProcess:
    """casestudies.py in its own process, run as the console command `wcos-casestudies` does (or as
    `python casestudies.py`), after `prelude` (Python code that sets up the fault)."""
    start = ("from wcos_casestudies.cli import casestudies\ncasestudies()" if console
             else f"import runpy\nrunpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    driver = tmp_path / "driver.py"
    driver.write_text(f"import sys\n{textwrap.dedent(prelude)}\nsys.argv = ['casestudies.py', *{[str(a) for a in argv]!r}]\n"
                      f"{start}\n")
    return subprocess.run([sys.executable, str(driver)], cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def last_line(proc: subprocess.CompletedProcess, status: int) -> str:
    """A process that ended with exit status `status` and one line last on stderr (after its progress bars), no
    traceback; returns that line."""
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == status and lines and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sum(line.startswith(("error:", "interrupted")) for line in lines) == 1, proc.stderr
    return lines[-1]


def temporaries(root: Path) -> list[Path]:
    return list(root.rglob(f"*{TEMPORARY_SUFFIX}"))


# ----------------------------------------------------------------------------- 1. system errors


SYSTEM_FAULTS = [(errno.ENOSPC, "fsync"), (errno.EDQUOT, "fsync"), (errno.EROFS, "open"), (errno.EACCES, "open")]


def test_a_failed_write_is_one_line(work, tmp_path, monkeypatch):
    """main.py --overwrite on a full disk, over quota, on a read-only file system, without permission: one line naming
    data.pt, the old data.pt intact, no temporary file left. An I/O error (a fault, not a limit of the machine's)
    stays a traceback, and its temporary file goes too."""
    results = tmp_path / "results"
    shutil.copytree(work["results"], results)
    argv = ["--model", work["model"], "--results_dir", results, "--overwrite"]
    for code, at in SYSTEM_FAULTS:
        with monkeypatch.context() as patch:
            fail_temporary_writes(patch, code, at)
            line = refused(main_script.main, argv, tmp_path, str(results / "local/llama/data.pt"))
        assert os.strerror(code) in line and errno.errorcode[code] in line
    with monkeypatch.context() as patch:
        fail_temporary_writes(patch, errno.EIO, "fsync")
        outcome = call(main_script.main, argv)
    assert isinstance(outcome.crash, OSError) and outcome.crash.errno == errno.EIO
    assert not temporaries(tmp_path)


FULL_DISK = f"""
import errno, os
real_fsync = os.fsync
def system_fsync(fd):
    if os.readlink(f"/proc/self/fd/{{fd}}").endswith({TEMPORARY_SUFFIX!r}):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_fsync(fd)
os.fsync = system_fsync
"""


@pytest.mark.slow
def test_a_full_disk_in_the_cell_script_is_one_line(tiny_models, tmp_path):
    results = tmp_path / "results"
    proc = cell_script(tmp_path, FULL_DISK, ["--model", tiny_models["llama"], "--results_dir", results, "--skip_attention"])
    line = last_line(proc, 2)
    assert line.startswith("error:") and str(results / "local/llama/data.pt") in line and "ENOSPC" in line
    assert not temporaries(tmp_path)


# ----------------------------------------------------------------------------- 2. Ctrl-C in the cell script


CTRL_C = """
import os, signal, time
from wcos_casestudies import section6
def interrupted(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(60)
section6.compute_roles = interrupted
"""


@pytest.mark.slow
@pytest.mark.parametrize("console", [True, False], ids=["wcos-casestudies", "python casestudies.py"])
def test_ctrl_c_in_the_cell_script_is_one_line(tiny_models, tmp_path, console):
    proc = cell_script(tmp_path, CTRL_C, ["--model", tiny_models["llama"], "--results_dir", tmp_path / "results",
                                          "--skip_attention"], console)
    assert last_line(proc, 130).startswith("interrupted;")


# ----------------------------------------------------------------------------- 3. --loader tl


TL_FAMILIES = ("llama", "qwen2", "gemma3_text", "olmo")


@pytest.mark.parametrize("family", TL_FAMILIES)
def test_casestudies_with_the_transformer_lens_loader(tiny_models, tmp_path, monkeypatch, capsys, family):
    """Section 6 end to end with the whole model in TransformerLens agrees with the low-memory loader."""
    folders = {}
    for loader in ("tl", "lowmem"):
        run_casestudies(monkeypatch, ["--model", tiny_models[family], "--results_dir", tmp_path / loader, "--loader", loader,
                                      "--top_k", 5])
        folders[loader] = tmp_path / loader / "local" / family
    capsys.readouterr()
    tl, lowmem = folders["tl"], folders["lowmem"]
    for name in ("contingency.csv", "case_studies.txt"):
        assert (tl / name).read_text() == (lowmem / name).read_text(), name
    pd.testing.assert_frame_equal(pd.read_csv(tl / "case_studies.csv"), pd.read_csv(lowmem / "case_studies.csv"), rtol=1e-4)
    for name in (lowmem / "case_studies.txt").read_text().split():
        assert (tl / "tokens" / f"{name}.csv").read_text() == (lowmem / "tokens" / f"{name}.csv").read_text()
    scores = {loader: pd.read_csv(folder / "entropy_scores.csv") for loader, folder in folders.items()}
    assert list(scores["tl"]["neuron"]) == list(scores["lowmem"]["neuron"])
    assert (tl / "entropy_scores.png").stat().st_size > 0
    stored = {loader: load_artifact(folder / "roles.pt") for loader, folder in folders.items()}
    for name, moment in stored["lowmem"]["moments"].items():
        assert torch.allclose(stored["tl"]["moments"][name], moment, rtol=1e-4, atol=1e-5), name
    assert torch.allclose(stored["tl"]["entropy_scores"], stored["lowmem"]["entropy_scores"], atol=1e-5)
    for name, mask in stored["lowmem"]["roles"].items():
        assert torch.equal(stored["tl"]["roles"][name], mask), name


# ----------------------------------------------------------------------------- 4. no case-study neuron


def test_no_case_study_neuron_still_gives_readable_tables(tiny_models, tmp_path, monkeypatch, capsys):
    """A model without prediction or suppression neurons: case_studies.csv keeps its columns, the index is written."""
    from wcos_casestudies import roles

    monkeypatch.setattr(roles, "case_study_neurons", lambda *args, **kwargs: [])
    run_casestudies(monkeypatch, ["--model", tiny_models["llama"], "--results_dir", tmp_path, "--skip_attention"])
    folder = tmp_path / "local" / "llama"
    table = pd.read_csv(folder / "case_studies.csv")
    assert len(table) == 0 and {"layer", "neuron", "reason"} <= set(table.columns)
    assert (folder / "case_studies.txt").read_text().split() == []
    assert "case_studies.csv" in (folder / "index.html").read_text()
    assert "all outputs:" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 5. the page scripts


def test_the_values_of_another_neuron_are_refused(work, tmp_path):
    """activations.pt of neuron 0.1 copied into 0.2's folder: c_neuron_vis.py does not render it as 0.2."""
    results = tmp_path / "results"
    shutil.copytree(work["results"], results)
    argv = page_args(work["model"], work["datadir"], results)[:-2] + ["--neurons", "0.1", "0.2"]
    assert call(b2_recompute.main, argv).code == 0
    folder = results / "local/llama/neuroscope"
    shutil.copy(folder / "L0/N1/activations.pt", folder / "L0/N2/activations.pt")
    refused(c_neuron_vis.main, argv, tmp_path, "neuron 0.1, not 0.2")


def test_recomputation_holds_the_pages_lock(work, tmp_path, monkeypatch):
    """b2_recompute.py writes activations.pt beside the pages: while another run holds them it stops, before the
    model loads."""
    import neuroscope.recompute.examples

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the pages lock was taken")

    results = tmp_path / "results"
    shutil.copytree(work["results"], results)
    monkeypatch.setattr(neuroscope.recompute.examples, "load_hf_model", no_model)
    with hold_lock(results / "local/llama/neuroscope/neurons.json"):
        refused(b2_recompute.main, page_args(work["model"], work["datadir"], results), tmp_path, f"process {os.getpid()}")


# ----------------------------------------------------------------------------- 5. flags of the cell script


@pytest.mark.slow
def test_the_cell_script_reads_its_flags_unless_a_kernel_runs_it(tiny_models, tmp_path):
    """A process that merely imported ipykernel (the notebook test, ipywidgets) is no notebook: casestudies.py
    reads its command line there (it used to fall back to the defaults: the embedded model and the repository's
    results folder). Inside a running kernel it takes the defaults."""
    nbformat = pytest.importorskip("nbformat")
    prelude = "import ipykernel, IPython"
    proc = cell_script(tmp_path, prelude, ["--model", tiny_models["llama"], "--results_dir", tmp_path / "results",
                                           "--skip_attention", "--top_k", "3"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results" / "local" / "llama" / "contingency.csv").is_file()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from gated_core.cli import in_notebook\nprint(in_notebook())")])
    execute_notebook(notebook)
    assert notebook.cells[0].outputs[0]["text"].strip() == "True"
