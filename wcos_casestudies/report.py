"""`results/<model>/index.html`: one page that links every output of a model — plots (shown),
tables (shown, with their CSV and Markdown files), neuron pages, artifacts and the folders of
other settings — so that a user opens one file. It lists what is on disk, so every script can
refresh it after writing. The page is `templates/results_index.html` (gated_core.html.render); this module finds
what it lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from gated_core.artifacts import atomic_write_text
from gated_core.html import Markup, render
from gated_core.results_layout import (
    INDEX_PAGE,
    OWN_SECTION_FOLDERS,
    START_HERE,
    TOKENS_FOLDER,
    find_outputs,
    find_pages,
)

TABLE_ROWS_SHOWN = 60  # longer tables are linked, not shown
ARTIFACT_SUFFIXES = (".pt", ".pickle", ".json", ".txt")
PLOT_ORDER = ("fine", "coarse", "boxplot", "selected")  # the paper's order; other plots follow by name


@dataclass(frozen=True)
class Link:
    """A relative link from the index: `href` its path URL-encoded (a name may hold #, ?, % or spaces), `text` shown."""

    href: str
    text: str


@dataclass(frozen=True)
class Figure:
    """A plot shown on the index: its PNG (`src`, the path as it is), a link to it and to its PDF (None: no PDF)."""

    src: str
    alt: str
    png: Link
    pdf: Link | None


@dataclass(frozen=True)
class Table:
    """A table of the index: its CSV and Markdown links, its rows, and the table itself where it is short (`shown`,
    pandas' escaped HTML) or None."""

    stem: str
    links: tuple[Link, ...]
    rows: int
    shown: Markup | None


@dataclass(frozen=True)
class Analysis:
    """One analysis folder (e.g. `frequency/`): its name, plots, tables and artifact files."""

    name: str
    figures: tuple[Figure, ...]
    tables: tuple[Table, ...]
    artifacts: tuple[Link, ...]


def link(path: Path, folder: Path, text: str | None = None) -> Link:
    """The link from the index in `folder` to `path`, shown as `text` (default: its relative path)."""
    relative = path.relative_to(folder).as_posix()
    return Link(quote(relative), text or relative)


def plots(folder: Path, root: Path | None = None) -> tuple[Figure, ...]:
    """Every PNG of `folder` in the paper's order, with its PDF where there is one; links relative to `root`
    (default: `folder`)."""
    root = root or folder

    def rank(png: Path) -> tuple[int, str]:
        return (PLOT_ORDER.index(png.stem) if png.stem in PLOT_ORDER else len(PLOT_ORDER), png.stem)

    return tuple(Figure(png.relative_to(root).as_posix(), png.stem, link(png, root),
                        link(png.with_suffix(".pdf"), root, "PDF") if png.with_suffix(".pdf").exists() else None)
                 for png in sorted(folder.glob("*.png"), key=rank))


def table(csv: Path, folder: Path) -> Table:
    """One table: shown when short (TABLE_ROWS_SHOWN rows at most; its classes in the naming in use), always linked
    (CSV and Markdown)."""
    import pandas as pd

    from gated_core.naming import shown as in_naming

    frame = pd.read_csv(csv)
    markdown = csv.with_suffix(".md")
    links = (link(csv, folder), *((link(markdown, folder),) if markdown.exists() else ()))
    shown = None if len(frame) > TABLE_ROWS_SHOWN else \
        Markup(in_naming(frame.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}", border=0)))
    return Table(csv.stem, links, len(frame), shown)


def tables(folder: Path) -> tuple[Table, ...]:
    """Every CSV table of the folder and of its `tokens/` folder."""
    csvs = sorted(folder.glob("*.csv")) + sorted((folder / TOKENS_FOLDER).glob("*.csv"))
    return tuple(table(csv, folder) for csv in csvs)


def analysis_folders(folder: Path) -> list[Path]:
    """Sub-folders (one or two levels down) with plots or tables of their own, e.g. `frequency/`,
    `ablation/<dataset>/`; not the neuron pages, the token tables or the results of other settings."""
    found = []
    for sub in sorted({*folder.glob("*/"), *folder.glob("*/*/")}):
        top = sub.relative_to(folder).parts[0]
        if top in OWN_SECTION_FOLDERS or (folder / top / "data.pt").exists():
            continue
        if any(sub.glob("*.png")) or any(sub.glob("*.csv")):
            found.append(sub)
    return found


def analyses(folder: Path) -> tuple[Analysis, ...]:
    """One sub-section per analysis folder: its plots shown, its tables shown or linked, its artifacts linked."""
    return tuple(Analysis(sub.relative_to(folder).as_posix(), plots(sub, folder),
                          tuple(table(csv, folder) for csv in sorted(sub.glob("*.csv"))),
                          tuple(link(p, folder, p.name) for p in sorted(sub.iterdir())
                                if p.is_file() and p.suffix in ARTIFACT_SUFFIXES))
                 for sub in analysis_folders(folder))


def pages(folder: Path) -> tuple[Link, ...]:
    """Neuron pages (every neuroscope index.html), whole-model viewers (every viewer.html) and probe pages."""
    return tuple(link(p, folder) for p in find_pages(folder))


def start_here(folder: Path) -> tuple[tuple[str, tuple[Link, ...]], ...]:
    """What the top of the index lists: the outputs a reader opens first, those that exist (up to 4 links each)."""
    found = ((output.what, find_outputs(folder, output)) for output in START_HERE)
    return tuple((what, tuple(link(path, folder) for path in paths[:4])) for what, paths in found if paths)


def others(folder: Path) -> tuple[Link, ...]:
    """Artifacts (data.pt, roles.pt, …) and the results of other settings (sub-folders with their own index)."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in ARTIFACT_SUFFIXES]
    variants = [p / INDEX_PAGE for p in sorted(folder.iterdir()) if (p / INDEX_PAGE).exists() and (p / "data.pt").exists()]
    return (*(link(p, folder) for p in files), *(link(p, folder, p.parent.name + "/ (other settings)") for p in variants))


def write_results_index(folder: Path, title: str) -> Path:
    """Write `folder/index.html` from what the folder holds now (`templates/results_index.html`); returns its path."""
    folder = Path(folder)
    page = render("wcos_casestudies", "results_index.html", title=title, folder=folder.name,
                  start_here=start_here(folder), plots=plots(folder), tables=tables(folder), pages=pages(folder),
                  analyses=analyses(folder), others=others(folder))
    path = folder / INDEX_PAGE
    atomic_write_text(path, page)
    return path
