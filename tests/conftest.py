"""Shared fixtures, each built once per test session: tiny random checkpoints of every family, the small world of the
data-safety tests (`work`), the viewer of every neuron of a tiny Llama (`viewer`) and the world of the class
ablations (`ablation_world`).

A test that changes files of a shared world works on a copy (helpers.copy_data, helpers.copied); `work` is checked
after every test that uses it, so that no test can change what a later one reads.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers import (
    CORPUS_TEXTS,
    close_browser,
    dataset_args,
    pass_args,
    snapshot,
    succeeds,
    tiny_run,
    write_corpus,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def share_the_cores() -> None:
    """Under pytest-xdist (`make test` runs one worker per core, up to 4), each worker and the processes its tests
    start use their share of the cores: torch's threads on every worker at once would contend for the same cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, threads)
        if "torch" in sys.modules:  # imported already: its thread count was read at import
            sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


share_the_cores()


def pytest_sessionfinish(session, exitstatus):
    close_browser()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """family -> folder of a tiny random checkpoint with a byte-level tokenizer."""
    from wcos_casestudies.synthetic import FAMILIES, tiny_checkpoint

    base = tmp_path_factory.mktemp("tiny")
    return {family: tiny_checkpoint(family, base / family, seed=index) for index, family in enumerate(FAMILIES)}


@pytest.fixture(scope="session")
def smollm2_source():
    """The embedded SmolLM2-135M GGUF (installed by the project's set-up)."""
    from gated_core.models.sources import resolve_model

    return resolve_model("smollm2-135m", allow_download=False)


@pytest.fixture(scope="session")
def work(tiny_models, tmp_path_factory):
    """A tiny Llama, a dataset `docs` made by a_dataset.py from a .jsonl corpus (CORPUS_TEXTS), its statistics `acts`
    and main.py's results (read only: a test that changes them works on a copy)."""
    from neuroscope import a_dataset, b_activations
    from wcos_casestudies import main as main_script

    root = tmp_path_factory.mktemp("safety")
    model = tiny_models["llama"]
    corpus = write_corpus(root / "corpus.jsonl", CORPUS_TEXTS)
    datadir = root / "data"
    succeeds(a_dataset.main, dataset_args(datadir, "docs", corpus, model))
    succeeds(b_activations.main, pass_args(model, datadir, "acts"))
    succeeds(main_script.main, ["--model", model, "--results_dir", root / "results", "--quartiles", "--categories"])
    return {"root": root, "model": model, "corpus": corpus, "datadir": datadir, "results": root / "results"}


@pytest.fixture(autouse=True)
def _shared_world_unchanged(request):
    """After a test that uses the shared `work`: its files are as they were (test order never matters)."""
    if "work" not in request.fixturenames:
        yield
        return
    world = request.getfixturevalue("work")
    if "root" not in world:  # a module's own fixture of that name
        yield
        return
    before = snapshot(world["root"])
    yield
    assert snapshot(world["root"]) == before, "the test changed the shared world `work`: change a copy of it"


@pytest.fixture(scope="session")
def viewer(tiny_models, tmp_path_factory):
    """The viewer of every neuron of a tiny Llama over PASS_TEXTS (one of them hostile markup)."""
    from gated_core.artifacts import load_artifact
    from gated_core.cli import run_main
    from neuroscope import d_recompute_vis

    datadir = tmp_path_factory.mktemp("viewer")
    source, dataset, results, argv = tiny_run(tiny_models["llama"], datadir)
    assert run_main(d_recompute_vis.main, argv) == 0
    return {"folder": results / "local" / "llama" / "neuroscope" / "viewer", "source": source, "dataset": dataset,
            "stats": load_artifact(datadir / "ref" / "stats.pt"), "pages": results / "local" / "llama" / "neuroscope"}


@pytest.fixture(scope="session")
def ablation_world(tiny_models, tmp_path_factory):
    """A tiny Llama, a dataset of ABLATION_TEXTS (and `other`, its first 4 documents), its statistics `acts`
    (b_activations.py) and the planted IO classes PLANTED in a results tree."""
    import datasets
    import torch
    from helpers import ABLATION_TEXTS, ORTHOGONAL, PLANTED

    from gated_core.artifacts import load_artifact
    from gated_core.cli import run_main
    from gated_core.models.loading import load_hf_model, load_tokenizer
    from gated_core.models.sources import resolve_model
    from neuroscope import b_activations
    from neuroscope.data.dataset_store import load_tokenized, save_dataset
    from neuroscope.data.tokenization import build_dataset
    from wcos_casestudies.results import ModelResults, Settings

    folder = tiny_models["llama"]
    source = resolve_model(str(folder))
    datadir = tmp_path_factory.mktemp("ablation_data")
    tokenizer = load_tokenizer(source)
    dataset, meta = build_dataset(datasets.Dataset.from_dict({"text": ABLATION_TEXTS}), tokenizer, None, max_length=40)
    meta.update({"tokenizer": source.name, "dataset": "test"})
    save_dataset(dataset, meta, datadir / "data")
    save_dataset(dataset.select(range(4)), {**meta, "documents": 4}, datadir / "other")
    assert run_main(b_activations.main, ["--model", str(folder), "--datadir", str(datadir), "--dataset", "data",
                                         "--save_to", "acts", "--examples_per_neuron", "2", "--device", "cpu"]) == 0
    results_dir = tmp_path_factory.mktemp("ablation_results")
    results = ModelResults(source, Settings(), root=results_dir)
    categories = torch.full_like(results.categories(), ORTHOGONAL)
    for code, layers in PLANTED.items():
        for layer, neurons in layers.items():
            categories[layer, neurons] = code
    results.data["categories"] = categories.to(torch.int8)
    results.save()
    model, _ = load_hf_model(source)
    return {"folder": folder, "source": source, "datadir": datadir, "dataset": load_tokenized(datadir / "data")[0],
            "stats": load_artifact(datadir / "acts" / "stats.pt"), "results_dir": results_dir, "results": results,
            "model": model, "pad_id": tokenizer.pad_token_id}
