"""``python -m harness.datasets ek100`` on a miniature replica of EPIC-KITCHENS-100's annotation
files (epic-kitchens-100-annotations: the official header and quoting), with videos in the three
layouts it finds, frame folders, and one annotated video missing on disk."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from harness.datasets.ek100 import seconds
from tests.datasets.test_converters import convert, edited_error, error_line, lines_of, touch

HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
          "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n")  # fmt: skip
TRAIN = f"""{HEADER}P01_01_0,P01,P01_01,00:00:00.089,00:00:00.14,00:00:00.37,8,22,open door,open,3,door,3,['door'],[3]
P01_01_1,P01,P01_01,00:00:00.329,00:00:00.37,00:00:00.71,22,43,take plate,take,0,plate,1,['plate'],[1]
P01_101_0,P01,P01_101,00:00:00.100,00:00:00.05,00:00:00.50,3,30,wash board and tap,wash,2,board:chopping,2,"['board:chopping', 'tap']","[2, 0]"
P02_03_0,P02,P02_03,00:00:01.000,00:00:01.00,00:00:02.00,60,120,take tap,take,0,tap,0,['tap'],[0]
"""  # noqa: E501
VALIDATION = f"""{HEADER}P01_11_0,P01,P01_11,00:00:00.060,00:00:00.00,00:00:00.45,1,27,take plate,take,0,plate,1,['plate'],[1]
P01_11_1,P01,P01_11,00:00:00.460,00:00:00.40,00:00:00.75,24,45,put plate,put,1,plate,1,['plate'],[1]
"""  # noqa: E501
VERBS = """id,key,instances,category
0,take,"['take', 'grab', 'pick-up']",retrieve
1,put,"['put', 'put-down', 'place']",leave
2,wash,"['wash', 'clean']",clean
3,open,"['open', 'open-up']",access
"""
NOUNS = """id,key,instances,category
0,tap,"['tap', 'tap:water']",appliances
1,plate,"['plate', 'plate:dinner']",cutlery
2,board:chopping,"['board:chopping', 'board:cutting']",cookware
3,door,"['door', 'door:kitchen']",furniture
"""
ACTIONS = ["take tap", "take plate", "put plate", "wash board:chopping", "open door"]  # sorted (verb, noun)


def make_ek100(root: Path) -> tuple[Path, Path]:
    """The four annotation files and videos: ``P01/videos/P01_01.MP4``, a flat ``P01_101.mp4``,
    ``P01/P01_11.MP4`` (V-JEPA 2's second layout); ``P02_03`` is missing."""
    annotations, videos = root / "epic-kitchens-100-annotations", root / "EPIC-KITCHENS"
    annotations.mkdir(parents=True)
    for name, text in (("EPIC_100_train.csv", TRAIN), ("EPIC_100_validation.csv", VALIDATION),
                       ("EPIC_100_verb_classes.csv", VERBS), ("EPIC_100_noun_classes.csv", NOUNS)):  # fmt: skip
        (annotations / name).write_text(text, encoding="utf-8")
    touch(videos, "P01/videos/P01_01.MP4", "P01_101.mp4", "P01/P01_11.MP4")
    return annotations, videos


def rows(path: Path) -> list[list[str]]:
    """The rows of a segment listing, header first, each path shortened to its file name."""
    with open(path, encoding="utf-8", newline="") as handle:
        found = list(csv.reader(handle))
    for row in found[1:]:
        assert Path(row[0]).is_absolute() and Path(row[0]).exists(), row[0]
        row[0] = Path(row[0]).name
    return found


def test_ek100_videos(tmp_path, capsys):
    annotations, videos = make_ek100(tmp_path)
    output = tmp_path / "out"
    out = convert(capsys, "ek100", annotations, videos, output)
    assert out == ["train: 3 segments of 2 videos listed, 3 verb / 3 noun / 3 action classes, 1 videos missing on disk "
                   "(1 segments)",
                   "val: 2 segments of 1 videos listed, 2 verb / 1 noun / 2 action classes, 0 videos missing on disk "
                   "(0 segments)",
                   f"total: 5 segments of 3 videos listed, 4 verb / 4 noun / 5 action classes, 1 videos missing on "
                   f"disk (see {output / 'missing.txt'}); wrote {output}"]  # fmt: skip
    assert rows(output / "train.csv") == [["path", "verb", "noun", "action", "start", "end"],
                                          ["P01_01.MP4", "3", "3", "4", "0.14", "0.37"],
                                          ["P01_01.MP4", "0", "1", "1", "0.37", "0.71"],
                                          ["P01_101.mp4", "2", "2", "3", "0.05", "0.50"]]  # fmt: skip
    assert rows(output / "val.csv") == [["path", "verb", "noun", "action", "start", "end"],
                                        ["P01_11.MP4", "0", "1", "1", "0.00", "0.45"],
                                        ["P01_11.MP4", "1", "1", "2", "0.40", "0.75"]]  # fmt: skip
    assert lines_of(output / "classes_verb.txt") == ["take", "put", "wash", "open"]
    assert lines_of(output / "classes_noun.txt") == ["tap", "plate", "board:chopping", "door"]
    assert lines_of(output / "classes_action.txt") == ACTIONS
    assert lines_of(output / "missing.txt") == ["train P02/P02_03"]
    assert not (output / "classes.txt").exists()


def test_ek100_frame_folders(tmp_path, capsys):
    """Frame folders: intervals become 0-based frame positions, end exclusive (1-based inclusive
    ``start_frame..stop_frame`` -> ``start_frame - 1, stop_frame``); video files are not looked at."""
    annotations, _ = make_ek100(tmp_path)
    frames = tmp_path / "frames"
    touch(frames, "P01/rgb_frames/P01_01/frame_0000000001.jpg", "P01_101/frame_0000000001.jpg",
          "P01/rgb_frames/P01_11/frame_0000000001.jpg", "P02/rgb_frames/P02_03.MP4")  # fmt: skip
    output = tmp_path / "out"
    argv = ["ek100", "--annotations", str(annotations), "--frames", str(frames), "--output", str(output)]
    from harness.datasets.cli import main

    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("train: 3 segments of 2 videos listed") and out[0].endswith("1 videos missing on disk "
                                                                                          "(1 segments)")  # fmt: skip
    train = rows(output / "train.csv")
    assert train == [["path", "verb", "noun", "action", "start_frame", "end_frame"],
                     ["P01_01", "3", "3", "4", "7", "22"], ["P01_01", "0", "1", "1", "21", "43"],
                     ["P01_101", "2", "2", "3", "2", "30"]]  # fmt: skip
    assert rows(output / "val.csv")[1] == ["P01_11", "0", "1", "1", "0", "27"]  # start_frame 1 is position 0
    assert lines_of(output / "missing.txt") == ["train P02/P02_03"]  # a video file is not a frame folder
    # with EPIC_100_video_info.csv (the official video_id,duration,fps,resolution), each line gets
    # its video's rate: EPIC's videos run at 59.94, 50, 29.97... fps, and the frames count them
    (annotations / "EPIC_100_video_info.csv").write_text("video_id,duration,fps,resolution\nP01_01,1652.15,"
                                                        "59.9400599400599,1920x1080\nP01_101,1831.46,50.0,1920x1080\n"
                                                        "P01_11,561.5,59.9400599400599,1920x1080\n")  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    train = rows(output / "train.csv")
    assert train[0][-1] == "fps" and [row[-1] for row in train[1:]] == ["59.9400599400599"] * 2 + ["50.0"]
    from harness.data.listing import read_listing

    listing = read_listing(output / "train.csv")
    assert listing.frame_rate(2) == 50.0 and listing.segment(2) == (2, 30) and listing.label(2) == (2, 2, 3)
    (annotations / "EPIC_100_video_info.csv").write_text("video_id,duration,fps,resolution\nP01_01,1,x,1x1\n")
    assert "EPIC_100_video_info.csv:2: column fps: 'x' is not a frame rate" in error_line(capsys, argv)


def test_ek100_action_pairs_of_train_only(tmp_path, capsys):
    """V-JEPA 2's choice: actions are the pairs of train; a validation segment of another pair is left out."""
    annotations, videos = make_ek100(tmp_path)
    output = tmp_path / "out"
    out = convert(capsys, "ek100", annotations, videos, output, "--action-pairs", "train")
    assert out[1] == ("val: 1 segments of 1 videos listed, 1 verb / 1 noun / 1 action classes, 0 videos missing on "
                      "disk (0 segments), 1 segments of a (verb, noun) pair not in train left out")  # fmt: skip
    assert lines_of(output / "classes_action.txt") == ["take tap", "take plate", "wash board:chopping", "open door"]
    assert [row[1:4] for row in rows(output / "train.csv")[1:]] == [["3", "3", "3"], ["0", "1", "1"], ["2", "2", "2"]]
    assert rows(output / "val.csv")[1:] == [["P01_11.MP4", "0", "1", "1", "0.00", "0.45"]]


def test_timestamps_are_exact_seconds():
    assert seconds("00:01:02.345", "f:2", "start_timestamp") == Decimal("62.345")
    assert str(seconds("01:00:00.14", "f:2", "start_timestamp")) == "3600.14"
    assert str(seconds("00:00:03.37", "f:2", "stop_timestamp")) == "3.37"


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        ("EPIC_100_train.csv", ",3,door,3,", ",9,door,3,",
         "EPIC_100_train.csv:2: column verb_class: '9' is not a class id of EPIC_100_verb_classes.csv (0..3)"),
        ("EPIC_100_validation.csv", "00:00:00.40,", "0:0:0.40,",
         "EPIC_100_validation.csv:3: column start_timestamp: '0:0:0.40' is not a time HH:MM:SS.ss"),
        ("EPIC_100_validation.csv", "00:00:00.75,", "00:00:00.20,",
         "EPIC_100_validation.csv:3: column stop_timestamp: '00:00:00.20' is before the segment's start"),
        ("EPIC_100_train.csv", "noun_class,", "noun_id,", "EPIC_100_train.csv:1: the header lacks noun_class"),
        ("EPIC_100_train.csv", "P02_03,00:00:01.000", ",00:00:01.000",
         "EPIC_100_train.csv:5: expected the fields participant_id,video_id"),
        ("EPIC_100_noun_classes.csv", "3,door", "x,door",
         "EPIC_100_noun_classes.csv:5: column id: 'x' is not a class id"),
        ("EPIC_100_verb_classes.csv", "3,open", "4,open", "EPIC_100_verb_classes.csv: the class ids must be 0..3"),
    ],
)  # fmt: skip
def test_ek100_bad_annotations(tmp_path, capsys, file, old, new, message):
    line = edited_error(capsys, "ek100", *make_ek100(tmp_path), file, old, new)
    assert f"/{message}" in line, line


