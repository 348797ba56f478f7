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


@pytest.mark.parametrize("groups, shards", [(1, 4), (2, 2), (4, 1), (2, 3)])
@pytest.mark.parametrize("shape", [(7, 5), (3,), (1, 4)])
def test_hybrid_pieces_are_the_rows_of_a_group_replicated_across_groups(groups, shards, shape):
    whole = torch.randn(shape)
    layout = {"shard": "dim0", "shape": list(shape), "shards": shards}
    pieces = [split(whole, layout, rank, groups * shards) for rank in range(groups * shards)]
    for rank, piece in enumerate(pieces):  # rank r of a group of consecutive ranks: chunk r % shards
        assert torch.equal(piece, pieces[rank % shards])
    assert torch.equal(assemble(pieces, layout), whole)
    if groups == 1:  # a layout saved before HSDP (no shards): every rank holds its own rows
        assert torch.equal(assemble(pieces, {"shard": "dim0", "shape": list(shape)}), whole)


class RowSharded(FlatSharded):
    """One rank of an FSDP2-like layout (rows over groups of ``shards`` ranks)."""

    def __init__(self, rank: int, world_size: int, shards: int) -> None:
        super().__init__(rank, world_size)
        self.shards = shards

    def local_tensor(self, param):
        return split(param, self.layout(param), self.rank, self.world_size)

    def layout(self, param):
        return {"shard": "dim0", "shape": list(param.shape), "shards": self.shards}


def test_ema_of_plain_fsdp_resumes_as_hsdp_even_where_a_piece_has_the_same_shape(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(5, 3)  # 3 rows: over 4 ranks 1, 1, 1, 0 rows; over groups of 2: 2, 1, 2, 1
    average = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    for rank in range(4):  # what plain FSDP on 4 ranks wrote
        writer = RowSharded(rank, 4, shards=4)
        layouts = {name: writer.layout(p) for name, p in model.named_parameters()}
        pieces = {name: split(value, layouts[name], rank, 4) for name, value in average.items()}
        torch.save({EMA_KEY: pieces, LAYOUT_KEY: layouts}, tmp_path / f"rank_r{rank}.pt")
    for rank in range(4):  # read back as 2 groups of 2: rank 1's own piece (1 row) is row 1, not row 2
        strategy = RowSharded(rank, 4, shards=2)
        ema = ModelEMA(model, 0.9, strategy.local_tensor)
        own = torch.load(tmp_path / f"rank_r{rank}.pt", weights_only=True)
        assert ema.restore(tmp_path, strategy, model, own)
        for name, value in ema.state_dict().items():
            assert torch.equal(value, split(average[name], strategy.layout(value), rank, 4)), (rank, name)
