"""The shape of the project: scripts are thin (no script imports another, `--help` loads no torch),
the library has no import cycle, and nothing edits the import path."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gated_core", "wcos_casestudies", "neuroscope")  # each may import only those before it
SCRIPTS = ("wcos_casestudies/main.py", "wcos_casestudies/casestudies.py", "wcos_casestudies/defplot.py",
           "wcos_casestudies/selected_plot.py", "neuroscope/a_dataset.py", "neuroscope/b_activations.py",
           "neuroscope/b2_recompute.py", "neuroscope/c_neuron_vis.py", "neuroscope/d_recompute_vis.py",
           "neuroscope/e_ablate.py", "neuroscope/e_frequency.py", "neuroscope/f_probe.py",
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
