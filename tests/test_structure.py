"""The shape of the project: scripts are thin (no script imports another, `--help` loads no torch),
the library has no import cycle, and nothing edits the import path."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gated_core", "wcos_casestudies", "neuroscope")  # each may import only those before it
SCRIPTS = ("wcos_casestudies/main.py", "wcos_casestudies/casestudies.py", "wcos_casestudies/defplot.py",
           "wcos_casestudies/selected_plot.py", "wcos_casestudies/compare.py", "neuroscope/a_dataset.py", "neuroscope/b_activations.py",
           "neuroscope/b_import_summary.py", "neuroscope/b_export_summary.py",
           "neuroscope/b2_recompute.py", "neuroscope/c_neuron_vis.py", "neuroscope/d_recompute_vis.py",
           "neuroscope/e_ablate.py", "neuroscope/e_frequency.py", "neuroscope/e_generate.py", "neuroscope/e_recall.py", "neuroscope/f_probe.py",
           "neuroscope/g_connections.py")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project modules that `path` imports (absolute and relative imports, at any depth)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    known = {module_name(p) for p in files}
    return {module_name(p): imported_modules(p, known) - {module_name(p)} for p in files}


def test_no_import_cycle():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for other in graph[module]:
            if state.get(other) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(other):] + [module, other]))
            if not state.get(other):
                visit(other, stack + [module])
        state[module] = 2

    for module in graph:
        if not state.get(module):
            visit(module, [])


def test_imports_point_down_the_packages():
    """gated_core (what both packages share) imports neither package; wcos_casestudies does not import neuroscope."""
    graph = import_graph()
    for module, imported in graph.items():
        rank = PACKAGES.index(module.split(".")[0])
        above = {other for other in imported if PACKAGES.index(other.split(".")[0]) > rank}
        assert not above, f"{module} imports {sorted(above)}, from a package above its own"


def test_no_script_imports_a_script():
    graph = import_graph()
    scripts = {module_name(ROOT / s) for s in SCRIPTS}
    for script in scripts:
        assert not graph[script] & scripts, f"{script} imports {graph[script] & scripts}"


def test_nothing_edits_sys_path():
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.ipynb"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    needle = "sys." + "path"  # written apart so that this file does not match itself
    assert [f for f in tracked if needle in (ROOT / f).read_text()] == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_loads_no_heavy_module(script):
    """`--help` must answer at once: it may not import torch, transformers, datasets or matplotlib."""
    probe = ("import runpy, sys\n"
             f"sys.argv = [{script!r}, '--help']\n"
             "try:\n"
             f"    runpy.run_path({str(ROOT / script)!r}, run_name='__main__')\n"
             "except SystemExit:\n"
             "    pass\n"
             "heavy = sorted(m for m in ('torch', 'transformers', 'datasets', 'matplotlib') if m in sys.modules)\n"
             "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120).stdout
    assert "usage:" in out and "HEAVY []" in out, out[-500:]


def test_console_entry_points_resolve():
    """Every console command of the installed project names a callable, and every script has one."""
    import importlib
    from importlib.metadata import distribution

    commands = {e.name: e.value for e in distribution("wcos-casestudies").entry_points if e.group == "console_scripts"}
    assert commands, "the project is not installed (pip install -e .)"
    for command, target in commands.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), command
    targets = {target.partition(":")[0] for target in commands.values()}
    assert {module_name(ROOT / s) for s in SCRIPTS} - {"wcos_casestudies.casestudies"} <= targets


STATISTICS_HOME = ("neuroscope/activation_pass/store.py", "neuroscope/activation_pass/activations.py", "neuroscope/activation_pass/collect.py")  # the file format, the pass


def statistics_keys() -> set[str]:
    """The names of the statistics' tensors and of their metadata, as a statistics file stores them."""
    from dataclasses import fields

    from neuroscope.activation_pass.store import Statistics, StatisticsMeta

    return {f.name for f in (*fields(Statistics), *fields(StatisticsMeta))} - {"recorded", "extra"}


def owner_name(node: ast.expr) -> str:
    """The name an expression is read from: `stats` for stats, run.stats, stats["meta"] or stats["meta"]["k"]."""
    while isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else ""


def is_key(node: ast.AST, keys: set[str]) -> bool:
    return isinstance(node, ast.Constant) and node.value in keys


