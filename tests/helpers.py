"""What several test modules share: running a script's main in this process (and the checks of a refused run), the
command lines of the small worlds in conftest.py, brute-force references, and pages rendered in headless Chromium.

Test modules import from here (and take fixtures from conftest.py), never from each other.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gated_core.cli import run_main
from wcos_casestudies.constants import CLASS_NAMES

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------- a script's main in this process

# the corpus of the shared world `work` (conftest.py): ASCII only, so that rot13 keeps every document's length in
# bytes (and tokens)
CORPUS_TEXTS = [
    "Gated neurons read a direction and write another.",
    "<script>alert('x')</script> & markup stays text.",
    "Short.",
    "The gate decides; the linear input scales; the output weight writes.",
    "Repeat repeat repeat repeat repeat repeat.",
    "A somewhat longer document about transformers and the MLP layers that read from the residual stream.",
    "Numbers 1 2 3 4 5 6 7 8 9 10 11 12.",
    "Last one, of medium length, to end the set.",
]
CORPUS_K = 2  # examples per neuron of the statistics `acts` of `work`


@dataclass
class Outcome:
    code: int | None
    out: str
    err: str
    crash: BaseException | None = None


def call(main, argv) -> Outcome:
    """Run a script's main in this process as its command line would (argparse's exit included)."""
    out, err = io.StringIO(), io.StringIO()
    crash = None
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = run_main(main, [str(a) for a in argv])
        except SystemExit as exc:  # argparse: usage and one `prog: error:` line, exit status 2
            code = exc.code
        except Exception as exc:  # the very thing these tests look for: shown, not raised
            code, crash = None, exc
    return Outcome(code, out.getvalue(), err.getvalue(), crash)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its kind, size and modification time."""
    return {str(p.relative_to(root)): (p.is_dir(), p.lstat().st_size if not p.is_dir() else 0,
                                       p.lstat().st_mtime_ns if not p.is_dir() else 0)
            for p in root.rglob("*")} if root.exists() else {}


def assert_one_line(outcome: Outcome, match: str = "") -> str:
    """Exit status 2, one `error:` line and it is the last one, no traceback; returns that line."""
    assert outcome.crash is None, f"{type(outcome.crash).__name__}: {outcome.crash}"
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    assert outcome.code == 2, outcome.err
    assert lines and "error:" in lines[-1], outcome.err
    assert sum("error:" in line for line in lines) == 1 and "Traceback" not in outcome.err, outcome.err
    assert match in lines[-1], lines[-1]
    return lines[-1]


def refused(main, argv, root: Path, match: str = "") -> str:
    """The run is refused in one line and changes nothing under `root`."""
    before = snapshot(root)
    line = assert_one_line(call(main, argv), match)
    assert snapshot(root) == before, "a refused run changed the file tree"
    return line


def succeeds(main, argv) -> Outcome:
    outcome = call(main, argv)
    assert outcome.crash is None and outcome.code == 0, outcome.err[-3000:] or outcome.crash
    return outcome


def assert_flags_exist(line: str, script) -> None:
    """Every flag the error suggests is one of this script's, unless the message names the script it belongs to."""
    flags = set(script.build_parser()._option_string_actions)
    for match in re.finditer(r"--[a-z_]+", line):
        clause = line[:match.start()]
        clause = clause[max(clause.rfind(";"), clause.rfind("("), clause.rfind(":")) + 1:]
        assert ".py" in clause or match.group() in flags, f"{match.group()} is no flag of {script.__name__}: {line}"


# ----------------------------------------------------------------------------- command lines of the shared world


def write_corpus(path: Path, texts) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def dataset_args(datadir: Path, name: str, corpus: Path, model: Path) -> list:
    return ["--datadir", datadir, "--save_to", name, "--dataset", corpus, "--tokenizer", model, "--save_all",
            "--max_length", "48"]


def pass_args(model: Path, datadir: Path, save_to: str, *extra) -> list:
    return ["--model", model, "--datadir", datadir, "--dataset", "docs", "--save_to", save_to,
            "--examples_per_neuron", CORPUS_K, "--batch_size", 3, "--device", "cpu", *extra]


def page_args(model: Path, datadir: Path, results: Path, activations: str = "acts", *extra) -> list:
    return ["--model", model, "--datadir", datadir, "--activations", activations, "--results_dir", results,
            "--device", "cpu", "--neurons", "0.1", *extra]


def copy_data(work, tmp_path) -> Path:
    """A copy of the shared world's dataset folder (and statistics) that a test may change."""
    datadir = tmp_path / "data"
    shutil.copytree(work["datadir"], datadir)
    return datadir


