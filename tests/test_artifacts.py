"""Artifacts: both formats round-trip, atomic writes, unreadable and foreign files refused."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from gated_core.artifacts import PROJECT_TAG, atomic_write_bytes, find_artifact, load_artifact, save_artifact
from gated_core.errors import UserError


def _data():
    return {
        "meta": {"project": PROJECT_TAG, "model": "m", "threshold": 0.5, "versions": {"torch": "x"}},
        "linout": torch.randn(3, 7, dtype=torch.float64),
        "categories": torch.randint(0, 11, (3, 7)).to(torch.int8),
        "quartiles": {"linout": torch.rand(5, 3)},
        "names": ["a", "b"],
    }


@pytest.mark.parametrize("suffix", ["pt", "pickle"])
def test_round_trip(tmp_path, suffix):
    data = _data()
    path = save_artifact(data, tmp_path / f"data.{suffix}")
    back = load_artifact(path)
    assert back["meta"] == data["meta"] and back["names"] == data["names"]
    for key in ("linout", "categories"):
        assert torch.equal(back[key], data[key]) and back[key].dtype == data[key].dtype
    assert torch.equal(back["quartiles"]["linout"], data["quartiles"]["linout"])
    assert find_artifact(tmp_path, "data") == path
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


@pytest.mark.parametrize("suffix", ["pt", "pickle"])
def test_truncated_file_is_refused(tmp_path, suffix):
    path = save_artifact(_data(), tmp_path / f"data.{suffix}")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="cannot read"):
        load_artifact(path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_foreign_pickle_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data.pickle"
    path.write_bytes(pickle.dumps({"meta": {"project": PROJECT_TAG}, "x": _Evil(marker)}))
    with pytest.raises(UserError, match="cannot read"):
        load_artifact(path)
    assert not marker.exists()


def test_pickle_of_someone_else_is_refused(tmp_path):
    path = tmp_path / "data.pickle"
    path.write_bytes(pickle.dumps({"linout": np.zeros(3)}))
    with pytest.raises(UserError, match="not a result file"):
        load_artifact(path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