def test_ek100_options(tmp_path, capsys):
    annotations, videos = make_ek100(tmp_path)
    base = ["--annotations", str(annotations), "--output", str(tmp_path / "o")]
    both = ["ek100", *base, "--videos", str(videos), "--frames", str(videos)]
    assert "give --videos (video files) or --frames (frame folders), not both" in error_line(capsys, both)
    assert "ek100 needs --videos" in error_line(capsys, ["ek100", *base])
    assert "--frames is an option of ek100, not of ssv2" in error_line(capsys, ["ssv2", *base, "--frames", str(videos)])
    wrong = ["kinetics", *base, "--videos", str(videos), "--action-pairs", "train"]
    assert "--action-pairs is an option of ek100" in error_line(capsys, wrong)
    (tmp_path / "empty").mkdir()
    argv = ["ek100", *base, "--frames", str(tmp_path / "empty")]
    assert f"no annotated video was found below --frames {tmp_path / 'empty'}" in error_line(capsys, argv)
    (annotations / "EPIC_100_noun_classes.csv").unlink()
    line = error_line(capsys, ["ek100", *base, "--videos", str(videos)])
    assert f"{annotations / 'EPIC_100_noun_classes.csv'}: not found" in line


@pytest.mark.slow
def test_converted_ek100_trains(tmp_path, capsys):
    """The converted replica (real videos, 0.8 s each) trains its three label sets in one run on
    the segments, with per-set metrics."""
    import numpy as np

    from harness.config import load_config
    from harness.data.synthetic import moving_square_frames, write_video
    from harness.training import Trainer
    from tests.conftest import tiny_overrides

    annotations, videos = make_ek100(tmp_path)
    rng = np.random.default_rng(0)
    for index, path in enumerate(sorted(p for p in videos.rglob("*") if p.suffix.lower() == ".mp4")):
        write_video(path, moving_square_frames(index % 4, 12, 32, 32, rng), fps=15)
    output = tmp_path / "listings"
    convert(capsys, "ek100", annotations, videos, output)
    names = ", ".join(f"{name}: {output / f'classes_{name}.txt'}" for name in ("verb", "noun", "action"))
    extra = ("optimization.epochs=1", "data.batch_size=2", "logging.level=warning",
             "meta.label_sets=[verb, noun, action]", f"data.class_names={{{names}}}")  # fmt: skip
    overrides = [o for o in tiny_overrides(output, tmp_path / "run", *extra) if not o.startswith("data.class_names=/")]
    Trainer(load_config(None, overrides)).fit()
    epochs = list(csv.DictReader(open(tmp_path / "run" / "epochs.csv")))
    assert len(epochs) == 1 and epochs[0]["epoch"] == "0"
    for name in ("verb", "noun", "action"):  # one run, every set measured on the validation segments
        assert 0 <= float(epochs[0][f"val_top1_{name}"]) <= 1 and float(epochs[0][f"val_recall5_{name}"]) > 0
