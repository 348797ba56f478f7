"""Frame folders wherever a video goes: a listing mixing videos and folders at the rate of their
listing (``data.frame_folder_fps``) or of their line, fps sampling without a rate stopping with one
line naming the folder, ``harness.prepare`` encoding folders into shard clips, and the inputs of
``harness.predict`` / ``harness.embed``."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from harness.config import ConfigError, load_config
from harness.core.errors import message_of
from harness.data import ClipSpec, ClipSpecError, EvalTransform, VideoClipDataset, build_loader
from harness.data.decode import DecodeError, open_video
from harness.data.listing import read_listing
from harness.data.units import FrameRates, Unit, VideoUnits, collect_inputs, video_length
from harness.export.model_io import Preprocessing
from harness.prepare import Settings, prepare
from harness.training.data_parts import build_train_dataset, build_val_dataset
from tests.data.test_prepare import read_split
from tests.frame_folders import write_frames


@pytest.fixture()
def mixed_listing(video_dir, tmp_path):
    """``list.txt``: a 30 fps video, then two folders of its 120 frames (JPEG), relative paths."""
    video = video_dir / "long_30fps.mp4"
    frames = open_video(str(video)).get_frames(np.arange(120)).numpy()
    for name in ("A", "B"):
        write_frames(tmp_path / "frames" / name, frames, "jpg")
    (tmp_path / "list.txt").write_text(f"{video} 0\nframes/A 1\nframes/B 2\n")
    return tmp_path / "list.txt"


def steps(dataset: VideoClipDataset) -> list[int]:
    """The frame step of each item's (one, centred) clip."""
    return [int(np.diff(dataset[i].clip_indices[0].numpy())[0]) for i in range(len(dataset))]


def test_a_listing_mixes_videos_and_frame_folders_at_their_rates(mixed_listing):
    listing = read_listing(mixed_listing)
    spec, transform = ClipSpec(4, fps=5), EvalTransform(32, normalize=False)
    dataset = VideoClipDataset([(listing, spec)], transform, train=False, frame_fps=[30])
    items = [dataset[i] for i in range(3)]
    assert [item.video for item in items] == [listing.path(i) for i in range(3)]
    assert all(torch.equal(item.clip_indices, items[0].clip_indices) for item in items), "30 fps: step 6 for all"
    assert steps(dataset) == [6, 6, 6]
    video, folder = items[0].clips[0].float(), items[1].clips[0].float()
    assert (video - folder).abs().mean() < 3, "the folder holds the video's frames (JPEG-compressed)"
    # one rate per listing: the same folders listed again, at 10 fps
    twice = VideoClipDataset([(listing, spec), (listing, spec)], transform, train=False, frame_fps=[30, 10])
    assert steps(twice) == [6, 6, 6, 6, 2, 2], "the video keeps its own rate"
    # a line's own rate (the listing's fps column) wins over its listing's; an empty cell: the listing's
    rated = mixed_listing.with_name("rated.csv")
    video = read_listing(mixed_listing).path(0)
    rated.write_text(f"path,label,fps\n{video},0,\nframes/A,1,\nframes/B,2,15\n")
    dataset = VideoClipDataset([(read_listing(rated), spec)], transform, train=False, frame_fps=[30])
    assert dataset.frame_rate(2) == 15.0 and dataset.frame_rate(1) == 30.0
    assert steps(dataset) == [6, 6, 3]


def test_a_segment_in_seconds_of_a_folder_without_a_rate_stops_with_one_line(mixed_listing):
    # every segment of the folder would fail alike: a missing setting, never 100% bad samples
    folder = read_listing(mixed_listing).path(1)
    (mixed_listing.parent / "segments.csv").write_text(f"path,label,start,end\n{folder},1,0.5,1.5\n")
    listing = read_listing(mixed_listing.parent / "segments.csv")
    dataset = VideoClipDataset([(listing, ClipSpec(4, frame_step=2))], EvalTransform(32), train=False)
    with pytest.raises(ClipSpecError, match=f"^{folder}: a segment in seconds needs the frame folder's frame rate"):
        dataset[0]
    assert dataset.stats()["failed"] == 0
    rated = VideoClipDataset([(listing, ClipSpec(4, frame_step=2))], EvalTransform(32), train=False, frame_fps=[30])
    indices = rated[0].clip_indices
    assert indices.min() >= 15 and indices.max() < 45, "0.5-1.5 s at 30 fps: frames 15-44"


