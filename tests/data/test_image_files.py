"""Still images as 1-frame videos: each format decodes to its source's pixels, image listings (text
and NPY) and image shard samples load as 1-frame clips (or the frame repeated into longer clips, as
V-JEPA 2's image probes feed a video encoder), and a broken image is a bad sample like a broken video."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data import ClipSpec, EvalTransform, TrainTransform, VideoClipDataset, build_loader
from harness.data.decode import DecodeError, is_image, open_video
from harness.data.listing import read_listing
from harness.data.sampling import sample_clip_indices
from harness.data.shard_io import decode_sample, list_shards, read_samples
from harness.data.transforms import DecodeScale
from tests.data.test_shards import write_tar
from tests.images import FORMATS, encode_image, smooth_frame


@pytest.mark.parametrize("extension", [*FORMATS, "JPEG"])
def test_each_format_decodes_to_its_source_pixels(extension, tmp_path):
    frame = smooth_frame(40, 56)
    path = tmp_path / f"picture.{extension}"
    path.write_bytes(encode_image(frame, extension))
    assert is_image(str(path))
    for source in (str(path), path.read_bytes()):  # a file, and a tar member's bytes
        reader = open_video(source, image=True if isinstance(source, bytes) else None)
        assert (reader.num_frames, reader.fps) == (1, 0.0)
        decoded = reader.get_frames(np.array([0, 0, 0]))
        assert decoded.shape == (3, 40, 56, 3) and decoded.dtype == torch.uint8
        difference = (decoded[0].int() - torch.from_numpy(frame).int()).abs().float()
        if extension.lower().startswith("jp"):  # lossy: close on average (block edges differ most)
            assert difference.mean() < 4
        else:
            assert difference.max() == 0, "lossless formats decode exactly"
        assert torch.equal(decoded[1], decoded[0]) and torch.equal(decoded[2], decoded[0])


def test_a_large_jpeg_decodes_smaller_when_the_crops_allow(tmp_path):
    path = tmp_path / "large.jpg"
    path.write_bytes(encode_image(smooth_frame(256, 320), "jpg"))
    reader = open_video(str(path), scale=DecodeScale(EvalTransform(32), 64))  # short side 64 asked for
    assert reader.get_frames(np.array([0])).shape == (1, 64, 80, 3), "DCT scaling, 1/4"


def test_an_image_has_one_frame_whatever_the_step_rule():
    for spec in (ClipSpec(1, fps=4), ClipSpec(4, duration=2.0), ClipSpec(4, frame_step=3, rule="vjepa2")):
        indices = sample_clip_indices(1, 0.0, spec, num_clips=2, random=True, rng=np.random.default_rng(0))
        assert indices.shape == (2, spec.frames_per_clip) and not indices.any()


@pytest.fixture()
def image_listing(tmp_path):
    """A space-separated listing of 8 images (two of each format) with relative paths."""
    lines = []
    for index in range(8):
        name = f"img{index}.{FORMATS[index % len(FORMATS)]}"
        (tmp_path / name).write_bytes(encode_image(smooth_frame(48, 64, seed=index), FORMATS[index % len(FORMATS)]))
        lines.append(f"{name} {index % 4}\n")
    (tmp_path / "images.txt").write_text("".join(lines))
    return tmp_path / "images.txt"


def test_an_image_listing_loads_batches_of_one_frame_clips(image_listing, tmp_path):
    listing = read_listing(image_listing)
    np.save(tmp_path / "images.npy", np.array([[listing.path(i), str(listing.label(i))] for i in range(len(listing))]))
    for source in (listing, read_listing(tmp_path / "images.npy")):
        train = VideoClipDataset([(source, ClipSpec(1, fps=4))], TrainTransform(32, normalize=False))
        loader = build_loader(train, 4, train=True, seed=0)
        loader.set_epoch(0)
        batches = list(loader)
        assert len(batches) == 2 and train.stats()["failed"] == 0
        for batch in batches:
            assert batch.clips.shape == (4, 1, 3, 1, 32, 32) and batch.clips.dtype == torch.uint8
            assert batch.clip_indices.shape == (4, 1, 1) and not batch.clip_indices.any()
        assert {path.rsplit(".", 1)[1] for b in batches for path in b.videos} == set(FORMATS)
    val = VideoClipDataset([(listing, ClipSpec(1, frame_step=4))], EvalTransform(32, num_views=2), train=False)
    batch = next(iter(build_loader(val, 8, train=False)))
    assert batch.clips.shape == (8, 2, 3, 1, 32, 32) and batch.clips.dtype == torch.float32


def test_longer_clips_repeat_the_image(image_listing):
    dataset = VideoClipDataset([(read_listing(image_listing), ClipSpec(4, frame_step=2))],
                               EvalTransform(32, normalize=False), num_clips=2, train=False)  # fmt: skip
    clips, _, indices, _ = dataset[0]
    assert len(clips) == 2 and clips[0].shape == (3, 4, 32, 32) and not indices.any()
    assert all(torch.equal(clip[:, t], clips[0][:, 0]) for clip in clips for t in range(4))


def test_image_samples_in_shards_read_as_one_frame_clips(tmp_path):
    frame = smooth_frame(48, 64)
    write_tar(tmp_path / "images.tar", [
        ("a.png", encode_image(frame, "png")), ("a.cls", b"2"),
        ("b.webp", encode_image(frame, "webp")), ("b.cls", b"1"),
        ("c.jpg", b"\xff\xd8\xff\xe0 not really a jpeg"), ("c.cls", b"0"),
    ])  # fmt: skip
    (shard,) = list_shards(str(tmp_path / "images.tar"))
    samples = list(read_samples(shard.url))
    rng = np.random.default_rng(0)
    items = [decode_sample(shard.url, key, parts, ClipSpec(1, fps=2), 1, EvalTransform(32), False, rng, "auto")
             for key, parts in samples[:2]]  # fmt: skip
    assert [item.label for item in items] == [2, 1] and items[0].clips[0].shape == (3, 1, 32, 32)
    assert torch.equal(items[0].clips[0], items[1].clips[0]), "the same pixels from PNG and WebP"
    with pytest.raises(DecodeError, match="cannot decode image"):
        decode_sample(shard.url, *samples[2], ClipSpec(1, fps=2), 1, EvalTransform(32), False, rng, "auto")


def test_a_broken_image_is_a_bad_sample_named_in_the_warnings(image_listing, caplog):
    folder = image_listing.parent
    (folder / "truncated.jpg").write_bytes((folder / "img1.jpg").read_bytes()[:300])
    (folder / "text.png").write_text("not an image\n")
    broken = ["truncated.jpg", "text.png", "missing.bmp"]
    with open(image_listing, "a") as handle:
        handle.writelines(f"{name} 0\n" for name in broken)
    listing = read_listing(image_listing)
    train = VideoClipDataset([(listing, ClipSpec(1, frame_step=1))], TrainTransform(32))
    with caplog.at_level(logging.WARNING, logger="harness.data.files"):
        items = [train[i] for i in range(len(train))]
    assert all(item.video.rsplit("/", 1)[1] not in broken for item in items), "replaced by good images"
    assert train.stats()["failed"] == 3 and train.attempt_counts() == (len(train) + 3, 3)
    assert sorted(p.rsplit("/", 1)[1] for p in train.failed_paths()) == sorted(broken)
    for name in broken:
        (record,) = [r for r in caplog.records if name in r.getMessage()]
        assert "cannot decode image" in record.getMessage()
    val = VideoClipDataset([(listing, ClipSpec(1, frame_step=1))], EvalTransform(32), train=False)
    assert [val[i] is None for i in range(len(val))] == [False] * 8 + [True] * 3, "evaluation drops them"


@pytest.mark.slow
def test_prepare_shards_images_as_they_are_and_they_train_and_evaluate(image_root, tmp_path):
    # harness.prepare packs a listed image as its own file (key.jpg, key.png...), never re-encoded
    from harness.config import load_config
    from harness.prepare import Settings, prepare
    from harness.training import Trainer
    from tests.conftest import tiny_overrides

    report = prepare(image_root / "train.csv", tmp_path / "shards", Settings(shard_samples=4),
                     val_input=image_root / "val.csv", workers=1)  # fmt: skip
    listed = [line.split()[0] for line in (image_root / "train.csv").read_text().splitlines()]
    members = {}
    for shard in list_shards(str(tmp_path / "shards" / "train" / "manifest.json")):
        for _, parts in read_samples(shard.url):
            media = next(suffix for suffix in parts if suffix not in ("cls", "json"))
            members[json.loads(parts["json"])["source"]] = (media, parts[media])
    assert len(members) == len(listed) == report["splits"]["train"]["clips"], report
    for path in listed:
        source = path if Path(path).is_absolute() else str(image_root / path)
        media, data = members[source]
        assert media == Path(path).suffix.lstrip(".").lower() and data == Path(source).read_bytes()
    overrides = tiny_overrides(image_root, tmp_path / "run", "data.datasets=[]", "data.dataset_fpcs=[1]",
                               "data.val_dataset_fpcs=[1]", "model.model_name=vit_tiny", "data.tubelet_size=1",
                               f"data.shards=[{tmp_path / 'shards' / 'train' / 'manifest.json'}]",
                               "optimization.epochs=1")  # fmt: skip
    Trainer(load_config(None, overrides)).fit()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["finished"]
    # and harness.evaluate reads the image validation listing, an image a row
    from harness.evaluate.cli import main as evaluate

    assert evaluate(["--config", str(tmp_path / "run" / "config.yaml"), "--checkpoint", str(tmp_path / "run"),
                     "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
    rows = (tmp_path / "eval" / "predictions.csv").read_text().splitlines()[1:]
    assert len(rows) == len((image_root / "val.csv").read_text().splitlines())
