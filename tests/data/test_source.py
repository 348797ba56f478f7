"""Listings and shards, training and validation: one protocol, so that no caller asks which it holds."""

import pytest

from harness.data import ClipSpec, EvalTransform, TrainTransform, VideoClipDataset
from harness.data.listing import read_listing
from harness.data.shard_eval import ShardEvalDataset
from harness.data.shards import ShardDataset, list_shards
from harness.data.source import LoaderSettings, VideoSource

SPEC = ClipSpec(4, frame_step=2)


@pytest.fixture(scope="module")
def sources(demo_root, demo_shards):
    records = read_listing(demo_root / "train.csv")
    manifest = str(demo_shards / "train" / "manifest.json")
    val_manifest = str(demo_shards / "val" / "manifest.json")
    return {
        "listing": VideoClipDataset([(records, SPEC)], TrainTransform(32, normalize=False)),
        "shards": ShardDataset([list_shards(manifest)], SPEC, TrainTransform(32, normalize=False),
                               manifests=[manifest]),
        "val_shards": ShardEvalDataset(list_shards(val_manifest), SPEC, EvalTransform(32, normalize=False),
                                       manifests=[val_manifest]),
    }  # fmt: skip


@pytest.mark.parametrize("name, size", [("listing", 24), ("shards", 24), ("val_shards", 8)])
def test_every_source_answers_the_same_questions(sources, name, size):
    source = sources[name]
    assert isinstance(source, VideoSource)
    assert source.size() == size and source.class_count() == 4
    assert source.label_problem(4) is None
    problem = source.label_problem(3)
    assert problem and "3 classes" in problem
    assert source.stats()["failed"] == 0


@pytest.mark.parametrize("name, train, videos", [("listing", True, 8), ("shards", True, 8), ("val_shards", False, 5)])
def test_every_source_makes_its_own_loader(sources, name, train, videos):
    settings = LoaderSettings(4, rank=0, world_size=2, num_workers=0, batches_per_epoch=2 if train else None)
    loader = sources[name].make_loader(settings, train=train)
    loader.set_epoch(0)
    batches = [b for b in loader if b is not None]
    # training: 2 batches of 4 on this rank; validation: rank 0's shards (3 + 2 of the 8 samples)
    assert sum(len(b.labels) for b in batches) == videos and all(len(b.labels) <= 4 for b in batches)