# the pages of the shared viewer world (`viewer_tree` in conftest.py)
VIEWER_PAGES = Path("results/local/llama/neuroscope")  # below a tree of `viewer_tree`


def viewer_args(work, results: Path, *extra) -> list:
    return ["--model", work["model"], "--datadir", work["datadir"], "--activations", "acts", "--results_dir", results,
            "--device", "cpu", *extra]


def from_viewer_args(work, results: Path, source: str, name: str) -> list:
    return viewer_args(work, results, "--neurons", "1.*", "--from_viewer", source, "--viewer", name)


def copied(tree: Path, tmp_path: Path) -> Path:
    """A copy of a built tree that a test may change (symbolic links stay links)."""
    shutil.copytree(tree, tmp_path / "tree", symlinks=True)
    return tmp_path / "tree"


# ----------------------------------------------------------------------------- the activation pass on PASS_TEXTS

PASS_TEXTS = [
    "Gated neurons read a direction and write another.",
    "<script>alert('not run')</script> & other <b>markup</b> stays text.",
    "Short.",
    "The gate decides; the linear input scales; the output weight writes.",
    "Repeat repeat repeat repeat repeat repeat repeat.",
    "A somewhat longer document about transformers, their residual stream and the MLP layers that read from it.",
    "x",
    "Numbers 1 2 3 4 5 6 7 8 9 10 11 12.",
    "Gated neurons read a direction and write another.",  # a duplicate of document 0
    "Last one, of medium length, to end the set.",
    "¿Qué? Ünïcödé ✓ and tabs\tand\nnew lines.",
]
PASS_K = 3  # examples per neuron of run_pass
STAT_KEYS = ("top_values", "top_docs", "top_positions", "bottom_values", "bottom_docs", "bottom_positions",
             "combo_values", "combo_docs", "combo_positions", "post_sum", "gate_positive", "lin_positive",
             "both_positive", "histogram", "n_tokens")
BOS = 256  # the tiny tokenizer's <bos>


def run_pass(model, datadir, save_to, batch_size=4, extra=()):
    from neuroscope import b_activations

    return run_main(b_activations.main, ["--model", str(model), "--datadir", str(datadir), "--dataset", "data",
                                         "--save_to", save_to, "--examples_per_neuron", str(PASS_K), "--batch_size",
                                         str(batch_size), "--device", "cpu", *extra])


def brute_force_lists(post, pre, lin, starts_with_bos, layer, neuron, masks=None):
    """Every example list of one neuron by an obvious loop over documents and positions: [(-|key|, doc, position)]
    sorted, with position 0 left out of documents that start with BOS (and, with `masks`, the positions where a
    document's mask is 0)."""
    from neuroscope.activation_pass.activations import SIGN_COMBINATIONS

    lists = {name: [] for name in ("top", "bottom", *SIGN_COMBINATIONS)}
    for doc, (acts, gates, lins) in enumerate(zip(post, pre, lin)):
        a, g, u = acts[layer, :, neuron].tolist(), gates[layer, :, neuron].tolist(), lins[layer, :, neuron].tolist()
        positions = [p for p in range(len(a)) if not (p == 0 and starts_with_bos[doc]) and (masks is None or masks[doc][p])]
        if positions:
            best = max(a[p] for p in positions)
            lists["top"].append((-best, doc, next(p for p in positions if a[p] == best)))
            worst = min(a[p] for p in positions)
            lists["bottom"].append((worst, doc, next(p for p in positions if a[p] == worst)))
        for index, name in enumerate(SIGN_COMBINATIONS):
            gate_open, lin_positive = index in (0, 1), index in (0, 2)
            inside = [p for p in positions if (g[p] > 0) == gate_open and (u[p] > 0) == lin_positive and a[p] != 0]
            if inside:
                best = max(abs(a[p]) for p in inside)
                lists[name].append((-best, doc, next(p for p in inside if abs(a[p]) == best)))
    return {name: sorted(rows) for name, rows in lists.items()}


def direct_histogram(values):
    """Counts of values [n] in the bins of histogram_edges(), one bin at a time (|v| rounded down)."""
    from neuroscope.core.histogram import histogram_edges

    edges = histogram_edges().tolist()
    counts = []
    for low, high in zip(edges[:-1], edges[1:]):
        if high <= 0:  # a bin of negative values: (low, high], -0.0 in the one that ends at 0
            counts.append(sum(1 for v in values if low < v <= high and (v < 0 or str(v) == "-0.0")))
        else:
            counts.append(sum(1 for v in values if low <= v < high and str(v) != "-0.0"))
    return counts