def reads_by_key(node: ast.AST, keys: set[str]) -> bool:
    """`stats["top_values"]`, `stats.get("mean")` or `"histogram" in stats` on something named after statistics."""
    if isinstance(node, ast.Subscript):
        return is_key(node.slice, keys) and "stat" in owner_name(node.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "pop"):
        return bool(node.args) and is_key(node.args[0], keys) and "stat" in owner_name(node.func.value)
    if isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
        return is_key(node.left, keys) and any("stat" in owner_name(other) for other in node.comparators)
    return False


def statistics_read_by_key(source: str, keys: set[str]) -> list[int]:
    """The lines of `source` that read the statistics (or their metadata) by string key."""
    return sorted({node.lineno for node in ast.walk(ast.parse(source)) if reads_by_key(node, keys)})


def test_statistics_are_read_by_attribute_outside_their_home():
    """Only the statistics' home (store.py) and the pass read a statistics file's keys; every other module
    reads the typed `Statistics` and `StatisticsMeta` that `load_statistics` returns."""
    keys = statistics_keys()
    for read in ('stats["meta"]["dtype"]', 'run.stats.get("mean")', '"histogram" in run.stats', 'stats_meta.get("dataset")'):
        assert statistics_read_by_key(read, keys) == [1], read  # what the check finds (the modules read so before)
    assert statistics_read_by_key('stats.meta.dtype; data["meta"]; args.stats["not a key"]', keys) == []
    files = [p for package in ("neuroscope", "wcos_casestudies") for p in sorted((ROOT / package).rglob("*.py"))]
    found = {str(p.relative_to(ROOT)): statistics_read_by_key(p.read_text(), keys) for p in files
             if str(p.relative_to(ROOT)) not in STATISTICS_HOME}
    assert {path: lines for path, lines in found.items() if lines} == {}


def test_library_functions_take_no_namespace():
    """Only the scripts and the command-line modules see argparse's Namespace; the library takes small request objects
    (PageRequest, PassRequest, Section5Request)."""
    scripts = {ROOT / s for s in SCRIPTS}
    found = []
    for path in (p for package in PACKAGES for p in (ROOT / package).rglob("*.py")):
        if path in scripts or path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
                annotations = [ast.unparse(a.annotation) for a in node.args.args if a.annotation is not None]
                if "args" in names or any("Namespace" in text for text in annotations):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert found == [], found


# ---- neuroscope by stage: the numbered scripts at the top, the library in one subpackage per stage

NEUROSCOPE = ROOT / "neuroscope"
NEUROSCOPE_TOP = {"__init__.py", "cli.py", "constants.py"}  # besides the scripts


def literal_of(path: Path, name: str):
    """The literal value assigned to `name` at the top of `path` (read without importing it)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.relative_to(ROOT)} assigns no {name}")


def stage_interfaces() -> dict[str, tuple[str, ...]]:
    stages = literal_of(NEUROSCOPE / "__init__.py", "STAGES")
    return {stage: literal_of(NEUROSCOPE / stage / "__init__.py", "INTERFACE") for stage in stages}


def test_neuroscope_is_laid_out_by_stage():
    """Only the scripts, their flags and the constants sit in neuroscope/; every library module lives in a stage
    (a subpackage with a docstring saying which scripts it serves), and each stage's interface names its modules."""
    scripts = {Path(s).name for s in SCRIPTS if s.startswith("neuroscope/")}
    assert {p.name for p in NEUROSCOPE.glob("*.py")} == scripts | NEUROSCOPE_TOP
    interfaces = stage_interfaces()
    folders = {p.parent.name for p in NEUROSCOPE.glob("*/__init__.py")}
    assert folders == set(interfaces), f"stages {sorted(folders)} against STAGES {sorted(interfaces)}"
    for stage, interface in interfaces.items():
        assert ast.get_docstring(ast.parse((NEUROSCOPE / stage / "__init__.py").read_text())), stage
        modules = {p.stem for p in (NEUROSCOPE / stage).glob("*.py")} - {"__init__"}
        assert set(interface) <= modules, f"{stage}: INTERFACE names {sorted(set(interface) - modules)}, not modules"


