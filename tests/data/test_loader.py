import collections

import pytest
import torch

from harness.data.loader import (
    ClipItem,
    EvalSampler,
    ItemWeightedSampler,
    TrainSampler,
    WeightedSourceSampler,
    collate_clips,
)


def item(label: int) -> ClipItem:
    return ClipItem([torch.zeros(3, 4, 8, 8)] * 2, label, torch.zeros(2, 4, dtype=torch.int64), f"v{label}.mp4")


def test_collate_shapes():
    batch = collate_clips([item(i) for i in range(5)])
    assert batch.clips.shape == (5, 2, 3, 4, 8, 8)
    assert batch.labels.tolist() == [0, 1, 2, 3, 4]
    assert batch.clip_indices.shape == (5, 2, 4)
    assert batch.videos == [f"v{i}.mp4" for i in range(5)]


def test_collate_drops_unusable_items():
    batch = collate_clips([item(0), None, item(2)])
    assert batch.labels.tolist() == [0, 2] and batch.videos == ["v0.mp4", "v2.mp4"]
    assert collate_clips([None, None]) is None


def test_train_sampler_epoch_length_can_exceed_dataset():
    sampler = TrainSampler(10, 0, 1, seed=0, num_samples_per_epoch=25)
    order = list(sampler)
    assert len(order) == 25
    assert set(order[:10]) == set(range(10)) and set(order[10:20]) == set(range(10)), "whole fresh passes"


@pytest.mark.parametrize("world", [1, 2])
def test_repeated_augmentation_keeps_copies_together(world):
    size, repeats = 12, 3
    orders = [list(TrainSampler(size, rank, world, seed=4, repeats=repeats)) for rank in range(world)]
    for order in orders:
        assert len(order) == size // world
        for start in range(0, len(order), repeats):
            group = order[start : start + repeats]
            assert len({i % size for i in group}) == 1, "copies of one video sit side by side"
            assert len(set(group)) == len(group), "each copy has its own index (own augmentation)"
    videos = [i % size for order in orders for i in order]
    assert len(set(videos)) == size // repeats


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


def test_collate_pads_multi_label_items():
    batch = collate_clips([item((1, 3)), item(2), item((0, 1, 2))])
    assert batch.labels.tolist() == [[1, 3, -1], [2, -1, -1], [0, 1, 2]]


def test_item_weighted_sampler_follows_the_weights_and_splits_ranks():
    weights = [1.0, 0.0, 3.0, 4.0]
    orders = [list(ItemWeightedSampler(weights, rank, 2, seed=3, num_samples_per_epoch=40000)) for rank in range(2)]
    assert len(orders[0]) == len(orders[1]) == 20000
    counts = collections.Counter(orders[0] + orders[1])
    assert counts[1] == 0, "a zero weight is never drawn"
    assert [counts[i] / 40000 for i in (0, 2, 3)] == pytest.approx([0.125, 0.375, 0.5], abs=0.01)
    again = ItemWeightedSampler(weights, 0, 2, seed=3, num_samples_per_epoch=40000)
    assert list(again) == orders[0], "the same epoch draws the same indices"
    again.set_epoch(1)
    assert list(again) != orders[0], "another epoch draws others"
    with pytest.raises(ValueError, match="must not all be 0"):
        ItemWeightedSampler([0.0, 0.0])


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_class_balanced_weights_soften_with_the_power(tmp_path, power):
    from harness.data.files import VideoClipDataset
    from harness.data.listing import VideoRecord
    from harness.data.sampling import ClipSpec

    # 8 videos of class 0, 2 of class 1, 1 of class 2 (multi-label: the rarest class counts)
    records = [VideoRecord(f"a{i}.mp4", 0) for i in range(8)] + [VideoRecord("b0.mp4", 1), VideoRecord("b1.mp4", 1)]
    records.append(VideoRecord("c0.mp4", (0, 2)))
    dataset = VideoClipDataset([(records, ClipSpec(4, frame_step=1))], lambda clip: clip, decoder="pyav")
    assert dataset.class_counts(3).tolist() == [9, 2, 1]
    weights = dataset.sampling_weights(power, None)
    share = [weights[:8].sum(), weights[8:10].sum(), weights[10]]
    expected = [8 * 9**-power, 2 * 2**-power, 1.0]
    assert share == pytest.approx([len(records) * e / sum(expected) for e in expected])