def brute_band(value: float) -> int:
    """The band of the typical examples that |value| falls in, by comparing it with each edge."""
    from neuroscope.core.histogram import typical_band_edges, typical_bands

    edges = typical_band_edges().tolist()
    return max(i for i in range(typical_bands()) if abs(value) >= edges[i])


# ----------------------------------------------------------------------------- the viewer's data files

WINDOW, CONTEXT = (5, 2), (4, 3)  # the viewer's coloured tokens and grey context, before and after the extreme token
DTYPES = {"i1": "<i1", "u1": "<u1", "u2": "<u2", "i4": "<i4", "f4": "<f4", "f2": "<f2"}


def tiny_run(folder, datadir):
    """PASS_TEXTS (one of them hostile markup) tokenized for the tiny checkpoint `folder` and its statistics `ref` in
    `datadir`; returns its source, the dataset, the results folder and the flags of a viewer of every neuron."""
    import datasets

    from gated_core.models.loading import load_tokenizer
    from gated_core.models.sources import resolve_model
    from neuroscope.data.dataset_store import save_dataset
    from neuroscope.data.tokenization import build_dataset

    source = resolve_model(str(folder))
    dataset, meta = build_dataset(datasets.Dataset.from_dict({"text": PASS_TEXTS}), load_tokenizer(source), None,
                                  max_length=48)
    meta.update({"tokenizer": source.name, "dataset": "test"})
    save_dataset(dataset, meta, datadir / "data")
    assert run_pass(folder, datadir, "ref") == 0
    results = datadir / "results"
    argv = ["--model", str(folder), "--datadir", str(datadir), "--activations", "ref", "--results_dir", str(results),
            "--device", "cpu", "--neurons", "all", "--window", *map(str, WINDOW), "--context", *map(str, CONTEXT)]
    return source, dataset, results, argv


def read_call(path):
    """The arguments of the one neuroscope.<part>(...) call that a data file holds (packed arrays inflated)."""
    from neuroscope.view.parts import inflated

    text = path.read_text()
    match = re.fullmatch(r"neuroscope\.(\w+)\((.*)\);\n", text, re.S)
    assert match, path
    return match.group(1), [inflated(a) if isinstance(a, dict) else a for a in json.loads(f"[{match.group(2)}]")]


def call_arguments(path: Path) -> list:
    """The JSON arguments of the one neuroscope.<part>(...) call of a viewer data file, as written (read independently)."""
    match = re.fullmatch(r"neuroscope\.(\w+)\((.*)\);\n", path.read_text(), re.S)
    assert match, path
    return json.loads(f"[{match.group(2)}]")


def unpack(packed):
    return np.frombuffer(base64.b64decode(packed["b64"]), dtype=DTYPES[packed["dtype"]])


# ----------------------------------------------------------------------------- the class ablations (`ablation_world`)

ABLATION_TEXTS = [
    "Gated neurons read a direction and write another.",
    "The gate decides; the linear input scales; the output weight writes.",
    "Short.",
    "A somewhat longer document about transformers, their residual stream and the MLP layers that read from it.",
    "x",
    "Numbers 1 2 3 4 5 6 7 8 9 10 11 12.",
    "Depletion neurons write the opposite of what they read, and fire often.",
    "Last one, of medium length, to end the set.",
]
DEPLETION, CONDITIONAL_DEPLETION, ORTHOGONAL = (CLASS_NAMES.index(n) for n in
                                                ("depletion", "conditional depletion", "orthogonal output"))
PLANTED = {DEPLETION: {0: [1, 5, 9, 40], 1: [0, 3, 77]}, CONDITIONAL_DEPLETION: {1: [10, 11, 12]}}


def ablate(world, results_dir, extra=(), classes=("depletion",)):
    """e_ablate.py on the statistics `acts` of `world` (an `ablation_world`), writing below `results_dir`."""
    from neuroscope import e_ablate

    argv = ["--model", str(world["folder"]), "--datadir", str(world["datadir"]), "--activations", "acts",
            "--results_dir", str(results_dir), "--device", "cpu", "--batch_size", "3", "--bootstrap", "200",
            "--random_seeds", "2", "--classes", *classes, *extra]
    return run_main(e_ablate.main, argv)


# ----------------------------------------------------------------------------- the cell script casestudies.py