def stage_violations(graph: dict[str, set[str]], interfaces: dict[str, tuple[str, ...]]) -> list[str]:
    """Imports of a stage module that go up the stages, into another stage's own modules, or up to the scripts."""
    order = list(interfaces)
    found = []
    for module, imported in graph.items():
        parts = module.split(".")
        if parts[0] != "neuroscope" or len(parts) != 3:
            continue
        for other in sorted(imported):
            other_parts = other.split(".")
            if other_parts[0] != "neuroscope" or other_parts[1] == parts[1]:
                continue
            if len(other_parts) == 2 and other_parts[1] != "constants":
                found.append(f"{module} imports {other}, above the stages")
            elif len(other_parts) == 3 and order.index(other_parts[1]) > order.index(parts[1]):
                found.append(f"{module} imports {other}, from a later stage")
            elif len(other_parts) == 3 and other_parts[2] not in interfaces[other_parts[1]]:
                found.append(f"{module} imports {other}, which is not in {other_parts[1]}'s INTERFACE")
    return found


def test_stages_import_earlier_stages_through_their_interface():
    interfaces = stage_interfaces()
    planted = {"neuroscope.core.hooks": {"neuroscope.view.viewer"}, "neuroscope.view.pages": {"neuroscope.activation_pass.reducer"},
               "neuroscope.data.texts": {"neuroscope.cli"}}
    assert len(stage_violations(planted, interfaces)) == 3  # the check finds each kind of reach
    assert stage_violations(import_graph(), interfaces) == []


# ---- one home for a neuron's name (gated_core/neurons.py) and for what an artifact was made from

NEURON_HOME = "gated_core/neurons.py"
NEURON_WORDS = ("layer", "neuron", "lay", "[0]", "[1]")  # what the parts of a hand-made `layer.neuron` mention


def names_a_neuron(node: ast.AST) -> bool:
    """A neuron's `layer.neuron` name made or read by hand: an f-string `{layer}.{neuron}` (two formatted values
    around a lone dot, one of them mentioning a layer or neuron), or a split at the dot."""
    if isinstance(node, ast.JoinedStr):
        parts = node.values
        for before, dot, after in zip(parts, parts[1:], parts[2:]):
            if (isinstance(before, ast.FormattedValue) and isinstance(after, ast.FormattedValue)
                    and isinstance(dot, ast.Constant) and dot.value == "."):
                mentioned = ast.unparse(before.value) + " " + ast.unparse(after.value)
                if any(word in mentioned for word in NEURON_WORDS):
                    return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("split", "rsplit", "partition"):
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "."
    return False


def neuron_names_by_hand(source: str) -> list[int]:
    return sorted({node.lineno for node in ast.walk(ast.parse(source)) if names_a_neuron(node)})


def test_neuron_names_are_made_and_read_only_by_neuron_id():
    """`LAYER.NEURON` is written and parsed in one place, `gated_core.neurons.NeuronId`; every other module goes
    through it (three parsers and a dozen inline formats came before it)."""
    planted = ('f"{layer}.{neuron}"', 'f"neuron {key[0]}.{key[1]}, document"', 'f\'<a>{e["layer"]}.{e["neuron"]}</a>\'',
               'layer, neuron = map(int, name.split("."))', 'text.split(".")')
    for source in planted:
        assert neuron_names_by_hand(source) == [1], source
    assert neuron_names_by_hand('f"{stem}.{fmt}"; f"{digits[:point]}.{digits[point:]}"; key.split("/")') == []
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    found = {str(p.relative_to(ROOT)): neuron_names_by_hand(p.read_text()) for p in files}
    assert {path: lines for path, lines in found.items() if lines and path != NEURON_HOME} == {}


def test_neuron_id_round_trips():
    from gated_core.errors import UserError
    from gated_core.neurons import NeuronId, sort_names

    assert NeuronId.parse("28.4737", 32, 11008) == (28, 4737) and str(NeuronId(28, 4737)) == "28.4737"
    assert NeuronId.from_flat(NeuronId(3, 17).flat(64), 64) == NeuronId(3, 17) == NeuronId.from_name("3.17")
    assert NeuronId(3, 17).flat(64) == 3 * 64 + 17
    assert sort_names(["10.2", "2.10", "2.9"]) == ["2.9", "2.10", "10.2"]
    for text, message in (("1-17", "write neurons as LAYER.NEURON"), ("٠.١", "write neurons as LAYER.NEURON"),
                          ("32.0", "out of range"), ("0.11008", "out of range")):
        with pytest.raises(UserError, match=message):
            NeuronId.parse(text, 32, 11008)


PROVENANCE_HOME = "gated_core/artifacts.py"  # made_from records an artifact's inputs, check_provenance checks them


def made_from_keys() -> set[str]:
    from gated_core.artifacts import MADE_FROM

    return set(MADE_FROM)


