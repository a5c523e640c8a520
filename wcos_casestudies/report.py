"""`results/<model>/index.html`: one page that links every output of a model — plots (shown),
tables (shown, with their CSV and Markdown files), neuron pages, artifacts and the folders of
other settings — so that a user opens one file. It lists what is on disk, so every script can
refresh it after writing."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

from gated_core.artifacts import atomic_write_text

INDEX_NAME = "index.html"
VIEWER_NAME = "viewer.html"  # the whole-model viewer of neuroscope/view/viewer.py
SKIPPED_FOLDERS = ("neuroscope", "tokens")  # shown in their own sections
TABLE_ROWS_SHOWN = 60  # longer tables are linked, not shown
ARTIFACT_SUFFIXES = (".pt", ".pickle", ".json", ".txt")
PLOT_ORDER = ("fine", "coarse", "boxplot", "selected")  # the paper's order; other plots follow by name
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:75em;color:#222;padding:0 1em}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc} h3{font-size:1em}
figure{margin:1em 0} figure img{max-width:100%;max-height:80vh;border:1px solid #eee} figcaption{font-size:.9em;color:#555}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0} td,th{padding:.1em .5em;border-bottom:1px solid #eee;text-align:right}
details{margin:.5em 0} summary{cursor:pointer} .meta{color:#666;font-size:.9em}
"""


def link(path: Path, folder: Path, text: str | None = None) -> str:
    """An escaped relative link from the index to `path` (its path URL-encoded: a name may hold #, ?, % or spaces)."""
    relative = path.relative_to(folder).as_posix()
    return f'<a href="{html.escape(quote(relative))}">{html.escape(text or relative)}</a>'


def plots_html(folder: Path, root: Path | None = None) -> str:
    """Every PNG of `folder`, shown, with its PDF linked; links relative to `root` (default: `folder`)."""
    root = root or folder
    items = []
    def rank(png: Path) -> tuple[int, str]:
        return (PLOT_ORDER.index(png.stem) if png.stem in PLOT_ORDER else len(PLOT_ORDER), png.stem)

    for png in sorted(folder.glob("*.png"), key=rank):
        pdf = png.with_suffix(".pdf")
        extra = f" · {link(pdf, root, 'PDF')}" if pdf.exists() else ""
        items.append(f'<figure><img src="{html.escape(png.relative_to(root).as_posix())}" alt="{html.escape(png.stem)}" '
                     f'loading="lazy"><figcaption>{link(png, root)}{extra}</figcaption></figure>')
    return "".join(items)


def table_html(csv: Path, folder: Path) -> str:
    """One table: shown when short, always linked (CSV and Markdown)."""
    import pandas as pd

    frame = pd.read_csv(csv)
    markdown = csv.with_suffix(".md")
    links = link(csv, folder) + (f" · {link(markdown, folder)}" if markdown.exists() else "")
    if len(frame) > TABLE_ROWS_SHOWN:
        return f"<p>{links} ({len(frame)} rows)</p>"
    return (f"<details><summary>{html.escape(csv.stem)} ({len(frame)} rows)</summary>{links}"
            f"{frame.to_html(index=False, escape=True, float_format=lambda v: f'{v:.4g}', border=0)}</details>")


def tables_html(folder: Path) -> str:
    """Every CSV table of the folder and of its `tokens/` folder."""
    csvs = sorted(folder.glob("*.csv")) + sorted((folder / "tokens").glob("*.csv"))
    return "".join(table_html(csv, folder) for csv in csvs)


def analysis_folders(folder: Path) -> list[Path]:
    """Sub-folders (one or two levels down) with plots or tables of their own, e.g. `frequency/`,
    `ablation/<dataset>/`; not the neuron pages, the token tables or the results of other settings."""
    found = []
    for sub in sorted({*folder.glob("*/"), *folder.glob("*/*/")}):
        top = sub.relative_to(folder).parts[0]
        if top in SKIPPED_FOLDERS or (folder / top / "data.pt").exists():
            continue
        if any(sub.glob("*.png")) or any(sub.glob("*.csv")):
            found.append(sub)
    return found