def run_casestudies(monkeypatch, argv: list) -> None:
    """casestudies.py in this process, as `python casestudies.py ARGV` runs it (its error hook and its naming undone
    afterwards)."""
    import runpy

    from gated_core.naming import DEFAULT_NAMING, naming_in_use

    monkeypatch.setattr(sys, "argv", ["casestudies.py", *map(str, argv)])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    with naming_in_use(DEFAULT_NAMING):  # what the script sets is reset at the end of the block
        runpy.run_module("wcos_casestudies.casestudies", run_name="__main__")


# ----------------------------------------------------------------------------- the notebook


def execute_notebook(notebook) -> None:
    """Run every cell of `notebook` in a fresh kernel of this Python, from the repository root (outputs kept in place)."""
    nbclient = pytest.importorskip("nbclient")
    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env_path}"  # the kernel runs this Python
    try:
        nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        os.environ["PATH"] = env_path


# ----------------------------------------------------------------------------- pages in headless Chromium

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run")
# the document as --dump-dom prints it: its doctype on a line of its own, then the root element's HTML
DOCUMENT_HTML = ("(document.doctype ? new XMLSerializer().serializeToString(document.doctype) + '\\n' : '')"
                 " + document.documentElement.outerHTML")
PAGE_TIMEOUT = 120  # seconds that headless Chromium may take for one answer (a page loaded)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless Chromium for the whole test session, driven over the DevTools protocol on a pipe (its file
    descriptors 3 and 4: JSON messages ended by a NUL byte). Each page opens in a browsing context of its own, as
    a fresh profile would, and is read as `--dump-dom` reads it: the document's HTML once the load event fired."""

    def __init__(self, executable: str):
        self.profile = tempfile.mkdtemp(prefix="chromium-tests-")
        child_reads, self._to_browser = os.pipe()
        self._from_browser, child_writes = os.pipe()

        def wire_pipes():  # in the child, before exec: its ends of the pipes become descriptors 3 and 4
            reads, writes = os.dup(child_reads), os.dup(child_writes)
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.process = subprocess.Popen([executable, *CHROMIUM_FLAGS, "--disable-component-update",
                                         f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        pass_fds=(3, 4), preexec_fn=wire_pipes)
        os.close(child_reads)
        os.close(child_writes)
        self._received, self._last_id = b"", 0

    def _message(self) -> dict:
        deadline = time.monotonic() + PAGE_TIMEOUT
        while b"\0" not in self._received:
            if not select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError(f"headless Chromium did not answer in {PAGE_TIMEOUT} s")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("headless Chromium closed its pipe")
            self._received += chunk
        message, self._received = self._received.split(b"\0", 1)
        return json.loads(message)

    def command(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one DevTools command and return its result (events that arrive meanwhile are dropped)."""
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def _wait_for(self, event: str, session: str) -> None:
        while True:
            message = self._message()
            if message.get("method") == event and message.get("sessionId") == session:
                return

    def dom(self, url: str) -> str:
        """The DOM of the page at `url` once its load event fired (its scripts run)."""
        context = self.command("Target.createBrowserContext")["browserContextId"]
        try:
            target = self.command("Target.createTarget", {"url": "about:blank", "browserContextId": context})["targetId"]
            session = self.command("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.command("Page.enable", session=session)
            self.command("Page.navigate", {"url": url}, session)
            self._wait_for("Page.loadEventFired", session)
            value = self.command("Runtime.evaluate", {"expression": DOCUMENT_HTML, "returnByValue": True}, session)
            return value["result"]["value"] + "\n"  # as --dump-dom prints it
        finally:
            self.command("Target.disposeBrowserContext", {"browserContextId": context})

    def close(self) -> None:
        for descriptor in (self._to_browser, self._from_browser):
            os.close(descriptor)
        self.process.terminate()
        self.process.wait(30)
        shutil.rmtree(self.profile, ignore_errors=True)


_BROWSER: list[Chromium] = []  # the session's browser, started by the first page


def close_browser() -> None:
    """Close the session's Chromium, if a page started one (conftest.py, at the end of the session)."""
    while _BROWSER:
        _BROWSER.pop().close()


def dump_dom(path) -> str:
    """The page's DOM once its script ran, from headless Chromium (skipped where it is not installed)."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    if _BROWSER and _BROWSER[0].process.poll() is not None:
        close_browser()  # it ended: start another
    if not _BROWSER:
        _BROWSER.append(Chromium(executable))
    return _BROWSER[0].dom(path if isinstance(path, str) else path.as_uri())


def visible_text(dom):
    """The text a reader sees: the DOM without tags, scripts and styles, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<(script|style)>.*?</\1>", "", dom, flags=re.S)))