def builds_made_from(node: ast.AST, keys: set[str]) -> bool:
    """A made-from entry written by hand: a dict literal with an input's fingerprint key (`"weights_fingerprint": ...`),
    or such a key set on a dict (`meta["dataset_fingerprint"] = ...`)."""
    if isinstance(node, ast.Dict):
        return any(is_key(key, keys) for key in node.keys if key is not None)
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Subscript) and is_key(t.slice, keys) for t in targets)
    return False


def made_from_by_hand(source: str, keys: set[str]) -> list[int]:
    return sorted({node.lineno for node in ast.walk(ast.parse(source)) if builds_made_from(node, keys)})


def test_made_from_is_recorded_only_through_its_home():
    """Every artifact records what it was made from with `gated_core.artifacts.made_from` (and checks it with
    `check_provenance`): no module writes a fingerprint key of MADE_FROM into a dict by hand (six did before)."""
    keys = made_from_keys()
    planted = ('meta = {"model": m, "weights_fingerprint": w}', 'expect["dataset_fingerprint"] = f',
               'check(path, {"dataset_fingerprint": stored}, key)', 'return {"statistics_fingerprint": s}')
    for source in planted:
        assert made_from_by_hand(source, keys) == [1], source
    assert made_from_by_hand('meta = {"model": m, **made_from(weights=w)}; meta.get("weights_fingerprint")', keys) == []
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    found = {str(p.relative_to(ROOT)): made_from_by_hand(p.read_text(), keys) for p in files}
    assert {path: lines for path, lines in found.items() if lines and path != PROVENANCE_HOME} == {}


def test_made_from_records_each_input_under_its_key_and_check_provenance_refuses_others(tmp_path):
    from gated_core.artifacts import check_provenance, made_from
    from gated_core.errors import UserError

    recorded = made_from(weights="w" * 16, statistics="s" * 16)
    assert list(recorded.items()) == [("weights_fingerprint", "w" * 16), ("statistics_fingerprint", "s" * 16)]
    with pytest.raises(ValueError, match="no input colour_fingerprint"):
        made_from(colour="red")
    meta = {**recorded, "k": 3}
    check_provenance(tmp_path / "a.pt", meta, {**made_from(weights="w" * 16), "k": 3}, "do it again")  # agrees: no error
    with pytest.raises(UserError, match=r"a\.pt: were made with k=3, not 4; do it again"):
        check_provenance(tmp_path / "a.pt", meta, {"k": 4}, "do it again")
    with pytest.raises(UserError, match=r"a\.pt: were made with other statistics .*; do it again"):
        check_provenance(tmp_path / "a.pt", meta, made_from(statistics="t" * 16), "do it again")


def test_case_studies_table_reads_back_what_was_written(tmp_path):
    """case_studies.csv has one home (`section6.write_case_studies` / `read_case_studies`), its rows typed."""
    import csv

    from wcos_casestudies.roles import CaseStudy
    from wcos_casestudies.section6 import read_case_studies, write_case_studies

    chosen = [CaseStudy("highest-kurtosis prediction neuron", 3, 17, "depletion", 12.5),
              CaseStudy("a reason, with a comma", 0, 2, "enrichment", 4.25)]
    assert read_case_studies(tmp_path) == []
    write_case_studies(chosen, tmp_path)
    assert read_case_studies(tmp_path) == chosen
    with (tmp_path / "case_studies.csv").open(newline="") as handle:  # the columns as casestudies.py wrote them before
        assert [row["reason"] for row in csv.DictReader(handle)] == [c.reason for c in chosen]
    assert (tmp_path / "case_studies.txt").read_text() == "3.17 0.2\n"


# ---- HTML through templates only (gated_core/html.py), and one colour scale for coloured tokens

HTML_HOME = "gated_core/html.py"  # the one template loader; the pages' HTML is in the packages' templates/ folders
# modules allowed to hold HTML markup in a string: the loader, and helpers that embed JavaScript or JSON in a page by
# hand (none today: the viewer's data files and the probe's payload are JSON, their script tags in templates)
HTML_BY_HAND_ALLOWED = (HTML_HOME,)
HTML_TAGS = ("<!doctype", "<html", "<body", "<div", "<table", "<tr", "<td", "<span", "<a href", "<figure", "<details",
             "<h1", "<h2")


def docstring_nodes(tree: ast.AST) -> set[int]:
    """The ids of the docstrings' Constant nodes of a module and its functions and classes (they may name tags)."""
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def html_by_hand(source: str) -> list[int]:
    """The lines of string literals (plain, or the text of an f-string) that hold an HTML tag of HTML_TAGS."""
    tree = ast.parse(source)
    skip = docstring_nodes(tree)
    return sorted({node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
                   and id(node) not in skip and any(tag in node.value.lower() for tag in HTML_TAGS)})


