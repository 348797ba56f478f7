"""Segments of long videos: listing columns (``path label start end``, frames, label sets, a frame
rate per line), the frames a segment covers, clips drawn inside it, seeking instead of decoding
from the start, and training / evaluation / shards / predict on a segment listing end to end."""

import csv
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from harness.data.decode import DecodeError
from harness.data.files import VideoClipDataset
from harness.data.listing import ListingError, read_listing, write_listing
from harness.data.listing_columns import Listing, VideoRecord
from harness.data.sampling import ClipSpec
from harness.data.segments import segment_frames, segment_name, split_segment_name
from harness.data.synthetic import moving_square_frames, write_video
from harness.data.transforms import EvalTransform
from tests.conftest import tiny_overrides
from tests.segments import FPS, PART_FRAMES, make_segment_dataset


def write(tmp_path: Path, text: str, name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ listings
def test_segment_columns_in_seconds_frames_and_without_a_header(tmp_path):
    listing = read_listing(write(tmp_path, 'path,label,start,end\nv/a.mp4,3,1.5,4\n"v/b, c.mp4",2,,\n'))
    assert listing.segment_unit == "seconds"
    assert [listing.segment(i) for i in range(2)] == [(1.5, 4.0), None]  # empty: the whole video
    assert listing.path(1) == str(tmp_path / "v" / "b, c.mp4") and listing.label(1) == 2
    frames = read_listing(write(tmp_path, "path label start_frame end_frame\nmy clip.mp4 0 10 50\n", "f.txt"))
    assert frames.segment_unit == "frames" and frames.segment(0) == (10, 50) and frames.path(0).endswith("my clip.mp4")
    instant = read_listing(write(tmp_path, "path,label,start,end\na.mp4,1,2.5,2.5\n", "instant.csv"))
    assert instant.segment(0) == (2.5, 2.5), "an instant (EPIC has some): read as its one frame"
    bare = read_listing(write(tmp_path, "a.mp4 1 0.5 2.25\nb.mp4 3,7 4 9\n", "bare.txt"))
    assert [bare.segment(i) for i in range(2)] == [(0.5, 2.25), (4.0, 9.0)]
    assert bare.label(1) == (3, 7), "several labels on a segment line (Charades)"
    named = read_listing(write(tmp_path, "path,label,start,end\na.mp4,walk,0,1\nb.mp4,run,1,2\n", "n.csv"))
    assert named.names == ["walk", "run"] and named.segment(1) == (1.0, 2.0)
    # a plain listing stays what it was: no segments, its header words still skipped
    plain = read_listing(write(tmp_path, "filename,class_id\na.mp4,1\n", "plain.csv"))
    assert plain.segments is None and plain.label(0) == 1


def test_a_quoted_header_and_label_sets_named_in_capitals(tmp_path):
    # R's write.csv and pandas' QUOTE_ALL quote the header; a set keeps its name as written
    text = '"path","Verb","Noun","start","end"\n"a.mp4","1","2","0","1.5"\n'
    listing = read_listing(write(tmp_path, text))
    assert listing.label_sets == ["Verb", "Noun"] and listing.label(0) == (1, 2) and listing.segment(0) == (0, 1.5)
    upper = read_listing(write(tmp_path, "PATH,LABEL,START,END\na.mp4,3,0,1\n", "upper.csv"))
    assert upper.label_sets is None and upper.label(0) == 3 and upper.segment(0) == (0, 1), "its own words: any case"


def test_label_sets_and_frame_rates_per_line(tmp_path):
    text = "path,verb,noun,action,start,end\nP01/P01_01.MP4,3,40,7,1,2.5\nP01/P01_02.MP4,0,2,1,0,1\n"
    listing = read_listing(write(tmp_path, text))
    assert listing.label_sets == ["verb", "noun", "action"]
    assert listing.label(0) == (3, 40, 7) and listing.label(1) == (0, 2, 1)
    assert listing.labels.tolist() == [3, 0], "the first set is the listing's labels (class balancing)"
    record = listing.record(0)
    assert record.segment == (1.0, 2.5) and record.label == (3, 40, 7)
    rates = read_listing(write(tmp_path, "path,label,fps\nframes/a,1,50\nframes/b,2,\n", "r.csv"))
    assert [rates.frame_rate(0), rates.frame_rate(1)] == [50.0, None]


def test_a_written_listing_reads_back_the_same(tmp_path):
    records = [VideoRecord("/d/a.mp4", 1, segment=(0.1, 2.0 / 3.0)), VideoRecord("/d/b c.mp4", 0),
               VideoRecord("/d/c.mp4", 2, segment=(5.0, 6.0), fps=25.0)]  # fmt: skip
    write_listing(records, tmp_path / "out.csv")
    back = read_listing(tmp_path / "out.csv")
    assert [back.record(i) for i in range(3)] == records, "seconds keep every digit (repr, not %g)"
    sets = Listing.from_records([VideoRecord("/d/a.mp4", (1, 2)), VideoRecord("/d/b.mp4", (0, 5))],
                                label_sets=["verb", "noun"])  # fmt: skip
    write_listing(sets, tmp_path / "sets.csv")
    assert (tmp_path / "sets.csv").read_text().splitlines()[0] == "path,verb,noun"
    again = read_listing(tmp_path / "sets.csv")
    assert again.label_sets == ["verb", "noun"] and again.label(1) == (0, 5)


@pytest.mark.parametrize(
    "header",
    ["path label start end", "path,label,start,end", "path\tverb\tnoun\tstart_frame\tend_frame",
     "path,verb,noun,action,start,end,fps", None],
)  # fmt: skip
def test_the_vectorised_pass_reads_what_the_line_parser_reads(tmp_path, header):
    from harness.data.listing_table import fast_table, first_content_line, parse_table

    rng = np.random.default_rng(0)
    columns = (header or "path label start end").replace(",", " ").split()
    separator = "," if header and "," in header else "\t" if header and "\t" in header else " "
    lines = [header] if header else []
    for i in range(500):
        values = [f"clips/{'my ' if separator != ',' and i % 3 == 0 else ''}v{i}.mp4"]
        start = round(float(rng.uniform(0, 100)), int(rng.integers(0, 4)))
        for column in columns[1:]:
            values.append(str(int(rng.integers(0, 3000))) if column not in ("start", "end", "fps") else
                          f"{rng.uniform(1, 60):.3f}" if column == "fps" else
                          repr(start) if column == "start" else repr(start + float(rng.uniform(0.01, 9))))  # fmt: skip
        if "start_frame" in columns:
            values[-1] = str(int(values[-2]) + 1 + int(rng.integers(0, 50)))
        lines.append(separator.join(values))
    text = "\n".join(lines) + "\n"
    path = write(tmp_path, text, "l.txt")
    names = None if header is None else [c.lower() for c in columns]
    fast = fast_table(text.encode(), str(path), names, first_content_line(text.encode())[1])
    slow = parse_table(text, str(path), names)
    assert fast is not None, "plain lines take the vectorised pass"
    assert [fast.record(i) for i in range(500)] == [slow.record(i) for i in range(500)]
    assert read_listing(path).text.nbytes == len(text.encode()), "read_listing takes the vectorised pass"
    broken = text.replace("\n", "\nclips/x.mp4\n", 1) if header else text + "clips/x.mp4\n"
    with pytest.raises(ListingError, match=":2: expected" if header else ":501: expected"):
        read_listing(write(tmp_path, broken, "broken.txt"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label,start\na.mp4,1,0\n", "list.csv:1: the header has 'start' without 'end'"),
        ("path,label,start,end\na.mp4,1,3,2\n", "list.csv:2: the segment ends (end 2) before it starts"),
        ("path,label,start,end\na.mp4,1,-1,2\n", "list.csv:2: column 'start': -1 is negative"),
        ("path,label,start,end\na.mp4,1,x,2\n", "list.csv:2: column 'start': 'x' is not a number"),
        ("path,label,start_frame,end_frame\na.mp4,1,1.5,9\n", "list.csv:2: frame numbers are whole numbers"),
        ("path,label,start,end\na.mp4,1,0,1\nb.mp4,2\n", "list.csv:3: expected 4 columns (path,label,start,end)"),
        ("a.mp4 1 0 1\nb.mp4 4\n", "list.csv:2: expected 4 columns"),
        ("path,verb,label\na,1,2\n", "list.csv:1: column 'verb' is not one this harness knows"),
        ("path,verb,noun\na.mp4,1,take\n", "list.csv:2: column 'noun': 'take' is not a class id"),
        ("path,label,start,end,start_frame,end_frame\na,1,0,1,0,1\n", "list.csv:1: a segment is given in seconds"),
        ("path,label,fps\na,1,0\n", "list.csv:2: column 'fps': 0 is not a frame rate"),
        ("path,label,start,end\na.mp4,1,0,1\nb.mp4,walk,0,1\n", "list.csv:3: label 'walk': the listing mixes"),
        ("path,label,label\na,1,2\n", "list.csv:1: column 'label' appears twice"),
    ],
)
def test_a_bad_segment_line_names_its_file_line_and_column(tmp_path, text, message):
    with pytest.raises(ListingError) as error:
        read_listing(write(tmp_path, text))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_segment_listings_cost_16_bytes_per_line_more_than_plain_ones(tmp_path):
    lines = 20000
    plain = "".join(f"videos/v{i:07d}.mp4 {i % 400}\n" for i in range(lines))
    segmented = "path label start end\n" + "".join(
        f"videos/v{i:07d}.mp4 {i % 400} {i % 97}.25 {i % 97 + 3}.5\n" for i in range(lines))  # fmt: skip
    for text, name in ((plain, "plain.txt"), (segmented, "seg.txt"), (segmented.replace(" ", ","), "seg.csv")):
        listing = read_listing(write(tmp_path, text, name))
        over = (listing.nbytes() - len(text)) / lines  # held beyond the file's own bytes
        if name == "plain.txt":
            base = over
        else:  # both read by the vectorised pass: the file's bytes, no copy, and two float64 per line
            assert listing.text.nbytes == len(text) and over <= base + 16.0, (name, base, over)
            assert listing.segment(lines - 1) == ((lines - 1) % 97 + 0.25, (lines - 1) % 97 + 3.5)


# --------------------------------------------------------------------------- frames
def test_the_frames_of_a_segment():
    assert segment_frames((1.5, 4.0), "seconds", 30.0, 300) == (45, 120)  # 4.0 s is frame 120: not in it
    assert segment_frames((1.5, 4.0), "seconds", 29.97, 300) == (45, 120)
    assert segment_frames((0.1, 0.12), "seconds", 10.0, 300) == (1, 2), "at least one frame"
    assert segment_frames((8.0, 20.0), "seconds", 30.0, 300) == (240, 300), "cut at the video's end"
    assert segment_frames((10, 50), "frames", 0.0, 300) == (10, 50)
    with pytest.raises(DecodeError, match="starts at 11 s, after the video's end \\(300 frames, 10.000 s\\)"):
        segment_frames((11.0, 12.0), "seconds", 30.0, 300)
    with pytest.raises(DecodeError, match="needs the video's frame rate"):
        segment_frames((1.0, 2.0), "seconds", 0.0, 300)


def test_segment_names_round_trip():
    assert segment_name("/v/a.mp4", (1.5, 4.0)) == "/v/a.mp4#t=1.5,4"
    assert split_segment_name("/v/a.mp4#t=1.5,4") == ("/v/a.mp4", (1.5, 4.0), "seconds")
    assert split_segment_name(segment_name("/v/a.mp4", (10, 50), "frames")) == ("/v/a.mp4", (10.0, 50.0), "frames")
    assert split_segment_name("/v/take#1.mp4") == ("/v/take#1.mp4", None, "seconds")
    # every digit kept: predict, embed and prepare read the segment back from its name
    assert segment_name("/v/a.mp4", (3723.456, 123456.7)) == "/v/a.mp4#t=3723.456,123456.7"
    assert split_segment_name(segment_name("/v/a.mp4", (0.1 + 0.2, 2 / 3)))[1] == (0.1 + 0.2, 2 / 3)


# --------------------------------------------------------------------------- clips
@pytest.fixture(scope="module")
def segment_root(tmp_path_factory) -> Path:
    return make_segment_dataset(tmp_path_factory.mktemp("segments"), train_videos=3, val_videos=1)


@pytest.mark.parametrize("train", [True, False])
def test_clips_are_drawn_inside_their_segment_only(segment_root, train):
    listing = read_listing(segment_root / "train.csv")
    dataset = VideoClipDataset([(listing, ClipSpec(4, frame_step=2))], EvalTransform(32), num_clips=2,
                               train=train, decoder="pyav")  # fmt: skip
    for index in range(len(listing)):
        item = dataset[index]
        first, end = segment_frames(listing.segment(index), "seconds", FPS, 10**6)
        assert end - first == PART_FRAMES
        indices = item.clip_indices.numpy()
        assert indices.min() >= first and indices.max() < end, (index, indices, first, end)
        assert item.label == listing.label(index)
        assert item.video == segment_name(listing.path(index), listing.segment(index))
    assert dataset.stats()["failed"] == 0


def test_a_segment_past_the_videos_end_is_a_bad_sample_named_with_its_segment(segment_root, caplog):
    video = read_listing(segment_root / "val.csv").path(0)
    listing = Listing.from_records(
        [VideoRecord(video, 1, segment=(2.0, 4.0)), VideoRecord(video, 2, segment=(99.0, 100.0))]
    )
    dataset = VideoClipDataset([(listing, ClipSpec(4, frame_step=2))], EvalTransform(32), train=False, decoder="pyav")
    with caplog.at_level("WARNING", logger="harness.data.files"):
        assert dataset[0] is not None and dataset[1] is None, "evaluation skips it, never a stand-in"
    assert f"skipping video {video}#t=99,100: the segment starts at 99 s, after the video's end" in caplog.text
    assert dataset.failed_paths() == [f"{video}#t=99,100"] and dataset.stats()["failed"] == 1


@pytest.mark.parametrize("decoder", ["pyav", "torchcodec", "decord"])
def test_a_segment_is_cut_from_the_decoded_video_frames(segment_root, decoder, monkeypatch):
    # the same frames as decoding the whole video and taking the segment's indices; torchcodec opens
    # a segment without scanning the file (its approximate mode: the header's count and rate)
    from harness.data import clips as clip_module
    from harness.data.decode import open_video, read_clip_frames

    listing = read_listing(segment_root / "val.csv")
    row = len(listing) - 1
    opened, real_open = [], clip_module.open_video
    monkeypatch.setattr(clip_module, "open_video", lambda *a, **k: opened.append(real_open(*a, **k)) or opened[-1])
    clips, indices = clip_module.load_clips(listing.path(row), ClipSpec(4, frame_step=3), 1,
                                            lambda frames: frames.clone(), random=False, allow_clip_overlap=False,
                                            rng=np.random.default_rng(0), decoder=decoder,
                                            segment=listing.segment(row))  # fmt: skip
    reader = open_video(listing.path(row), "pyav")
    whole = read_clip_frames(reader, np.arange(reader.num_frames))
    assert np.array_equal(clips[0].numpy(), whole[indices[0].numpy()].numpy())
    if decoder == "torchcodec":
        assert opened[0].seek_mode == "approximate"
        assert open_video(listing.path(row), "torchcodec").seek_mode == "exact", "a whole video: exact, as before"


def test_a_late_segment_of_a_long_video_is_sought_not_decoded_from_the_start(tmp_path, monkeypatch):
    from harness.data import clips as files

    rng = np.random.default_rng(0)
    gop = 30
    write_video(tmp_path / "long.mp4", moving_square_frames(0, 1800, 32, 32, rng), fps=30, gop=gop)  # 60 s
    opened, open_video = [], files.open_video

    def recording_open(*args, **kwargs):
        opened.append(open_video(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(files, "open_video", recording_open)
    clips, indices = files.load_clips(str(tmp_path / "long.mp4"), ClipSpec(8, frame_step=2), 2, lambda f: f.clone(),
                                      random=False, allow_clip_overlap=False, rng=np.random.default_rng(0),
                                      decoder="pyav", segment=(55.0, 57.0))  # fmt: skip
    assert len(opened) == 1, "one open per item"
    assert indices.min() >= 1650 and indices.max() < 1710
    # two clips of 15 frames each, seeking to the key frame before each: never the 1650 frames before
    assert opened[0].decoded <= 60 + 2 * gop, opened[0].decoded


# ---------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_segments_train_evaluate_shard_and_predict(tmp_path, capsys):
    from harness.config import load_config
    from harness.evaluate.cli import main as evaluate
    from harness.predict.cli import main as predict
    from harness.prepare import Settings, prepare
    from harness.training import Trainer

    root = make_segment_dataset(tmp_path / "data")
    overrides = tiny_overrides(
        root, tmp_path / "run", "optimization.epochs=12", "data.frame_step=3", "optimization.lr=0.003"
    )
    Trainer(load_config(None, overrides)).fit()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best_top1"] >= 0.5, f"segments hold one motion each: chance is 0.25 ({summary})"

    assert evaluate(["--config", str(tmp_path / "run" / "config.yaml"), "--checkpoint", str(tmp_path / "run"),
                     "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
    rows = list(csv.DictReader(open(tmp_path / "eval" / "predictions.csv")))
    assert len(rows) == 8 and all("#t=" in row["video"] for row in rows), "each segment evaluated on its own"

    report = prepare(root / "train.csv", tmp_path / "shards", Settings(min_seconds=0.5), val_input=root / "val.csv",
                     workers=1)  # fmt: skip
    manifest = json.loads((tmp_path / "shards" / "train" / "manifest.json").read_text())
    assert manifest["total_clips"] == 24, report
    records = _clip_records(tmp_path / "shards" / "train")
    assert len(records) == 24 and {record["frames"] for record in records} == {PART_FRAMES}, (
        "each segment cut exactly (re-encoded), not at the nearest key frames"
    )
    listed = {(row[0], float(row[2])) for row in list(csv.reader(open(root / "train.csv")))[1:]}
    assert {(str(Path(r["source"].split("#")[0]).relative_to(root)), r["start"]) for r in records} == listed
    shard_run = tiny_overrides(root, tmp_path / "shard_run", "optimization.epochs=1", "data.datasets=[]",
                               f"data.shards=[{tmp_path / 'shards' / 'train' / 'manifest.json'}]")  # fmt: skip
    Trainer(load_config(None, shard_run)).fit()
    assert (tmp_path / "shard_run" / "summary.json").is_file()

    capsys.readouterr()
    assert predict([str(tmp_path / "run"), str(root / "val.csv"), "--output", str(tmp_path / "p.csv"),
                    "--workers", "0"]) == 0  # fmt: skip
    predicted = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [row["video"] for row in predicted] == [
        segment_name(str(root / row[0]), (float(row[2]), float(row[3])))
        for row in list(csv.reader(open(root / "val.csv")))[1:]
    ]


def _clip_records(folder: Path) -> list[dict]:
    """The ``key.json`` record of every clip in a shard folder's tar files."""
    records = []
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            records += [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    return records


def test_a_validation_share_never_splits_a_videos_segments():
    # prepare's --val-fraction (and datasets csv's) draw whole videos: all of a video's segments
    # go to one side, and the draw stays stratified by class
    from harness.prepare.sources import split_sources

    pairs = [(segment_name(f"/v/{video}.mp4", (part, part + 1.0)), video % 4, None)
             for video in range(40) for part in range(5)]  # fmt: skip
    splits = split_sources(pairs, 0.3, seed=3)
    sides = {split: {source.path.split("#")[0] for source in sources} for split, sources in splits.items()}
    assert not sides["train"] & sides["val"] and len(sides["val"]) == 12, "3 of each class's 10 videos"
    assert sorted({source.label for source in splits["val"]}) == [0, 1, 2, 3]
    assert len(splits["val"]) == 12 * 5 and len(splits["train"]) == 28 * 5