def test_fps_sampling_of_a_folder_without_a_rate_stops_with_one_line_naming_it(mixed_listing):
    listing = read_listing(mixed_listing)
    folder = listing.path(1)
    dataset = VideoClipDataset([(listing, ClipSpec(4, duration=1.0))], EvalTransform(32), train=False)
    assert dataset[0].clips, "a video carries its rate"
    with pytest.raises(ClipSpecError) as raised:
        dataset[1]
    expected = (f"{folder}: fps/duration sampling needs the video's frame rate, which is unknown; a frame "
                "folder's rate is data.frame_folder_fps (per listing) or its line's fps column, or sample with "
                "data.frame_step")  # fmt: skip
    assert str(raised.value) == expected
    assert dataset.stats()["failed"] == 0, "a setting to fix, not a bad video"
    loader = build_loader(dataset, 3, train=False, num_workers=1)  # as a run reads it: from a worker
    with pytest.raises(ClipSpecError) as raised:
        next(iter(loader))
    assert message_of(raised.value) == expected, "the entry point prints this one line"
    by_step = VideoClipDataset([(listing, ClipSpec(4, frame_step=2))], EvalTransform(32), train=False)
    assert steps(by_step) == [2, 2, 2], "frame_step needs no rate"


def test_the_config_gives_each_listing_its_rate(mixed_listing, tmp_path):
    base = [f"folder={tmp_path / 'run'}", "data.fps=5", "data.dataset_fpcs=[4]", "data.val_dataset_fpcs=[4]",
            "data.crop_size=32", "model.model_name=vit_tiny"]  # fmt: skip
    two = [f"data.datasets=[{mixed_listing},{mixed_listing}]", f"data.val_datasets=[{mixed_listing},{mixed_listing}]"]
    cases = [
        ([], [None, None], [None, None]),
        (["data.frame_folder_fps=[25]"], [25.0, 25.0], [25.0, 25.0]),
        (["data.frame_folder_fps=[0,12]"], [None, 12.0], [None, 12.0]),
        (["data.frame_folder_fps=[30,10]", "data.val_frame_folder_fps=[50]"], [30.0, 10.0], [50.0, 50.0]),
    ]
    for extra, train, val in cases:
        config = load_config(None, [*base, *two, *extra])
        assert build_train_dataset(config).frame_fps == train, extra
        assert build_val_dataset(config).frame_fps == val, extra
    config = load_config(None, [*base, *two, "data.frame_folder_fps=[30,10]"])
    assert steps(build_val_dataset(config)) == [6, 6, 6, 6, 2, 2]
    with pytest.raises(ConfigError, match=r"data.frame_folder_fps has 2 entries for 1 data.val_datasets; set "
                                          r"data.val_frame_folder_fps"):  # fmt: skip
        load_config(None, [*base, f"data.datasets=[{mixed_listing},{mixed_listing}]",
                           f"data.val_datasets=[{mixed_listing}]", "data.frame_folder_fps=[30,10]"])  # fmt: skip


def test_prepare_encodes_frame_folders_into_shard_clips(video_dir, tmp_path):
    source = open_video(str(video_dir / "medium_25fps.mp4")).get_frames(np.arange(50)).numpy()  # 2 s at 25 fps
    classes = tmp_path / "classes"
    write_frames(classes / "left" / "P01_01", source, "png")
    (classes / "right").mkdir()
    shutil.copy(video_dir / "medium_25fps.mp4", classes / "right" / "v.mp4")
    out = tmp_path / "shards"
    report = prepare(classes, out, Settings(segment_seconds=1, frame_fps=25), val_fraction=0, workers=1)
    assert report["skipped"] == []
    manifest, samples = read_split(out / "train")
    metas = {key: json.loads(sample["json"]) for key, sample in samples.items()}
    folder_keys = sorted(key for key, meta in metas.items() if meta["source"].endswith("P01_01"))
    assert len(folder_keys) == 2 and manifest["settings"]["frame_fps"] == 25
    for number, key in enumerate(folder_keys):  # two 1-second segments of 25 frames, real mp4 members
        reader = open_video(samples[key]["mp4"], "pyav")
        assert (reader.num_frames, round(reader.fps), metas[key]["frames"]) == (25, 25, 25)
        assert (metas[key]["start"], metas[key]["end"]) == (number, number + 1)
        decoded = reader.get_frames(np.arange(25)).float()
        assert (decoded - torch.from_numpy(source[25 * number : 25 * number + 25]).float()).abs().mean() < 4
    # without a rate a folder cannot be cut in seconds: reported, the videos still cut
    report = prepare(classes, tmp_path / "no_rate", Settings(segment_seconds=1), val_fraction=0, workers=1)
    assert [(entry["path"].endswith("P01_01"), "--frame-fps" in entry["reason"]) for entry in report["skipped"]] == [
        (True, True)
    ]
    # a ready clip (--chunked) that is a folder is encoded whole, at --fps when given
    (tmp_path / "chunks.csv").write_text(f"{classes / 'left' / 'P01_01'} 0\n")
    prepare(tmp_path / "chunks.csv", tmp_path / "chunked", Settings(fps=10, frame_fps=25), val_fraction=0, workers=1,
            chunked=True)  # fmt: skip
    _, samples = read_split(tmp_path / "chunked" / "train")
    (sample,) = samples.values()
    reader = open_video(sample["mp4"], "pyav")
    assert (reader.num_frames, round(reader.fps), json.loads(sample["json"])["frames"]) == (20, 10, 20)