def test_html_is_built_only_by_templates():
    """Pages are rendered from Jinja2 templates with autoescape (`gated_core.html.render`); no module assembles HTML
    from strings (five did before: the results index, the neuroscope's pages and lists, the probe's page and the
    notebook's coloured text)."""
    planted = ('page = f"<html><body>{body}</body></html>"', "row = '<tr>' + cells + '</tr>'",
               'link = f\'<a href="{href}">{text}</a>\'', 'x = "<DIV class=t>"', 'f"{a}<span title={t}>{s}</span>"')
    for source in planted:
        assert html_by_hand(source) == [1], source
    assert html_by_hand('"""A page: <div> and <span> in a docstring."""\nx = "a < b"; y = b"<html>"; z = "<script"') == []
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    found = {str(p.relative_to(ROOT)): html_by_hand(p.read_text()) for p in files}
    assert {path: lines for path, lines in found.items() if lines and path not in HTML_BY_HAND_ALLOWED} == {}


def test_notebook_colours_tokens_on_the_pages_scale():
    """The notebook's coloured text (`probe.notebook.token_background`) and the pages' (`assets/common.js`,
    draw.background) give every token the same background, or none, on one scale with one NEAR_WHITE."""
    import json
    import re
    import shutil

    from neuroscope.probe.notebook import NEAR_WHITE, token_background
    from neuroscope.view.html import ASSETS

    common = (ASSETS / "common.js").read_text(encoding="utf-8")
    assert float(re.search(r"var NEAR_WHITE = ([0-9.e-]+);", common).group(1)) == NEAR_WHITE
    cases = [(f * scale, scale) for scale in (0.0, 0.3, 1.0, 7.5) for f in
             (0.0, NEAR_WHITE, -NEAR_WHITE, NEAR_WHITE * 1.0001, -NEAR_WHITE * 1.0001, 0.0049, 0.25, -0.5, 1.0, -3.0)]
    assert token_background(0.0, 1.0) == "" and token_background(1.0, 1.0) == "rgb(255,0,0)"
    assert token_background(NEAR_WHITE, 1.0) == "" and token_background(-2 * NEAR_WHITE, 1.0).endswith(",255)")
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: draw.background not compared")
    script = common + f"\nconsole.log(JSON.stringify({json.dumps(cases)}.map(function (c) {{ return draw.background(c[0], c[1]); }})));"
    backgrounds = json.loads(subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60, check=True).stdout)
    assert [token_background(value, scale) for value, scale in cases] == backgrounds


# ---- tests that build once: fixtures in tests/conftest.py, shared code in tests/helpers.py, no test module imported


def imported_test_modules(source: str) -> list[str]:
    """The test modules (test_*) that `source` imports, by `import` or `from ... import`."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return sorted({name.split(".")[0] for name in names if name.split(".")[0].startswith("test_")})


def test_no_test_module_imports_another():
    """A test module takes shared code from helpers.py and fixtures from conftest.py, never from another test module
    (whose module-scoped fixtures would be built once more in each module that imports them)."""
    planted = ("import test_safety\n", "from test_neuroscope import dump_dom\n", "import os, test_viewer as v\n",
               "def f():\n    from test_typical import brute_band\n")
    assert [imported_test_modules(source) for source in planted] == [["test_safety"], ["test_neuroscope"], ["test_viewer"],
                                                                     ["test_typical"]]
    assert imported_test_modules("import helpers\nfrom conftest import x\nfrom .test_a import b\nimport pytest\n") == []
    found = {path.name: imported_test_modules(path.read_text()) for path in sorted((ROOT / "tests").glob("*.py"))}
    assert "helpers.py" in found and "conftest.py" in found
    assert {name: modules for name, modules in found.items() if modules} == {}


# ---- what the page writers receive stays in the view stage (and what it may read of earlier stages)

def walked_types(function, depth: int = 3) -> set[type]:
    """The classes that `function`'s parameters are annotated with, and, walking into dataclasses and NamedTuples,
    the classes of their fields, `depth` levels down (generic arguments such as dict[int, X] included)."""
    import dataclasses
    import typing

    seen: set[type] = set()

    def visit(hint, level: int) -> None:
        for argument in typing.get_args(hint):
            visit(argument, level)
        origin = typing.get_origin(hint)
        kind = hint if isinstance(hint, type) and origin is None else None
        if kind is None or kind in seen:
            return
        seen.add(kind)
        if level < depth:
            hints = typing.get_type_hints(kind) if dataclasses.is_dataclass(kind) or hasattr(kind, "_fields") else {}
            for field_hint in hints.values():
                visit(field_hint, level + 1)

    for name, hint in typing.get_type_hints(function).items():
        if name != "return":
            visit(hint, 0)
    return seen


def out_of_stage(kinds: set[type], stage: str, interfaces: dict[str, tuple[str, ...]]) -> list[str]:
    """The project classes among `kinds` that a writer of `stage` may not receive: those of a later stage, or of an
    earlier stage's own modules (not its INTERFACE), or of the scripts."""
    order = list(interfaces)
    found = []
    for kind in kinds:
        parts = kind.__module__.split(".")
        if parts[0] != "neuroscope" or (len(parts) == 3 and parts[1] == stage):
            continue
        allowed = len(parts) == 3 and order.index(parts[1]) < order.index(stage) and parts[2] in interfaces[parts[1]]
        if not allowed:
            found.append(f"{kind.__module__}.{kind.__qualname__}")
    return sorted(found)


