"""Data safety, round 2: what the fingerprints miss.

- The tokenizer: a dataset records the fingerprint of the tokenizer's vocabulary (every token string by id and the
  special tokens), and every run that uses the dataset with a model's tokenizer (the activation pass, the pages and
  the viewer that decode its tokens) refuses another tokenizer of the same size before the model loads.
- The weights: `--full_hash` hashes every byte of the weight files, so that an edit outside the sampled blocks with
  the modification time restored is noticed; a fingerprint of one kind is never taken for a match of the other.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from helpers import assert_flags_exist, copy_data, page_args, pass_args, refused, succeeds
from transformers import AutoTokenizer

from gated_core.fingerprint import SAMPLE_BYTES, weights_fingerprint
from neuroscope import b_activations, d_recompute_vis
from neuroscope.activation_pass import collect
from neuroscope.data.dataset_store import META_FILE
from neuroscope.recompute import examples as recompute
from wcos_casestudies import main as main_script


def _swap_tokens(model: Path, first: str, second: str) -> None:
    """Swap the ids of two tokens in the model folder's tokenizer.json (same size, same special tokens)."""
    path = model / "tokenizer.json"
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    path.write_text(json.dumps(data))


def _model_not_loaded(*args, **kwargs):
    raise AssertionError("the model was loaded before the tokenizer was checked")


def test_a_tokenizer_with_swapped_ids_is_refused(work, tmp_path, monkeypatch):
    """Same size, same weights, two token ids swapped: the pass and the viewer refuse it before the model loads."""
    same, swapped = tmp_path / "same" / "llama", tmp_path / "swapped" / "llama"
    shutil.copytree(work["model"], same)  # with the files' times: the same weights fingerprint
    shutil.copytree(work["model"], swapped)
    _swap_tokens(swapped, "a", "e")
    original, changed = AutoTokenizer.from_pretrained(work["model"]), AutoTokenizer.from_pretrained(swapped)
    id_of_a = original.convert_tokens_to_ids("a")
    assert len(original) == len(changed) and changed.decode([id_of_a]) == "e"  # the viewer would show every "a" as "e"
    datadir = copy_data(work, tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(collect, "load_hf_model", _model_not_loaded)
        patch.setattr(recompute, "load_hf_model", _model_not_loaded)
        line = refused(b_activations.main, pass_args(swapped, datadir, "swapped"), tmp_path, "another tokenizer")
        assert_flags_exist(line, b_activations)
        line = refused(d_recompute_vis.main, page_args(swapped, datadir, tmp_path / "pages", "acts", "--viewer", "v"),
                       tmp_path, "another tokenizer")
        assert_flags_exist(line, d_recompute_vis)
    succeeds(b_activations.main, pass_args(same, datadir, "same"))
    succeeds(d_recompute_vis.main, page_args(same, datadir, tmp_path / "pages", "acts", "--viewer", "v"))


def test_a_dataset_without_a_tokenizer_fingerprint_still_works(work, tmp_path):
    """A dataset of an older a_dataset.py records no tokenizer fingerprint: used with the size check and one note."""
    datadir = copy_data(work, tmp_path)
    meta_path = datadir / "docs" / META_FILE
    meta = json.loads(meta_path.read_text())
    assert meta.pop("tokenizer_fingerprint", None) is not None
    meta_path.write_text(json.dumps(meta))
    outcome = succeeds(b_activations.main, pass_args(work["model"], datadir, "old"))
    notes = [line for line in outcome.err.splitlines() if "tokenizer fingerprint" in line]
    assert len(notes) == 1 and notes[0].startswith("note:"), outcome.err


def _edit_outside_the_samples(weights: Path) -> None:
    """Flip one byte that none of the three sampled blocks covers, and put the modification time back."""
    stat = weights.stat()
    first_gap_end = stat.st_size // 2 - SAMPLE_BYTES // 2
    assert first_gap_end > SAMPLE_BYTES + 1, "the weight file is too small to have unsampled bytes"
    offset = (SAMPLE_BYTES + first_gap_end) // 2
    with weights.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x40]))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_full_hash_notices_an_edit_the_sampled_fingerprint_misses(work, tmp_path):
    """An edit outside the sampled blocks with the time restored: missed by default (documented), noticed by --full_hash."""
    model = tmp_path / "m" / "llama"
    shutil.copytree(work["model"], model)
    results, datadir = tmp_path / "results", copy_data(work, tmp_path)
    succeeds(main_script.main, ["--model", model, "--results_dir", results, "--full_hash"])
    succeeds(b_activations.main, pass_args(model, datadir, "full", "--full_hash"))
    sampled, full = weights_fingerprint(model), weights_fingerprint(model, full=True)
    _edit_outside_the_samples(model / "model.safetensors")
    assert weights_fingerprint(model) == sampled  # the default's documented limitation
    assert weights_fingerprint(model, full=True) != full
    refused(main_script.main, ["--model", model, "--results_dir", results, "--full_hash"], tmp_path, "other weights")
    refused(b_activations.main, pass_args(model, datadir, "full", "--full_hash"), tmp_path, "other weights")
    refused(d_recompute_vis.main, page_args(model, datadir, tmp_path / "pages", "full", "--full_hash"), tmp_path,
            "other weights")


def test_a_fingerprint_of_the_other_kind_is_never_a_match(work, tmp_path):
    """Results of one kind of weights fingerprint, asked for with the other: one line that names --full_hash."""
    results, datadir = tmp_path / "results", copy_data(work, tmp_path)
    model = work["model"]
    succeeds(main_script.main, ["--model", model, "--results_dir", results, "--full_hash"])
    line = refused(main_script.main, ["--model", model, "--results_dir", results], tmp_path, "made with --full_hash")
    assert_flags_exist(line, main_script)
    shutil.copytree(work["results"], tmp_path / "sampled")
    line = refused(main_script.main, ["--model", model, "--results_dir", tmp_path / "sampled", "--full_hash"], tmp_path,
                   "without --full_hash")
    assert_flags_exist(line, main_script)
    line = refused(b_activations.main, pass_args(model, work["datadir"], "acts", "--full_hash"), work["datadir"],
                   "without --full_hash")
    assert_flags_exist(line, b_activations)
    line = refused(d_recompute_vis.main, page_args(model, datadir, tmp_path / "pages", "acts", "--full_hash"), tmp_path,
                   "without --full_hash")
    assert_flags_exist(line, d_recompute_vis)
