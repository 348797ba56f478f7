"""Pieces of a parameter over ranks (FSDP2 rows, ZeRO-3 flat slices) and their reassembly, and an EMA
resumed on another number of ranks."""

import pytest
import torch
from torch import nn

from harness.parallel.precision import Precision
from harness.parallel.sharding import assemble, split
from harness.parallel.strategy import Strategy
from harness.training.state.ema import EMA_KEY, LAYOUT_KEY, ModelEMA


@pytest.mark.parametrize("kind", ["dim0", "flat"])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(7, 5), (3,), (2, 3, 4)])
def test_split_then_assemble_gives_the_whole_tensor(kind, world_size, shape):
    whole = torch.randn(shape)
    layout = {"shard": kind, "shape": list(shape)}
    pieces = [split(whole, layout, rank, world_size) for rank in range(world_size)]
    assert torch.equal(assemble(pieces, layout), whole)
    if kind == "flat":  # ZeRO-3: equal slices, the last one padded
        assert len({piece.numel() for piece in pieces}) == 1


class FlatSharded(Strategy):
    """One rank of a ZeRO-3-like layout (flat slices), for the EMA's resume path."""

    shards_parameters = True

    def __init__(self, rank: int, world_size: int) -> None:
        super().__init__(torch.device("cpu"), Precision("float32", torch.device("cpu")), rank, world_size)

    def local_tensor(self, param):
        return param.view(-1)

    def layout(self, param):
        return {"shard": "flat", "shape": list(param.shape)}


def test_ema_written_by_two_ranks_resumes_on_one(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    average = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    layouts = {name: {"shard": "flat", "shape": list(p.shape)} for name, p in model.named_parameters()}
    for rank in range(2):  # what two ranks wrote: each its slice of the average
        pieces = {name: split(value, layouts[name], rank, 2) for name, value in average.items()}
        torch.save({EMA_KEY: pieces, LAYOUT_KEY: layouts}, tmp_path / f"rank_r{rank}.pt")
    strategy = FlatSharded(rank=0, world_size=1)
    ema = ModelEMA(model, 0.9, strategy.local_tensor)
    own = torch.load(tmp_path / "rank_r0.pt", weights_only=True)  # rank 0's slice: the wrong shape here
    assert ema.restore(tmp_path, strategy, model, own)
    for name, value in ema.state_dict().items():
        assert torch.equal(value, average[name].flatten()), name