def test_page_writers_receive_only_their_stage_and_earlier_interfaces():
    """A walk of what the page writer (`write_pages`) and the viewer writer (`write_viewer`) receive, three levels
    into their dataclasses, meets only the view stage's own types, core's and earlier stages' interfaces (the
    statistics, the recomputed examples), gated_core and wcos_casestudies: no bag from a script or a later stage."""
    from neuroscope.activation_pass.store import Statistics, StatisticsMeta
    from neuroscope.view.pages import write_pages
    from neuroscope.view.viewer import write_viewer

    interfaces = stage_interfaces()
    for writer in (write_pages, write_viewer):
        kinds = walked_types(writer)
        assert {Statistics, StatisticsMeta} <= kinds, writer.__name__  # the walk reaches into the statistics' fields
        assert out_of_stage(kinds, "view", interfaces) == [], writer.__name__

    from neuroscope.activation_pass.collect import PassRequest  # the pass's own module: not in its INTERFACE
    from neuroscope.classes.neuron_sets import NeuronSet  # a later stage
    from neuroscope.view.workflow import PageRequest  # the view's own: allowed

    planted = {PassRequest, NeuronSet, PageRequest}
    assert out_of_stage(planted, "view", interfaces) == ["neuroscope.activation_pass.collect.PassRequest",
                                                         "neuroscope.classes.neuron_sets.NeuronSet"]


# ---- the view's data format in one home (neuroscope/view/parts.py)

FORMAT_HOME = "neuroscope/view/parts.py"
ARRAY_KEYS = ("b64", "deflate")  # the JSON of an array and of a file's DEFLATE stream: written and read only in parts.py
DTYPE_CODES = re.compile(r"""["'](u1|i1|u2|i4|f4|f2)["']""")  # the page reads dtypes from the schema, not by name


def array_format_by_hand(source: str) -> list[int]:
    """The lines of string literals that name an array's JSON keys (ARRAY_KEYS), outside docstrings."""
    tree = ast.parse(source)
    skip = docstring_nodes(tree)
    return sorted({node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in ARRAY_KEYS
                   and id(node) not in skip})


def test_the_view_format_has_one_home():
    """The view's parts are dataclasses of `parts.py`, serialised and read there only: no other module writes or reads
    an array's JSON by hand, and the page's renderer reads the dtypes from the schema written into it (it was written
    twice, in Python and in viewer.js, before)."""
    planted = ('x = {"dtype": d, "b64": base64.b64encode(a).decode()}', 'raw = payload["deflate"]["b64"]',
               'if "b64" in value: pass')
    assert [array_format_by_hand(source) for source in planted] == [[1], [1], [1]]
    assert array_format_by_hand('"""An array is {"dtype", "b64"}."""\nkey = "b64x"') == []
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    found = {str(p.relative_to(ROOT)): array_format_by_hand(p.read_text()) for p in files}
    assert {path: lines for path, lines in found.items() if lines and path != FORMAT_HOME} == {}
    assert DTYPE_CODES.search('if (p.dtype === "u1") {') and not DTYPE_CODES.search("SCHEMA.dtypes[p.dtype]")
    for script in sorted((ROOT / "neuroscope" / "view" / "assets").glob("*.js")):
        assert not DTYPE_CODES.search(script.read_text()), script.name
