"""torchrun: 2 CPU ranks on gloo. Gradients averaged as an in-process reference does, one run
directory, resume on both ranks, a killed rank ends the job with a checkpoint, elastic restarts."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from pixelplay.agents import ALGOS, make_config
from pixelplay.agents.checkpoint import load_checkpoint
from pixelplay.agents.distributed import Distributed
from pixelplay.envs.vec import StepResult

ROOT = Path(__file__).resolve().parent.parent
OBS_SHAPE = (4, 68, 68)
NUM_ACTIONS = 3
NUM_ENVS = 2
SMALL = {
    # One minibatch: its order (torch's global stream, shared by the reference's threads) then
    # changes only the summation order; two epochs make two synchronised optimiser steps.
    "ppo": {"num_steps": 8, "num_minibatches": 1, "update_epochs": 2, "features_dim": 32},
    "dqn": {"learning_starts": 0, "batch_size": 8, "train_frequency": 1, "buffer_size": 64, "features_dim": 32,
            "n_step": 1},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _agent(algo: str, world_size: int):
    cfg = make_config(algo, SMALL[algo])
    return ALGOS[algo].agent(cfg, OBS_SHAPE, NUM_ACTIONS, NUM_ENVS, 1000, torch.device("cpu"), frame_stack=4,
                             world_size=world_size)


def _feed(agent, algo: str, rank: int) -> None:
    """The same synthetic experience for rank ``rank`` wherever it is built (own generator)."""
    gen = torch.Generator().manual_seed(100 + rank)

    def obs():
        return torch.randint(0, 256, (NUM_ENVS, *OBS_SHAPE), dtype=torch.uint8, generator=gen)

    if algo == "ppo":
        for _ in range(agent.storage.num_steps):
            agent.storage.add(obs(), torch.randint(0, NUM_ACTIONS, (NUM_ENVS,), generator=gen),
                              -torch.rand(NUM_ENVS, generator=gen), torch.randn(NUM_ENVS, generator=gen),
                              torch.randn(NUM_ENVS, generator=gen), torch.rand(NUM_ENVS, generator=gen) < 0.2)
        agent._next_obs = obs()
        return
    torch.manual_seed(1000 + rank)  # the replay's sampling stream, as in the reference
    agent.replay  # noqa: B018 - allocate it now, from that stream
    current = obs()
    for _ in range(12):
        nxt = obs()
        done = torch.rand(NUM_ENVS, generator=gen) < 0.2
        result = StepResult(nxt, torch.randn(NUM_ENVS, generator=gen), done, torch.zeros(NUM_ENVS, dtype=torch.bool),
                            nxt.clone(), [])
        agent.observe(current, torch.randint(0, NUM_ACTIONS, (NUM_ENVS,), generator=gen), result)
        current = nxt


def _weights(agent, algo: str) -> dict[str, torch.Tensor]:
    net = agent.net if algo == "ppo" else agent.q_net
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _rank_main(rank: int, algo: str, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    dist = Distributed.from_environment(torch.device("cpu"), timeout_s=120)
    torch.manual_seed(rank)  # different initial weights per rank, as under torchrun
    agent = _agent(algo, 2)
    dist.broadcast_state({k: v for k, v in agent.state_dict().items() if k != "optimizer"})
    initial = _weights(agent, algo)
    agent.gradient_sync = dist.average_gradients
    _feed(agent, algo, rank)
    step = NUM_ENVS * 2 * (agent.storage.num_steps if algo == "ppo" else 12)
    agent.update(step)
    torch.save({"initial": initial, "after": _weights(agent, algo)}, Path(out) / f"rank{rank}.pt")
    dist.close()


class ThreadAllReduce:
    """The reference: two agents in one process, each in a thread, meet at every optimiser step
    and replace their gradients by the mean of both (no torch.distributed involved)."""

    def __init__(self):
        self.barrier = threading.Barrier(2)
        self.grads: dict[int, list[torch.Tensor]] = {}

    def sync_for(self, rank: int):
        def sync(parameters):
            grads = [p.grad for p in parameters if p.grad is not None]
            self.grads[rank] = [g.clone() for g in grads]
            self.barrier.wait()
            mean = [(a + b) / 2 for a, b in zip(self.grads[0], self.grads[1], strict=True)]
            self.barrier.wait()
            for grad, value in zip(grads, mean, strict=True):
                grad.copy_(value)
        return sync


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_two_ranks_update_like_averaged_gradients_in_one_process(algo, tmp_path):
    mp.spawn(_rank_main, args=(algo, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, tensor in ranks[0]["initial"].items():
        assert torch.equal(tensor, ranks[1]["initial"][key]), f"initial weights differ: {key}"
    for key, tensor in ranks[0]["after"].items():
        assert torch.equal(tensor, ranks[1]["after"][key]), f"ranks disagree after the update: {key}"

    reduce = ThreadAllReduce()
    agents = []
    for rank in range(2):
        agent = _agent(algo, 2)
        net = agent.net if algo == "ppo" else agent.q_net
        net.load_state_dict(ranks[0]["initial"])
        if algo == "dqn":
            agent.target_net.load_state_dict(ranks[0]["initial"])
        agent.gradient_sync = reduce.sync_for(rank)
        _feed(agent, algo, rank)
        agents.append(agent)
    errors = []

    def run(rank):
        try:
            step = NUM_ENVS * 2 * (agents[rank].storage.num_steps if algo == "ppo" else 12)
            agents[rank].update(step)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    reference = _weights(agents[0], algo)
    for key, tensor in reference.items():
        torch.testing.assert_close(ranks[0]["after"][key], tensor, rtol=1e-4, atol=1e-6, msg=key)
    assert any(not torch.equal(ranks[0]["initial"][k], ranks[0]["after"][k]) for k in reference), "nothing learned"


# ---------------------------------------------------------------------------------------------
# The real CLI under torchrun.

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
RUN = ["--env", "doom-basic", "--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2",
       "--update-epochs", "1", "--no-track", "--no-progress"]


def _torchrun(*args: str, cwd: Path, timeout: int = 300, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, *extra, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_rank_run_writes_one_directory_and_resumes_on_both_ranks(tmp_path):
    run_dir = tmp_path / "job" / "run"
    result = _torchrun(*RUN, "--total-steps", "512", "--run-dir", str(run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "weights identical on all 2 ranks" in result.stdout
    # One run directory, made by rank 0; nothing else (no runs/ of rank 1's), beside ViZDoom's files.
    assert {p.name for p in tmp_path.iterdir()} - {"_vizdoom", "_vizdoom.ini"} == {"job"}
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "config.json", "episodes.csv", "metrics.csv"]
    episodes = _csv(run_dir / "episodes.csv")
    assert {row["rank"] for row in episodes} == {"0", "1"}
    steps = [int(row["global_step"]) for row in episodes]
    assert steps == sorted(steps)
    assert [int(r["global_step"]) for r in _csv(run_dir / "metrics.csv")] == [128, 256, 384, 512]
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng_ranks"]) == 2

    result = _torchrun("--resume", str(run_dir), "--total-steps", "768", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "weights identical on all 2 ranks" in result.stdout
    assert load_checkpoint(run_dir)["global_step"] == 768

    single = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(run_dir), "--total-steps", "1024"],
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 2 and "saved by a run of 2 rank(s)" in single.stderr


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of torchrun's worker process with RANK=rank (a child of the launcher)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == launcher.pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def _wait(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _kill_rank_1_after_the_first_checkpoint(run_dir: Path, *launch: str, total_steps: int,
                                            timeout: int) -> tuple[int, str, str]:
    """Start ``torchrun [launch...] train.py ...``, SIGKILL rank 1 once a checkpoint exists, and
    return the launcher's exit code, stdout and stderr (never hangs past ``timeout``)."""
    launcher = subprocess.Popen([*TORCHRUN, *launch, str(ROOT / "train.py"), *RUN, "--total-steps", str(total_steps),
                                 "--checkpoint-interval", "256", "--run-dir", str(run_dir)],
                                cwd=run_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: (run_dir / "checkpoints" / "latest.pt").exists())
        pid = _rank_pid(launcher, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        out, err = launcher.communicate(timeout=timeout)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    return launcher.returncode, out, err


def test_a_killed_rank_ends_the_job_with_a_checkpoint_and_no_hang(tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = _kill_rank_1_after_the_first_checkpoint(run_dir, total_steps=100_000, timeout=120)
    assert code != 0
    assert "rank 0 lost the other ranks" in err or "stopped by SIGTERM" in err, err[-3000:]
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["global_step"] > 0 and checkpoint["world_size"] == 2


def test_an_elastic_restart_resumes_the_run_by_itself(tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = _kill_rank_1_after_the_first_checkpoint(run_dir, "--max-restarts", "1", total_steps=1280,
                                                             timeout=300)
    assert code == 0, err[-3000:]
    assert "weights identical on all 2 ranks" in out
    assert load_checkpoint(run_dir)["global_step"] == 1280
    steps = [int(r["global_step"]) for r in _csv(run_dir / "metrics.csv")]
    assert steps == sorted(steps) and steps[-1] == 1280


@pytest.mark.slow
def test_two_ranks_of_ppo_learn_doom_basic(tmp_path):
    run_dir = tmp_path / "learn"
    result = _torchrun("--env", "doom-basic", "--num-envs", "4", "--total-steps", "150000", "--stop-return", "75",
                       "--run-dir", str(run_dir), "--no-track", "--no-progress", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    returns = [float(r["return"]) for r in _csv(run_dir / "episodes.csv")]
    assert len(returns) >= 20 and sum(returns[-20:]) / 20 >= 75
