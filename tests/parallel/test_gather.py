"""Prediction rows go to the main rank only: the other ranks never hold everyone's rows."""

from __future__ import annotations

import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.parallel.ddp import DDPStrategy
from harness.parallel.precision import Precision


def _rank(rank: int, port: int, results) -> None:
    import torch

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    strategy = DDPStrategy(torch.device("cpu"), Precision("float32", torch.device("cpu")), rank, 2)
    rows = [f"video{rank}_{i}" for i in range(3 + rank)]
    results[rank] = (strategy.gather_to_main(rows), strategy.gather_objects(len(rows)))
    dist.destroy_process_group()


@pytest.mark.slow
def test_gather_to_main_leaves_the_other_ranks_empty_handed():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(port, results), nprocs=2)
    assert results[0][0] == [["video0_0", "video0_1", "video0_2"], ["video1_0", "video1_1", "video1_2", "video1_3"]]
    assert results[1][0] == [], "rank 1 receives nothing"
    assert results[0][1] == results[1][1] == [3, 4], "the all-gather still reaches every rank"