def test_prepare_reads_each_lines_frame_rate_and_cuts_its_segment(video_dir, tmp_path):
    # a listing's fps column is the folder's rate (over --frame-fps), and a segment in frames is cut exactly
    source = open_video(str(video_dir / "medium_25fps.mp4")).get_frames(np.arange(50)).numpy()
    write_frames(tmp_path / "frames" / "A", source, "png")
    (tmp_path / "list.csv").write_text("path,label,start_frame,end_frame,fps\nframes/A,0,,,25\nframes/A,1,10,30,10\n")
    report = prepare(tmp_path / "list.csv", tmp_path / "out", Settings(segment_seconds=10, frame_fps=50,
                     min_seconds=0.5), val_fraction=0, workers=1)  # fmt: skip
    assert report["skipped"] == []
    _, samples = read_split(tmp_path / "out" / "train")
    metas = sorted(
        ((json.loads(sample["json"]), sample["mp4"]) for sample in samples.values()), key=lambda pair: pair[0]["label"]
    )
    spans = [(meta["label"], meta["start"], meta["end"], meta["frames"], meta["fps"]) for meta, _ in metas]
    assert spans == [(0, 0.0, 2.0, 50, 25.0), (1, 1.0, 3.0, 20, 10.0)], "50 frames at 25; frames 10-29 at 10 fps"
    reader = open_video(metas[1][1], "pyav")
    decoded = reader.get_frames(np.arange(20)).float()
    assert (decoded - torch.from_numpy(source[10:30]).float()).abs().mean() < 4, "the segment's own frames"


def test_predict_and_embed_inputs(tmp_path, caplog):
    frames = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    write_frames(tmp_path / "in" / "P01_01", frames, "jpg")
    write_frames(tmp_path / "in" / "P01_02", frames, "png", name="{:05d}")
    write_frames(tmp_path / "in" / "photos", frames[:1], "jpg", name="holiday")  # no number: an image
    write_frames(tmp_path / "in" / "photos", frames[:1], "jpg", name="beach")
    (tmp_path / "in" / "clip.mp4").write_bytes(b"")
    (tmp_path / "list.txt").write_text("in/P01_01 0\nin/photos/beach.jpg 1\n")
    root = tmp_path / "in"
    with caplog.at_level(logging.INFO, logger="harness.data.units"):
        videos, _ = collect_inputs([str(root)])
    assert len(videos) == 9 and videos[0] == str(root / "P01_01" / "frame_0000000001.jpg"), "images, one by one"
    assert "2 folder(s) of numbered images" in caplog.text and "--frame-folders" in caplog.text
    videos, _ = collect_inputs([str(root), str(tmp_path / "list.txt")], frame_folders=True)
    assert videos == [str(root / n) for n in ("P01_01", "P01_02", "clip.mp4", "photos/beach.jpg", "photos/holiday.jpg")
                      ] + [str(root / "P01_01"), str(root / "photos" / "beach.jpg")]  # fmt: skip
    assert collect_inputs([str(root / "P01_02")], frame_folders=True)[0] == [str(root / "P01_02")], "the input itself"

    assert video_length(str(root / "P01_01"), 25.0) == (3, 25.0)
    with pytest.raises(DecodeError, match=r"P01_01 has no frame rate for windows in seconds: give --frame-fps"):
        video_length(str(root / "P01_01"))
    preprocessing = Preprocessing(frames_per_clip=2, crop_size=16, class_names=["a", "b"], frame_step=None, fps=5)
    units = [Unit((0,), str(root / "P01_01"))]
    assert VideoUnits(units, preprocessing, "auto", frame_fps=10)[0][1].clip_indices.tolist() == [[0, 2]]
    _, error = VideoUnits(units, preprocessing, "auto")[0]
    assert error.endswith("unknown: give --frame-fps, or sample with --frame-step"), error
    # a listing's fps column gives each line's rate, over --frame-fps (predict and embed read it so)
    (tmp_path / "rated.csv").write_text("path,label,fps\nin/P01_01,0,5\nin/P01_02,1,\n")
    rates: dict = {}
    listed, _ = collect_inputs([str(tmp_path / "rated.csv")], rates=rates)
    assert rates == {str(root / "P01_01"): 5.0}
    frame_rates = FrameRates(10.0, rates)
    assert video_length(listed[0], frame_rates) == (3, 5.0) and video_length(listed[1], frame_rates) == (3, 10.0)
    steps = [VideoUnits([Unit((i,), video)], preprocessing, "auto", frame_rates)[0][1].clip_indices.tolist()
             for i, video in enumerate(listed)]  # fmt: skip
    assert steps == [[[0, 1]], [[0, 2]]], "5 fps sampled at 5: every frame; 10 fps: every second one"