def analyses_html(folder: Path) -> str:
    """One sub-section per analysis folder: its plots shown, its tables shown or linked."""
    parts = []
    for sub in analysis_folders(folder):
        tables = "".join(table_html(csv, folder) for csv in sorted(sub.glob("*.csv")))
        files = [link(p, folder, p.name) for p in sorted(sub.iterdir()) if p.is_file() and p.suffix in ARTIFACT_SUFFIXES]
        artifacts = f'<p class="meta">artifacts: {" · ".join(files)}</p>' if files else ""
        parts.append(f"<h3>{html.escape(sub.relative_to(folder).as_posix())}/</h3>{plots_html(sub, folder)}{tables}{artifacts}")
    return "".join(parts)


def pages_html(folder: Path) -> str:
    """Neuron pages (every neuroscope index.html) and whole-model viewers (every viewer.html)."""
    pages = sorted(p for p in (*folder.glob(f"*/{INDEX_NAME}"), *folder.glob("*/*/" + INDEX_NAME),
                               *folder.glob(f"*/*/{VIEWER_NAME}"), *folder.glob("probe/*/probe.html"))
                   if "neuroscope" in p.parts or "viewer" in p.parts or "probe" in p.parts)
    return "<ul>" + "".join(f"<li>{link(p, folder)}</li>" for p in pages) + "</ul>" if pages else ""


# what the summary at the top of the index links, where it is on disk: (glob patterns, what it is)
START_HERE = (
    (("neuroscope/viewer/viewer.html", "neuroscope/*/viewer.html"), "the viewer: every neuron of the model, filterable and sortable"),
    (("probe/*/probe.html",), "probe pages: the neurons' values on a text of one's own"),
    (("neuroscope/index.html",), "the case-study neurons' own pages"),
    (("case_studies.csv",), "why each case-study neuron was chosen (Section 6)"),
    (("connections/class_connections.png", "connections/connections.csv"),
     "connections: which neurons feed each neuron's gate and linear input, which read it, by IO class"),
    (("frequency/*.png", "frequency/*.csv"), "activation frequency by IO class"),
    (("ablation/*/*.png", "ablation/*/*.csv"), "class ablations: do the classes matter?"),
)


def start_here_html(folder: Path) -> str:
    """A short list at the top of the index: the outputs a reader opens first, those that exist, one line each."""
    items = []
    for patterns, what in START_HERE:
        found = next((sorted(folder.glob(pattern)) for pattern in patterns if any(folder.glob(pattern))), [])
        if found:
            links = " · ".join(link(path, folder) for path in found[:4])
            items.append(f"<li>{html.escape(what)}: {links}</li>")
    return "<ul>" + "".join(items) + "</ul>" if items else ""


def others_html(folder: Path) -> str:
    """Artifacts (data.pt, roles.pt, …) and the results of other settings (sub-folders with their own index)."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in ARTIFACT_SUFFIXES]
    variants = [p / INDEX_NAME for p in sorted(folder.iterdir()) if (p / INDEX_NAME).exists() and (p / "data.pt").exists()]
    items = [f"<li>{link(p, folder)}</li>" for p in files]
    items += [f"<li>{link(p, folder, p.parent.name + '/ (other settings)')}</li>" for p in variants]
    return "<ul>" + "".join(items) + "</ul>" if items else ""


def write_results_index(folder: Path, title: str) -> Path:
    """Write `folder/index.html` from what the folder holds now; returns its path."""
    folder = Path(folder)
    sections = [("Start here", start_here_html(folder)), ("Plots", plots_html(folder)), ("Tables", tables_html(folder)),
                ("Neuron pages, viewers and probes", pages_html(folder)),
                ("Beyond the paper: activation frequency and ablations", analyses_html(folder)),
                ("Artifacts and other settings", others_html(folder))]
    body = "".join(f"<h2>{name}</h2>{content}" for name, content in sections if content)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="meta">Every output in {html.escape(str(folder.name))}/, as it is on disk.</p>{body}</body></html>')
    path = folder / INDEX_NAME
    atomic_write_text(path, page)
    return path
