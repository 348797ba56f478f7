"""``python -m harness.datasets csv``: any annotation CSV read through ``--columns`` (a path, a label,
optionally a segment and a split) into the harness's listings."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from harness.data.listing import read_listing
from tests.datasets.test_converters import convert, error_line, lines_of, real_videos, touch

ANNOTATIONS = """clip,action,subset,t0,t1,annotator
cam1/day1.mp4,pour,train,1.5,4.25,ann
cam1/day1.mp4,stir,train,4.25,9,ann
cam2/day2.mp4,pour,validation,0,2.5,bob
cam3/gone.mp4,stir,Train,0,1,bob
cam2/day2.mp4,stir,test,,,bob
"""


def make_table(root: Path, text: str = ANNOTATIONS) -> tuple[Path, Path]:
    videos = root / "videos"
    touch(videos, "cam1/day1.mp4", "cam2/day2.mp4")  # cam3/gone.mp4 is missing
    (root / "annotations.csv").write_text(text, encoding="utf-8")
    return root / "annotations.csv", videos


def rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [[Path(row[0]).name if index else row[0], *row[1:]] for index, row in enumerate(csv.reader(handle))]


def test_named_columns_make_segment_listings_split_by_a_column(tmp_path, capsys):
    annotations, videos = make_table(tmp_path)
    output = tmp_path / "out"
    out = convert(capsys, "csv", annotations, videos, output, "--columns", "path=clip,label=action,split=subset,"
                  "start=t0,end=t1")  # fmt: skip
    assert out[0].startswith("train: 2 segments of 1 videos listed, 2 classes, 1 videos missing on disk"), out
    assert lines_of(output / "classes.txt") == ["pour", "stir"], "class names numbered in sorted order"
    assert rows(output / "train.csv") == [["path", "label", "start", "end"], ["day1.mp4", "0", "1.5", "4.25"],
                                          ["day1.mp4", "1", "4.25", "9"]]  # fmt: skip
    assert rows(output / "val.csv")[1:] == [["day2.mp4", "0", "0", "2.5"]]
    assert rows(output / "test.csv")[1:] == [["day2.mp4", "1", "", ""]], "empty cells: the whole video"
    assert lines_of(output / "missing.txt") == ["train cam3/gone.mp4"]
    listing = read_listing(output / "test.csv")  # what training reads
    assert listing.segment(0) is None and read_listing(output / "train.csv").segment(0) == (1.5, 4.25)


def test_ids_and_a_drawn_validation_share_without_a_split_column(tmp_path, capsys):
    text = "video,class\n" + "".join(f"v{i}.mp4,{i % 2 * 3}\n" for i in range(8))
    videos = tmp_path / "videos"
    touch(videos, *(f"v{i}.mp4" for i in range(8)))
    (tmp_path / "a.csv").write_text(text, encoding="utf-8")
    argv = ("--columns", "path=video,label=class", "--val-fraction", "0.25", "--seed", "1")
    out = convert(capsys, "csv", tmp_path / "a.csv", videos, tmp_path / "out", *argv)
    assert out[:2] == ["train: 6 videos listed, 2 classes, 0 missing on disk",
                       "val: 2 videos listed, 2 classes, 0 missing on disk"]  # fmt: skip
    assert lines_of(tmp_path / "out" / "classes.txt") == ["0", "1", "2", "3"], "ids kept, named by their id"
    val = [line.rsplit(" ", 1)[1] for line in lines_of(tmp_path / "out" / "val.csv")]
    assert sorted(val) == ["0", "3"], "a quarter of each class"
    again = convert(capsys, "csv", tmp_path / "a.csv", videos, tmp_path / "again", *argv)
    assert again[:2] == out[:2] and lines_of(tmp_path / "again" / "val.csv") == lines_of(tmp_path / "out" / "val.csv")


@pytest.mark.parametrize(
    ("columns", "edit", "message"),
    [
        ("path=clip", None, "--columns needs path= and label="),
        ("path=clip,label=action,start=t0", None, "--columns: start= without end="),
        ("path=clip,label=action,when=t0", None, "--columns: 'when' is not one of path, label, split"),
        ("path=clip,label", None, "--columns: 'label' is not field=column"),
        ("path=clip,label=verb", None, "annotations.csv:1: the header lacks verb"),
        ("path=clip,label=action,split=subset", ("validation", "holdout"),
         "annotations.csv:4: column subset: 'holdout' is not a split"),
        ("path=clip,label=action,start=t0,end=t1", ("1.5,4.25", "4.25,1.5"),
         "annotations.csv:2: the segment [4.25, 1.5) ends before it starts"),
        ("path=clip,label=action,start=t0,end=t1", ("1.5,4.25", "soon,4.25"),
         "annotations.csv:2: columns t0, t1: 'soon', '4.25' are not numbers"),
        ("path=clip,label=action,start_frame=t0,end_frame=t1", None,
         "annotations.csv:2: frame numbers are whole numbers >= 0, got '1.5' and '4.25'"),
    ],
)  # fmt: skip
def test_bad_columns_and_rows_are_one_line(tmp_path, capsys, columns, edit, message):
    text = ANNOTATIONS.replace(*edit, 1) if edit else ANNOTATIONS
    annotations, videos = make_table(tmp_path, text)
    argv = ["csv", "--annotations", str(annotations), "--videos", str(videos), "--output", str(tmp_path / "o"),
            "--columns", columns]  # fmt: skip
    assert message in error_line(capsys, argv).replace(str(tmp_path) + "/", "")


def test_a_drawn_validation_share_keeps_a_videos_segments_together(tmp_path, capsys):
    text = "video,class,t0,t1\n" + "".join(f"v{v}.mp4,{v % 2},{s},{s + 1}\n" for v in range(8) for s in range(3))
    videos = tmp_path / "videos"
    touch(videos, *(f"v{v}.mp4" for v in range(8)))
    (tmp_path / "a.csv").write_text(text, encoding="utf-8")
    argv = ("--columns", "path=video,label=class,start=t0,end=t1", "--val-fraction", "0.5")
    convert(capsys, "csv", tmp_path / "a.csv", videos, tmp_path / "out", *argv)
    train, val = ({row[0] for row in rows(tmp_path / "out" / f"{split}.csv")[1:]} for split in ("train", "val"))
    assert len(train) == len(val) == 4 and not train & val, "whole videos: 2 of each class's 4 in val"
    assert len(rows(tmp_path / "out" / "val.csv")) == 1 + 4 * 3
    assert "leave one of them out" in error_line(
        capsys,
        [
            "csv",
            "--annotations",
            str(tmp_path / "a.csv"),
            "--videos",
            str(videos),
            "--output",
            "o",
            "--columns",
            "path=video,label=class,split=class",
            "--val-fraction",
            "0.2",
        ],
    )


def test_columns_belong_to_csv_and_csv_needs_them(tmp_path, capsys):
    annotations, videos = make_table(tmp_path)
    base = ["--annotations", str(annotations), "--videos", str(videos), "--output", str(tmp_path / "o")]
    assert "csv needs --columns" in error_line(capsys, ["csv", *base])
    argv = ["folders", "--videos", str(videos), "--output", "o", "--columns", "path=a,label=b"]
    assert "--columns is an option of csv, not of folders" in error_line(capsys, argv)
    argv = ["csv", "--annotations", str(tmp_path), "--videos", str(videos), "--output", "o", "--columns", "path=a"]
    assert "no such file; give the annotation CSV file" in error_line(capsys, argv)


@pytest.mark.slow
def test_a_converted_csv_trains_the_demo_model_on_its_segments(tmp_path, capsys):
    from harness.config import load_config
    from harness.training import Trainer
    from tests.conftest import tiny_overrides

    text = (
        "clip,action,subset,t0,t1\ncam1/day1.mp4,pour,train,0,0.4\ncam1/day1.mp4,stir,train,0.4,0.8\n"
        "cam2/day2.mp4,pour,validation,0,0.5\ncam2/day2.mp4,stir,validation,0.3,0.8\n"
    )
    annotations, videos = make_table(tmp_path, text)
    real_videos(videos)  # 12 frames at 15 fps each: 0.8 s
    output = tmp_path / "out"
    convert(capsys, "csv", annotations, videos, output, "--columns", "path=clip,label=action,split=subset,start=t0,"
            "end=t1")  # fmt: skip
    options = ("optimization.epochs=1", "data.batch_size=2", "logging.level=warning", "optimization.warmup=0",
               "optimization.anneal=0")  # fmt: skip
    Trainer(load_config(None, tiny_overrides(output, tmp_path / "run", *options))).fit()
    epochs = lines_of(tmp_path / "run" / "epochs.csv")
    assert len(epochs) == 2 and epochs[1].startswith("0,")
    predicted = [row["video"] for row in csv.DictReader(open(tmp_path / "run" / "best_predictions.csv"))]
    assert sorted(Path(video).name for video in predicted) == ["day2.mp4#t=0,0.5", "day2.mp4#t=0.3,0.8"]
