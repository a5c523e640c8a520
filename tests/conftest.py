"""Shared fixtures: tiny random checkpoints of every family, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
