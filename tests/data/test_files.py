import logging

import pytest
import torch

from harness.data.files import TooManyDecodeFailures, VideoClipDataset
from harness.data.listing import VideoRecord, read_listing
from harness.data.loader import build_loader
from harness.data.sampling import ClipSpec
from harness.data.transforms import EvalTransform, TrainTransform

SPEC = ClipSpec(4, frame_step=2)


def dataset(paths, **kwargs):
    records = [VideoRecord(str(p), i) for i, p in enumerate(paths)]
    kwargs.setdefault("decoder", "pyav")
    return VideoClipDataset([(records, SPEC)], TrainTransform(crop_size=16), **kwargs)


def test_item_shapes_and_indices(good_videos):
    ds = dataset(good_videos, num_clips=3)
    clips, label, indices, _ = ds[2]
    assert label == 2 and len(clips) == 3
    assert all(c.shape == (3, 4, 16, 16) and c.dtype == torch.float32 for c in clips)
    assert indices.shape == (3, 4) and indices.dtype == torch.int64
    assert (indices[:, 1:] - indices[:, :-1] == 2).all()


def test_eval_views_multiply_clips(good_videos):
    records = [VideoRecord(str(p), 0) for p in good_videos]
    ds = VideoClipDataset([(records, SPEC)], EvalTransform(16, num_views=3), num_clips=2, train=False)
    clips, _, indices, _ = ds[3]
    assert len(clips) == 6 and indices.shape == (6, 4)
    assert torch.equal(indices[0], indices[2]) and not torch.equal(indices[0], indices[3])
    again = ds[3].clips
    assert all(torch.equal(a, b) for a, b in zip(clips, again)), "evaluation items are deterministic"


def test_items_depend_on_seed_epoch_index_only(good_videos):
    ds = dataset(good_videos, num_clips=2, seed=3)
    a = ds[1]
    torch.manual_seed(123)  # global RNG state must not matter
    b = ds[1]
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0]))
    ds.set_epoch(1)
    c = ds[1]
    assert not all(torch.equal(x, y) for x, y in zip(a[0], c[0]))


def test_bad_files_are_replaced_counted_and_logged_once(good_videos, bad_videos, caplog):
    paths = good_videos + bad_videos
    ds = dataset(paths)
    with caplog.at_level(logging.WARNING, logger="harness.data.files"):
        for epoch in range(2):
            ds.set_epoch(epoch)
            for i in range(len(ds)):
                clips, label, _, _ = ds[i]
                assert label < len(good_videos), "a broken video's item is replaced by a good one"
    stats = ds.stats()
    assert stats["failed"] == len(bad_videos)
    assert sorted(ds.failed_paths()) == sorted(map(str, bad_videos))
    for path in bad_videos:
        assert sum(str(path) in r.getMessage() for r in caplog.records) == 1, "logged once"
    # every attempt counts, a known bad video drawn again too (each epoch counts alike)
    assert stats["failed_attempts"] >= 2 * len(bad_videos)
    assert stats["attempts"] == 2 * len(ds) + stats["failed_attempts"], "one success per item"


def test_counts_feed_the_runs_verdict(good_videos, bad_videos):
    from harness.training.data_budget import FailureBudget

    ds = dataset(good_videos + bad_videos)
    budget = FailureBudget(ds.attempt_counts, lambda t: t, 0.2, planned=len(ds))  # 8 items: 1.6 allowed
    budget.start_epoch(0)
    done = 0
    with pytest.raises(TooManyDecodeFailures, match=r"training epoch 1: \d+ of \d+ videos .*max_failure_fraction=0.2"):
        for i in range(len(ds)):
            ds[i]
            done += 1
            budget.check()
    assert done < len(ds), "stopped mid-epoch: the epoch's budget was spent"
    assert ds.stats()["failed_attempts"] >= 2


def test_retries_are_bounded(bad_videos):
    ds = dataset(bad_videos, max_retries=3)
    with pytest.raises(TooManyDecodeFailures, match="4 videos in a row"):
        ds[0]


def test_filters_are_reported(good_videos):
    ds = dataset(good_videos, min_frames=60)  # short (12) and medium (50) are too short
    for i in range(len(ds)):
        ds[i]
    stats = ds.stats()
    assert (stats["failed"], stats["too_short"], stats["too_large"]) == (0, 2, 0)
    assert stats["failed_attempts"] == 0, "a filtered video is not a failure"
    small = dataset(good_videos, max_file_bytes=1)
    with pytest.raises(TooManyDecodeFailures):
        small[0]
    assert small.stats()["too_large"] >= 1


def test_demo_listing_through_workers_matches_main_process(tmp_path):
    from harness.data.synthetic import make_demo_dataset

    train, _ = make_demo_dataset(tmp_path, num_classes=2, train_per_class=3, val_per_class=1, progress=False)
    records = read_listing(train)
    ds = VideoClipDataset([(records, SPEC)], TrainTransform(crop_size=16), num_clips=2, seed=1)
    batches = {}
    for workers in (0, 2):
        loader = build_loader(ds, 2, train=True, num_workers=workers, seed=5)
        loader.set_epoch(1)
        batches[workers] = list(loader)
    assert len(batches[0]) == 3
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a.clips, b.clips) and torch.equal(a.labels, b.labels)


def test_uint8_items_normalised_on_device_equal_float_items(good_videos):
    from harness.data.loader import collate_clips
    from harness.data.transforms import normalize_clips

    records = [VideoRecord(str(p), 0) for p in good_videos]
    float_ds = VideoClipDataset([(records, SPEC)], TrainTransform(16), num_clips=2, seed=4)
    uint8_ds = VideoClipDataset([(records, SPEC)], TrainTransform(16, normalize=False), num_clips=2, seed=4)
    float_batch = collate_clips([float_ds[i] for i in range(4)])
    uint8_batch = collate_clips([uint8_ds[i] for i in range(4)])
    assert uint8_batch.clips.dtype == torch.uint8 and uint8_batch.clips.shape == float_batch.clips.shape
    torch.testing.assert_close(normalize_clips(uint8_batch.clips), float_batch.clips, rtol=1e-5, atol=1e-5)


def test_evaluation_dataset_drops_bad_videos_instead_of_replacing(good_videos, bad_videos):
    from harness.data.loader import collate_clips

    paths = good_videos + bad_videos
    records = [VideoRecord(str(p), i) for i, p in enumerate(paths)]
    ds = VideoClipDataset([(records, SPEC)], EvalTransform(16), train=False, decoder="pyav")
    items = [ds[i] for i in range(len(ds))]
    assert [item is None for item in items] == [False] * len(good_videos) + [True] * len(bad_videos)
    batch = collate_clips(items)
    assert batch.videos == [str(p) for p in good_videos], "every usable video once, no stand-ins"


def test_repeated_draws_share_the_video_not_the_augmentation(good_videos):
    ds = dataset(good_videos, seed=2)
    first, again = ds[1], ds[1 + len(ds)]
    assert first.video == again.video and first.label == again.label
    assert not torch.equal(first.clips[0], again.clips[0])
