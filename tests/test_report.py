"""The per-model index page links every output on disk and escapes what it shows."""

from __future__ import annotations

import html
import re

import pandas as pd

from wcos_casestudies.report import write_results_index


def test_index_links_every_output(tmp_path):
    folder = tmp_path / "org" / "model"
    (folder / "tokens").mkdir(parents=True)
    (folder / "neuroscope").mkdir()
    for sub in ("raw/frequency", "frequency", "ablation/pydoc", "neuroscope/viewer"):
        (folder / sub).mkdir(parents=True)
    for name in ("fine.png", "fine.pdf", "coarse.png", "data.pt", "case_studies.txt", "neuroscope/index.html",
                 "raw/data.pt", "raw/index.html", "raw/frequency/frequency.png", "frequency/frequency.png",
                 "ablation/pydoc/ablation.png", "ablation/pydoc/ablation.pdf", "ablation/pydoc/sets.pt",
                 "neuroscope/viewer/viewer.html"):
        (folder / name).write_bytes(b"x")
    pd.DataFrame({"token": ["<script>alert(1)</script>", "a & b"], "value": [0.5, -1.25]}).to_csv(folder / "tokens" / "3.7.csv", index=False)
    pd.DataFrame({"layer": range(100)}).to_csv(folder / "long.csv", index=False)
    pd.DataFrame({"class": ["depletion"], "gate_open": [0.6]}).to_csv(folder / "frequency" / "frequency.csv", index=False)
    pd.DataFrame({"set": ["depletion"], "loss_mean": [0.1]}).to_csv(folder / "ablation" / "pydoc" / "ablation.csv", index=False)

    page = write_results_index(folder, "org/model <GGUF>").read_text()
    hrefs = set(re.findall(r'(?:href|src)="([^"]+)"', page))
    assert {"fine.png", "fine.pdf", "coarse.png", "data.pt", "case_studies.txt", "neuroscope/index.html",
            "raw/index.html", "tokens/3.7.csv", "long.csv", "frequency/frequency.png", "frequency/frequency.csv",
            "ablation/pydoc/ablation.png", "ablation/pydoc/ablation.pdf", "ablation/pydoc/ablation.csv",
            "ablation/pydoc/sets.pt", "neuroscope/viewer/viewer.html"} <= {html.unescape(h) for h in hrefs}
    assert "raw/frequency" not in page  # the results of other settings have their own index
    assert page.index("fine.png") < page.index("coarse.png")  # the paper's order of plots
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "org/model &lt;GGUF&gt;" in page
    assert "long.csv</a> (100 rows)" in page  # long tables are linked, not shown
    assert not re.search(r"(https?:)?//", page)
    # the summary on top links the viewer, the pages, the case studies, frequency and ablations before the plots
    start = page[page.index("Start here"):page.index("<h2>Plots")]
    for target in ("neuroscope/viewer/viewer.html", "neuroscope/index.html", "frequency/frequency.png", "ablation/pydoc/ablation.png"):
        assert f'href="{target}"' in start, target
    assert "probe" not in start  # no probe page on disk: not listed
    (folder / "probe" / "demo").mkdir(parents=True)
    (folder / "probe" / "demo" / "probe.html").write_bytes(b"x")
    start = write_results_index(folder, "org/model").read_text()
    assert 'href="probe/demo/probe.html"' in start[start.index("Start here"):start.index("<h2>Plots")]
