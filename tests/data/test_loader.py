import collections

import pytest
import torch

from harness.data.loader import EvalSampler, TrainSampler, WeightedSourceSampler, collate_clips


def test_collate_shapes():
    items = [([torch.zeros(3, 4, 8, 8)] * 2, i, torch.zeros(2, 4, dtype=torch.int64)) for i in range(5)]
    batch = collate_clips(items)
    assert batch.clips.shape == (5, 2, 3, 4, 8, 8)
    assert batch.labels.tolist() == [0, 1, 2, 3, 4]
    assert batch.clip_indices.shape == (5, 2, 4)


@pytest.mark.parametrize("size", [10, 11, 13])
def test_train_sampler_splits_ranks_without_overlap(size):
    ranks = [TrainSampler(size, rank, 2, seed=7) for rank in range(2)]
    for sampler in ranks:
        sampler.set_epoch(3)
    orders = [list(s) for s in ranks]
    assert len(orders[0]) == len(orders[1]) == (size + 1) // 2, "equal steps per rank"
    union = orders[0] + orders[1]
    assert set(union) == set(range(size))
    assert len(union) - len(set(union)) == (size % 2), "only the wrap-around pad repeats"


def test_train_sampler_reshuffles_per_epoch_and_resumes():
    sampler = TrainSampler(50, 0, 1, seed=1)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0, start=20)
    assert list(sampler) == first[20:] and len(sampler) == 30


@pytest.mark.parametrize("size, world", [(10, 2), (11, 2), (7, 3)])
def test_eval_sampler_counts_every_item_once(size, world):
    orders = [list(EvalSampler(size, rank, world)) for rank in range(world)]
    flat = [i for order in orders for i in order]
    assert sorted(flat) == list(range(size))


def test_weighted_sampler_mixes_sources_in_proportion():
    sampler = WeightedSourceSampler([100, 10], [1.0, 3.0], seed=0, num_samples_per_epoch=20000)
    counts = collections.Counter(i >= 100 for i in sampler)
    assert counts[True] / 20000 == pytest.approx(0.75, abs=0.02)
    small_source = [i for i in sampler if i >= 100]
    assert set(small_source) == set(range(100, 110))


def test_rank_outside_world_is_an_error():
    with pytest.raises(ValueError, match="rank 2"):
        TrainSampler(10, 2, 2)
