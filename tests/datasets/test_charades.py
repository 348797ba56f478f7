"""``python -m harness.datasets charades`` on a miniature replica of Charades v1's annotation files
(the official header, quoted scripts and descriptions holding commas, empty fields), as a
video-level multi-label listing and, with ``--segments``, as a segment listing."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.datasets.test_converters import convert, edited_error, error_line, lines_of, touch

CLASSES = """c000 Holding some clothes
c001 Putting clothes somewhere
c002 Taking some clothes from somewhere
c003 Throwing clothes somewhere
"""
HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
TRAIN = f"""{HEADER}46GP8,HR43,Kitchen,6,7,Yes,"A person cooking on a stove while watching something out a window.",food;stove;window,"A person cooks food on a stove before looking out of a window.",c002 11.90 21.20;c001 0.00 12.60,24.83
N11GT,0KZ7,Stairs,6,7,Yes,"One person opens the door, then throws clothes.",clothes;door,"A person throws clothes, then holds them.",c000 0.00 7.00;c003 0.00 7.00;c000 8.50 8.50,30.96
0IH69,6RE8,Bedroom,,,Yes,"A person is sitting on a bed.",bed,"A person sits.",,12.00
MISS1,HR43,Garage,5,5,Yes,"A person puts clothes in a box.",box;clothes,"Clothes go in a box.",c001 1.00 2.00,10.00
"""  # noqa: E501
TEST = f"""{HEADER}KRF68,YA10,Bathroom,7,7,Yes,"A person throws a towel.",towel,"Throws a towel.",c003 0.50 3.00,14.00
"""


def make_charades(root: Path) -> tuple[Path, Path]:
    """The three annotation files and ``Charades_v1_480/<id>.mp4`` videos (``MISS1`` is missing)."""
    annotations, videos = root / "Charades", root / "Charades_v1_480"
    annotations.mkdir(parents=True)
    for name, text in (("Charades_v1_classes.txt", CLASSES), ("Charades_v1_train.csv", TRAIN),
                       ("Charades_v1_test.csv", TEST)):  # fmt: skip
        (annotations / name).write_text(text, encoding="utf-8")
    touch(videos, "46GP8.mp4", "N11GT.mp4", "0IH69.mp4", "KRF68.mp4")
    return annotations, videos


def labels_of(path: Path) -> list[tuple[str, str]]:
    """``(file name, labels)`` per ``path labels`` line of a video-level listing."""
    rows = [line.rsplit(" ", 1) for line in lines_of(path)]
    assert all(Path(row[0]).is_absolute() and Path(row[0]).is_file() for row in rows)
    return [(Path(row[0]).name, row[1]) for row in rows]


def test_charades_video_level(tmp_path, capsys):
    annotations, videos = make_charades(tmp_path)
    output = tmp_path / "out"
    out = convert(capsys, "charades", annotations, videos, output)
    assert out == ["train: 2 videos listed, 4 classes, 1 missing on disk, 1 videos without actions left out",
                   "val: 1 videos listed, 1 classes, 0 missing on disk",
                   f"total: 3 videos listed, 4 classes, 1 missing on disk (see {output / 'missing.txt'}); "
                   f"wrote {output}"]  # fmt: skip
    assert labels_of(output / "train.csv") == [("46GP8.mp4", "1,2"), ("N11GT.mp4", "0,3")]
    assert labels_of(output / "val.csv") == [("KRF68.mp4", "3")]
    assert lines_of(output / "classes.txt") == [line[5:] for line in CLASSES.splitlines()]
    assert lines_of(output / "missing.txt") == ["train MISS1"]
    from harness.data.listing import read_listing

    assert [record.label for record in read_listing(output / "train.csv")] == [(1, 2), (0, 3)]


def test_charades_segments(tmp_path, capsys):
    """One line per distinct interval; classes sharing an interval share its line (a quoted list);
    an interval whose end is not after its start is left out."""
    annotations, videos = make_charades(tmp_path)
    output = tmp_path / "out"
    out = convert(capsys, "charades", annotations, videos, output, "--segments")
    assert out[0] == ("train: 3 segments of 2 videos listed, 4 classes, 1 videos missing on disk (1 segments), "
                      "1 videos without actions and 1 empty intervals left out")  # fmt: skip
    assert out[2].startswith("total: 4 segments of 3 videos listed, 4 classes, 1 videos missing on disk")
    text = (output / "train.csv").read_text(encoding="utf-8").splitlines()
    assert text[0] == "path,label,start,end" and text[3].endswith('N11GT.mp4,"0,3",0.00,7.00')
    with open(output / "train.csv", encoding="utf-8", newline="") as handle:
        rows = [[Path(row[0]).name, *row[1:]] for row in list(csv.reader(handle))[1:]]
    assert rows == [["46GP8.mp4", "2", "11.90", "21.20"], ["46GP8.mp4", "1", "0.00", "12.60"],
                    ["N11GT.mp4", "0,3", "0.00", "7.00"]]  # fmt: skip
    assert lines_of(output / "val.csv")[1].endswith("KRF68.mp4,3,0.50,3.00")
    assert lines_of(output / "missing.txt") == ["train MISS1"]
    # what the harness reads of it: multi-label segments, in seconds
    from harness.data.listing import read_listing

    read = read_listing(output / "train.csv")
    assert read.segment_unit == "seconds" and [read.segment(i) for i in range(3)] == [(11.9, 21.2), (0.0, 12.6),
                                                                                       (0.0, 7.0)]  # fmt: skip
    assert [read.label(i) for i in range(3)] == [2, 1, (0, 3)]


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        ("Charades_v1_train.csv", "c002 11.90 21.20", "c002 11.90",
         "Charades_v1_train.csv:2: column actions: 'c002 11.90' is not 'c<id> <start> <end>' (seconds)"),
        ("Charades_v1_test.csv", "c003 0.50 3.00", "c003 0.50 soon",
         "Charades_v1_test.csv:2: column actions: 'c003 0.50 soon' is not 'c<id> <start> <end>'"),
        ("Charades_v1_train.csv", "c001 1.00", "c157 1.00",
         "Charades_v1_train.csv:5: column actions: c157 is not a class of Charades_v1_classes.txt (c000..c003)"),
        ("Charades_v1_train.csv", ",actions,", ",action,", "Charades_v1_train.csv:1: the header lacks actions"),
        ("Charades_v1_classes.txt", "c002 Taking", "2 Taking",
         "Charades_v1_classes.txt:3: expected 'c<id> <class name>', got '2 Taking some clothes from somewhere'"),
        ("Charades_v1_classes.txt", "c003", "c004", "Charades_v1_classes.txt: the class ids must run c000..c003"),
    ],
)  # fmt: skip
def test_charades_bad_annotations(tmp_path, capsys, file, old, new, message):
    line = edited_error(capsys, "charades", *make_charades(tmp_path), file, old, new)
    assert f"/{message}" in line, line


def test_segments_is_an_option_of_charades(tmp_path, capsys):
    argv = ["ssv2", "--annotations", str(tmp_path), "--videos", str(tmp_path), "--output", "o", "--segments"]
    assert "--segments is an option of charades, not of ssv2" in error_line(capsys, argv)


@pytest.mark.slow
def test_converted_charades_trains(tmp_path, capsys):
    """The video-level listing trains a multi-label demo model for an epoch (sigmoid heads, mAP)."""
    import numpy as np

    from harness.config import load_config
    from harness.data.synthetic import moving_squares_frames, write_video
    from harness.training import Trainer
    from tests.conftest import tiny_overrides

    annotations, videos = make_charades(tmp_path)
    (annotations / "Charades_v1_test.csv").write_text(
        TEST + "X2VQ1,YA10,Hallway,7,7,Yes,\"A person holds clothes.\",clothes,\"Holding.\",c000 0.00 4.00;c002 1.00 "
        "2.00,9.00\n", encoding="utf-8")  # fmt: skip
    rng = np.random.default_rng(0)
    for name, directions in (("46GP8", [1, 2]), ("N11GT", [0, 3]), ("0IH69", [0]), ("KRF68", [3]), ("X2VQ1", [0, 2])):
        write_video(videos / f"{name}.mp4", moving_squares_frames(directions, 12, 32, 32, rng), fps=15)
    output = tmp_path / "listings"
    convert(capsys, "charades", annotations, videos, output)
    extra = ("meta.multi_label=true", "optimization.epochs=1", "data.batch_size=2", "logging.level=warning")
    Trainer(load_config(None, tiny_overrides(output, tmp_path / "run", *extra))).fit()
    header, row = lines_of(tmp_path / "run" / "epochs.csv")[:2]
    assert "val_map" in header.split(",") and row.startswith("0,")
    per_class = lines_of(tmp_path / "run" / "best_per_class.csv")
    assert [line.split(",")[0] for line in per_class[1:]][:1] == ["Holding some clothes"]
