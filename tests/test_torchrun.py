"""The long steps under `torchrun --nproc_per_node 2` on the CPU (gloo), against one process: the activation pass
merged by rank 0 tensor by tensor (after a rank was stopped mid-run and the same command resumed it), the ablation
tables table by table; bad WORLD_SIZE / RANK, ranks started with other flags, and one rank's mistake end every
rank with one line and exit status 2."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from helpers import STAT_KEYS

from gated_core.artifacts import load_artifact
from gated_core.cli import run_main
from neuroscope import b_activations, d_recompute_vis, e_ablate

pytestmark = pytest.mark.slow  # torchrun and ranks in processes of their own
RANKS = 2
LAUNCH_TIMEOUT = 240  # seconds for one torchrun command on 2 busy cores


def one_thread(main, argv: list[str]) -> int:
    """`run_main(main, argv)` with one thread, as each rank under torchrun (OMP_NUM_THREADS=1): on the CPU the sums
    inside a matrix product depend on the number of threads, so only runs with the same number are bit-identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_main(main, argv)
    finally:
        torch.set_num_threads(threads)


def torchrun(script, argv: list[str]) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 script argv` (script: a module of neuroscope)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(RANKS),
               script.__file__, *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_ranks(script, argv_of_rank) -> list[subprocess.CompletedProcess]:
    """Start the ranks by hand, as torchrun would (its environment), each with its own flags."""
    port = free_port()
    processes = []
    for rank in range(RANKS):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": str(RANKS), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        processes.append(subprocess.Popen([sys.executable, script.__file__, *argv_of_rank(rank)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return [subprocess.CompletedProcess(p.args, p.wait(LAUNCH_TIMEOUT), *p.communicate()) for p in processes]


@pytest.fixture(scope="module")
def world(ablation_world, tmp_path_factory):
    """The class-ablation world with a copy of its data folder, which these tests write statistics into."""
    datadir = tmp_path_factory.mktemp("torchrun") / "data"
    shutil.copytree(ablation_world["datadir"], datadir)
    return {**ablation_world, "datadir": datadir}


def pass_argv(world, save_to: str, *extra) -> list[str]:
    return ["--model", str(world["folder"]), "--datadir", str(world["datadir"]), "--dataset", "data", "--save_to", save_to,
            "--examples_per_neuron", "2", "--batch_size", "2", "--device", "cpu", *extra]


def test_the_pass_split_by_torchrun_is_merged_and_exact_and_resumes(world):
    """Rank 0 had finished its shard and rank 1 was killed after one of its two batches (their files made here as
    --num_shards 2 --shard_index r, the names and contents a torchrun rank gives them): the torchrun command keeps
    shard 0, resumes shard 1 from its checkpoint, and rank 0 merges exactly the statistics of one process."""
    datadir = world["datadir"]
    assert one_thread(b_activations.main, pass_argv(world, "one")) == 0
    assert one_thread(b_activations.main, pass_argv(world, "ranks", "--num_shards", "2", "--shard_index", "0")) == 0
    assert one_thread(b_activations.main, pass_argv(world, "ranks", "--num_shards", "2", "--shard_index", "1",
                                                  "--stop_after_batches", "1", "--checkpoint_every", "1")) == 0
    assert (datadir / "ranks" / f"stats.shard1of{RANKS}.partial.pt").exists()
    resumed = torchrun(b_activations, pass_argv(world, "ranks"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "stats.shard0of2.pt exists for these settings" in resumed.stdout
    assert "resuming from the checkpoint at batch 3 of 2..4" in resumed.stdout
    assert f"merged {RANKS} shards" in resumed.stdout
    assert not (datadir / "ranks" / f"stats.shard1of{RANKS}.partial.pt").exists()
    one, merged = load_artifact(datadir / "one" / "stats.pt"), load_artifact(datadir / "ranks" / "stats.pt")
    for key in STAT_KEYS:
        assert torch.equal(one[key], merged[key]), key
    assert merged["meta"]["merged_from"] == RANKS and merged["meta"]["batches"] == one["meta"]["batches"]


def results_copy(world, folder):
    """A results tree holding the world's planted classes (data.pt) and nothing else."""
    (folder / "local" / "llama").mkdir(parents=True)
    (folder / "local" / "llama" / "data.pt").write_bytes(world["results"].path.read_bytes())
    return folder


def test_the_viewer_of_every_neuron_split_by_torchrun_is_the_same(world, tmp_path):
    def argv(results):
        return ["--model", str(world["folder"]), "--datadir", str(world["datadir"]), "--activations", "acts",
                "--results_dir", str(results), "--device", "cpu", "--neurons", "all", "--batch_size", "2"]

    assert one_thread(d_recompute_vis.main, argv(results_copy(world, tmp_path / "one"))) == 0
    done = torchrun(d_recompute_vis, argv(results_copy(world, tmp_path / "ranks")))
    assert done.returncode == 0, done.stderr[-3000:]
    one, ranks = (tmp_path / name / "local" / "llama" / "neuroscope" / "viewer" for name in ("one", "ranks"))
    files = sorted(path.relative_to(one) for path in one.rglob("*") if path.is_file())
    assert files and files == sorted(path.relative_to(ranks) for path in ranks.rglob("*") if path.is_file())
    for name in files:
        assert (one / name).read_bytes() == (ranks / name).read_bytes(), name


@pytest.mark.parametrize("environment", [{"WORLD_SIZE": "zero"}, {"WORLD_SIZE": "0"}, {"WORLD_SIZE": "2", "RANK": "2"},
                                         {"WORLD_SIZE": "2", "RANK": "1"}])
def test_a_bad_torchrun_environment_is_one_line(world, monkeypatch, capsys, environment):
    """Bad values, a RANK outside WORLD_SIZE, WORLD_SIZE without torchrun's MASTER_ADDR: refused before any work."""
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for script, argv in ((b_activations, pass_argv(world, "bad")),
                         (e_ablate, ["--datadir", str(world["datadir"]), "--activations", "acts", "--device", "cpu"])):
        assert run_main(script.main, argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and ("RANK" in err or "WORLD_SIZE" in err), err
    assert not (world["datadir"] / "bad").exists()


@pytest.mark.parametrize(("differing", "expected"), [(["--batch_size", "3"], "rank 1 was started with other settings"),
                                                     (["--dataset", "missing"], "missing: no such dataset")])
def test_ranks_started_differently_end_every_rank_in_one_line(world, differing, expected):
    """Rank 1 with another batch size (settings differ) or a dataset that is not there (a mistake on one rank
    only, before the others meet it): every rank ends with one line and exit status 2, none waits."""
    results = launch_ranks(b_activations, lambda rank: pass_argv(world, "mixed", *(differing if rank else [])))
    for result in results:
        lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
        assert expected in lines[0], lines
    assert not (world["datadir"] / "mixed" / "stats.pt").exists()
