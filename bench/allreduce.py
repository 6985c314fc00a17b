"""Gradient averaging under torchrun: one flattened all-reduce (pixelplay) against DDP, same run.

    python bench/allreduce.py [--ranks 2] [--iters 30] [--batch 64] [--device cpu]

Each rank runs forward + backward of the Nature-CNN actor-critic on a PPO-sized minibatch of
random 4x84x84 frames and averages the gradients, either with `Distributed.average_gradients`
(one all-reduce of all gradients, flattened, after backward) or through
``torch.nn.parallel.DistributedDataParallel`` (bucketed all-reduces overlapped with backward).
Prints milliseconds per step for both and the ratio. A benchmark, not a test: run it idle.
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import torch
import torch.multiprocessing as mp


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, args, port: int, results) -> None:
    from pixelplay.agents.distributed import Distributed
    from pixelplay.agents.networks import ActorCritic, NatureCNN

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(args.ranks), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // args.ranks))
    dist = Distributed.from_environment(torch.device(args.device))
    device = dist.device
    obs = torch.randint(0, 256, (args.batch, 4, 84, 84), dtype=torch.uint8, device=device)
    timings = {}
    for mode in ("flat", "ddp", "flat"):  # flat twice: the first pass also warms up
        net = ActorCritic(NatureCNN((4, 84, 84)), 4).to(device)
        model = torch.nn.parallel.DistributedDataParallel(net) if mode == "ddp" else net
        for i in range(args.iters + 3):
            if i == 3:
                start = time.perf_counter()
            logits, value = model(obs)
            loss = logits.logsumexp(-1).mean() + value.pow(2).mean()
            net.zero_grad(set_to_none=True)
            loss.backward()
            if mode == "flat":
                dist.average_gradients(net.parameters())
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings[mode] = (time.perf_counter() - start) / args.iters * 1000
    if rank == 0:
        results.put(timings)
    dist.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    results = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_rank, args=(args, _port(), results), nprocs=args.ranks, join=True)
    timings = results.get()
    print(f"{args.ranks} ranks, batch {args.batch}, {args.device}: flattened all-reduce {timings['flat']:.1f} ms/step, "
          f"DDP {timings['ddp']:.1f} ms/step; DDP / flattened = {timings['ddp'] / timings['flat']:.2f}")


if __name__ == "__main__":
    main()
