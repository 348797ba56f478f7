"""``python -m harness.datasets``: each converter on a miniature replica of its dataset's official
annotation files (a few entries, empty placeholder videos, one annotated video missing on disk)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.datasets.cli import main


def touch(root: Path, *names: str) -> None:
    """Empty placeholder videos ``root/name`` (the converters only look for the files)."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def convert(capsys, name: str, annotations: Path | None, videos: Path, output: Path, *extra: str) -> list[str]:
    """Run the command; its printed lines (the exit status must be 0)."""
    where = ["--annotations", str(annotations)] if annotations is not None else []
    assert main([name, *where, "--videos", str(videos), "--output", str(output), *extra]) == 0
    return capsys.readouterr().out.splitlines()


def listing(path: Path) -> list[tuple[str, int]]:
    """``(file name, label)`` per line of a written listing; its paths are absolute."""
    rows = [line.rsplit(" ", 1) for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(Path(row[0]).is_absolute() and Path(row[0]).is_file() for row in rows)
    return [(Path(row[0]).name, int(row[1])) for row in rows]


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def error_line(capsys, argv: list[str]) -> str:
    """The one line a bad input prints (exit status 2)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def edited_error(capsys, name: str, annotations: Path, videos: Path, file: str, old: str, new: str) -> str:
    """The one error line of converting ``name`` once ``old`` is replaced by ``new`` (first time)
    in the annotation file ``file``, the file name shortened to ``/file``."""
    text = (annotations / file).read_text(encoding="utf-8")
    assert old in text
    (annotations / file).write_text(text.replace(old, new, 1), encoding="utf-8")
    argv = [name, "--annotations", str(annotations), "--videos", str(videos), "--output", str(videos.parent / "o")]
    return error_line(capsys, argv).replace(str(annotations), "")


# ------------------------------------------------------------------------------ ssv2
SSV2_LABELS = {"Holding something next to something": "0", "Pushing something from left to right": "1",
               "Tearing something into two pieces": "2"}  # fmt: skip


def ssv2_entry(video: str, template: str) -> dict:
    return {"id": video, "label": template.replace("[something]", "a cup"), "template": template,
            "placeholders": ["a cup"]}  # fmt: skip


def make_ssv2(root: Path) -> tuple[Path, Path]:
    annotations, videos = root / "annotations", root / "videos"
    annotations.mkdir(parents=True)
    (annotations / "labels.json").write_text(json.dumps(SSV2_LABELS, indent=1), encoding="utf-8")
    train = [ssv2_entry("78687", "Holding [something] next to [something]"),
             ssv2_entry("42326", "Pushing [something] from left to right"),
             ssv2_entry("100904", "Holding [something] next to [something]"),
             ssv2_entry("555", "Tearing [something] into two pieces")]  # fmt: skip
    val = [ssv2_entry("74225", "Pushing [something] from left to right")]
    (annotations / "train.json").write_text(json.dumps(train, indent=1), encoding="utf-8")
    (annotations / "validation.json").write_text(json.dumps(val, indent=1), encoding="utf-8")
    touch(videos, "78687.webm", "42326.webm", "100904.webm", "74225.webm")  # 555 is missing
    return annotations, videos


def test_ssv2(tmp_path, capsys):
    annotations, videos = make_ssv2(tmp_path)
    out = convert(capsys, "ssv2", annotations, videos, tmp_path / "out")
    assert out == ["train: 3 videos listed, 2 classes, 1 missing on disk",
                   "val: 1 videos listed, 1 classes, 0 missing on disk",
                   f"total: 4 videos listed, 3 classes, 1 missing on disk (see {tmp_path / 'out' / 'missing.txt'}); "
                   f"wrote {tmp_path / 'out'}"]  # fmt: skip
    assert listing(tmp_path / "out" / "train.csv") == [("78687.webm", 0), ("42326.webm", 1), ("100904.webm", 0)]
    assert listing(tmp_path / "out" / "val.csv") == [("74225.webm", 1)]
    assert lines_of(tmp_path / "out" / "classes.txt") == list(SSV2_LABELS)
    assert lines_of(tmp_path / "out" / "missing.txt") == ["train 555"]


def test_ssv2_bad_annotations(tmp_path, capsys):
    annotations, videos = make_ssv2(tmp_path)
    argv = ["ssv2", "--annotations", str(annotations), "--videos", str(videos), "--output", str(tmp_path / "o")]
    text = (annotations / "validation.json").read_text(encoding="utf-8")
    (annotations / "validation.json").write_text(text.replace('"id":', '"id"', 1), encoding="utf-8")
    line = error_line(capsys, argv)
    assert f"{annotations / 'validation.json'}:3: not valid JSON" in line, line
    (annotations / "validation.json").write_text(json.dumps([{"label": "x"}]), encoding="utf-8")
    assert "validation.json: entry 1 has no 'id' field" in error_line(capsys, argv)
    (annotations / "labels.json").unlink()
    assert f"{annotations / 'labels.json'}: not found" in error_line(capsys, argv)
    argv[2] = str(tmp_path / "nowhere")
    assert f"--annotations {tmp_path / 'nowhere'}: no such folder" in error_line(capsys, argv)


def test_nothing_on_disk_is_exit_2(tmp_path, capsys):
    annotations, _ = make_ssv2(tmp_path)
    (tmp_path / "empty").mkdir()
    argv = ["ssv2", "--annotations", str(annotations), "--videos", str(tmp_path / "empty"), "--output",
            str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "total: 0 videos listed, 3 classes, 5 missing on disk" in captured.out
    assert "no annotated video was found below --videos" in captured.err
    assert len(lines_of(tmp_path / "out" / "missing.txt")) == 5


# ------------------------------------------------------------------------------ kinetics
KINETICS_TRAIN = """label,youtube_id,time_start,time_end,split,is_cc
zumba,abc-_123XYZ,14,24,train,0
"air drumming",--07WQ2iBlw,1,11,train,0
abseiling,0347ZoDXyP0,102,112,train,0
zumba,missingclip,0,10,train,0
"""
KINETICS_VALIDATE = """label,youtube_id,time_start,time_end,split
abseiling,3E7Jib8Yq5M,0,10,val
"""
KINETICS_TEST = """label,youtube_id,time_start,time_end,split
"air drumming",--33Lscn6sk,4,14,test
"""


def make_kinetics(root: Path) -> tuple[Path, Path]:
    annotations, videos = root / "annotations", root / "videos"
    annotations.mkdir(parents=True)
    (annotations / "train.csv").write_text(KINETICS_TRAIN, encoding="utf-8")
    (annotations / "validate.csv").write_text(KINETICS_VALIDATE, encoding="utf-8")
    (annotations / "test.csv").write_text(KINETICS_TEST, encoding="utf-8")
    # the three layouts in use: flat, per split, per split and class
    touch(videos, "train/zumba/abc-_123XYZ_000014_000024.mp4", "train/air drumming/--07WQ2iBlw_000001_000011.mp4",
          "0347ZoDXyP0_000102_000112.mp4", "val/3E7Jib8Yq5M_000000_000010.mp4",
          "test/air drumming/--33Lscn6sk_000004_000014.mp4")  # fmt: skip
    return annotations, videos


def test_kinetics(tmp_path, capsys):
    annotations, videos = make_kinetics(tmp_path)
    output = tmp_path / "out"
    out = convert(capsys, "kinetics", annotations, videos, output)
    assert out[:3] == ["train: 3 videos listed, 3 classes, 1 missing on disk",
                       "val: 1 videos listed, 1 classes, 0 missing on disk",
                       "test: 1 videos listed, 1 classes, 0 missing on disk"]  # fmt: skip
    assert out[3].startswith("total: 5 videos listed, 3 classes, 1 missing on disk")
    assert lines_of(output / "classes.txt") == ["abseiling", "air drumming", "zumba"]
    assert listing(output / "train.csv") == [("abc-_123XYZ_000014_000024.mp4", 2),
                                             ("--07WQ2iBlw_000001_000011.mp4", 1),
                                             ("0347ZoDXyP0_000102_000112.mp4", 0)]  # fmt: skip
    assert listing(output / "val.csv") == [("3E7Jib8Yq5M_000000_000010.mp4", 0)]
    assert listing(output / "test.csv") == [("--33Lscn6sk_000004_000014.mp4", 1)]
    assert lines_of(output / "missing.txt") == ["train missingclip_000000_000010"]
    # a path with a space reads back through the harness's own listing reader
    from harness.data.listing import read_listing

    assert len(read_listing(output / "train.csv")) == 3


def test_kinetics_unlabelled_test_split_is_left_out(tmp_path, capsys):
    annotations, videos = make_kinetics(tmp_path)
    (annotations / "test.csv").write_text("youtube_id,time_start,time_end,split\n--33Lscn6sk,4,14,test\n")
    (annotations / "train.csv").write_text("\ufeff" + KINETICS_TRAIN, encoding="utf-8")  # a byte-order mark
    out = convert(capsys, "kinetics", annotations, videos, tmp_path / "out")
    assert [line.split(":")[0] for line in out] == ["train", "val", "total"]
    assert not (tmp_path / "out" / "test.csv").exists()


def test_kinetics_bad_line(tmp_path, capsys):
    annotations, videos = make_kinetics(tmp_path)
    (annotations / "validate.csv").write_text(KINETICS_VALIDATE + "abseiling,xyz\n", encoding="utf-8")
    argv = ["kinetics", "--annotations", str(annotations), "--videos", str(videos), "--output", str(tmp_path / "o")]
    line = error_line(capsys, argv)
    assert f"{annotations / 'validate.csv'}:3: expected the fields" in line, line
    (annotations / "validate.csv").write_text(KINETICS_VALIDATE + "abseiling,xyz,a,b,val\n", encoding="utf-8")
    assert f"{annotations / 'validate.csv'}:3: time_start and time_end" in error_line(capsys, argv)
    (annotations / "validate.csv").write_bytes(b"label,youtube_id\n\xff\n")
    assert f"{annotations / 'validate.csv'}: not UTF-8 text" in error_line(capsys, argv)


# ------------------------------------------------------------------------------ ucf101, hmdb51
UCF_CLASSES = "1 ApplyEyeMakeup\n2 ApplyLipstick\n3 HandstandPushups\n"
UCF_TRAIN = """ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1
ApplyLipstick/v_ApplyLipstick_g08_c01.avi 2
HandstandPushups/v_HandStandPushups_g08_c01.avi 3
ApplyLipstick/v_ApplyLipstick_g09_c01.avi 2
"""
UCF_TEST = "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\nHandStandPushups/v_HandStandPushups_g01_c01.avi\n"


def make_ucf101(root: Path) -> tuple[Path, Path]:
    annotations, videos = root / "ucfTrainTestlist", root / "UCF-101"
    annotations.mkdir(parents=True)
    (annotations / "classInd.txt").write_text(UCF_CLASSES, encoding="utf-8")
    (annotations / "trainlist02.txt").write_text(UCF_TRAIN, encoding="utf-8")
    (annotations / "testlist02.txt").write_text(UCF_TEST, encoding="utf-8")
    touch(videos, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyLipstick/v_ApplyLipstick_g08_c01.avi",
          "HandstandPushups/v_HandStandPushups_g08_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
          "HandstandPushups/v_HandStandPushups_g01_c01.avi")  # fmt: skip
    return annotations, videos


def test_ucf101(tmp_path, capsys):
    annotations, videos = make_ucf101(tmp_path)
    output = tmp_path / "out"
    out = convert(capsys, "ucf101", annotations, videos, output, "--split", "2")
    assert out[:2] == ["train: 3 videos listed, 3 classes, 1 missing on disk",
                       "val: 2 videos listed, 2 classes, 0 missing on disk"]  # fmt: skip
    assert out[2].startswith("total: 5 videos listed, 3 classes, 1 missing on disk")
    assert lines_of(output / "classes.txt") == ["ApplyEyeMakeup", "ApplyLipstick", "HandstandPushups"]
    assert listing(output / "train.csv") == [("v_ApplyEyeMakeup_g08_c01.avi", 0), ("v_ApplyLipstick_g08_c01.avi", 1),
                                             ("v_HandStandPushups_g08_c01.avi", 2)]  # fmt: skip
    assert listing(output / "val.csv") == [("v_ApplyEyeMakeup_g01_c01.avi", 0), ("v_HandStandPushups_g01_c01.avi", 2)]
    assert lines_of(output / "missing.txt") == ["train ApplyLipstick/v_ApplyLipstick_g09_c01.avi"]


def test_ucf101_bad_line(tmp_path, capsys):
    annotations, videos = make_ucf101(tmp_path)
    (annotations / "trainlist02.txt").write_text(UCF_TRAIN + "ApplyLipstick/v_x.avi 9\n", encoding="utf-8")
    argv = ["ucf101", "--annotations", str(annotations), "--videos", str(videos), "--output", str(tmp_path / "o"),
            "--split", "2"]  # fmt: skip
    assert f"{annotations / 'trainlist02.txt'}:5: expected" in error_line(capsys, argv)
    argv[-1] = "1"
    assert f"{annotations / 'trainlist01.txt'}: not found" in error_line(capsys, argv)


HMDB_SPLITS = {"brush_hair": "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n"
               "American_brush_hair_f_nm_np1_le_goo_1.avi 2 \nAussie_brush_hair_f_nm_np1_fr_med_2.avi 0 \n",
               "cartwheel": "Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi 2 \n"
               "Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi 1 \nFlic_cartwheel_f_cm_np1_ri_med_1.avi 1 \n"}  # fmt: skip


def make_hmdb51(root: Path) -> tuple[Path, Path]:
    annotations, videos = root / "testTrainMulti_7030_splits", root / "hmdb51"
    annotations.mkdir(parents=True)
    for name, text in HMDB_SPLITS.items():
        (annotations / f"{name}_test_split1.txt").write_text(text, encoding="utf-8")
        (annotations / f"{name}_test_split3.txt").write_text("", encoding="utf-8")
    touch(videos, "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
          "brush_hair/American_brush_hair_f_nm_np1_le_goo_1.avi",
          "cartwheel/Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi",
          "cartwheel/Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi")  # fmt: skip
    return annotations, videos


def test_hmdb51(tmp_path, capsys):
    annotations, videos = make_hmdb51(tmp_path)
    output = tmp_path / "out"
    out = convert(capsys, "hmdb51", annotations, videos, output)
    assert out[:2] == ["train: 2 videos listed, 2 classes, 1 missing on disk",
                       "val: 2 videos listed, 2 classes, 0 missing on disk"]  # fmt: skip
    assert lines_of(output / "classes.txt") == ["brush_hair", "cartwheel"]
    assert listing(output / "train.csv") == [("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 0),
                                             ("Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi", 1)]  # fmt: skip
    assert listing(output / "val.csv") == [
        ("American_brush_hair_f_nm_np1_le_goo_1.avi", 0),
        ("Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi", 1),
    ]
    assert lines_of(output / "missing.txt") == ["train cartwheel/Flic_cartwheel_f_cm_np1_ri_med_1.avi"]


def test_hmdb51_bad_line(tmp_path, capsys):
    annotations, videos = make_hmdb51(tmp_path)
    (annotations / "cartwheel_test_split1.txt").write_text("Flic_cartwheel.avi 1\nFlic_2.avi three\n")
    argv = ["hmdb51", "--annotations", str(annotations), "--videos", str(videos), "--output", str(tmp_path / "o")]
    assert f"{annotations / 'cartwheel_test_split1.txt'}:2: expected" in error_line(capsys, argv)
    assert "no <class>_test_split2.txt files" in error_line(capsys, [*argv, "--split", "2"])
    assert main([*argv, "--split", "3"]) == 2  # annotated but empty: nothing found


# ------------------------------------------------------------------------------ diving48
DIVING_VOCAB = [
    ["Back", "15som", "05Twis", "FREE"],
    ["Back", "15som", "15Twis", "FREE"],
    ["Forward", "2som", "NoTwis", "PIKE"],
]


def diving_entry(video: str, label: int) -> dict:
    return {"vid_name": video, "label": label, "start_frame": 0, "end_frame": 59}


def make_diving48(root: Path) -> tuple[Path, Path]:
    annotations, videos = root / "annotations", root / "rgb"
    annotations.mkdir(parents=True)
    (annotations / "Diving48_vocab.json").write_text(json.dumps(DIVING_VOCAB), encoding="utf-8")
    train = [diving_entry("-mmq0PT-u8k_00155", 2), diving_entry("-mmq0PT-u8k_00156", 0), diving_entry("gone", 1)]
    (annotations / "Diving48_V2_train.json").write_text(json.dumps(train), encoding="utf-8")
    (annotations / "Diving48_V2_test.json").write_text(json.dumps([diving_entry("0GAGg2Zl8DE_00010", 1)]))
    touch(videos, "-mmq0PT-u8k_00155.mp4", "-mmq0PT-u8k_00156.mp4", "0GAGg2Zl8DE_00010.mp4")
    return annotations, videos


def test_diving48(tmp_path, capsys):
    annotations, videos = make_diving48(tmp_path)
    output = tmp_path / "out"
    out = convert(capsys, "diving48", annotations, videos, output)
    assert out[:2] == ["train: 2 videos listed, 2 classes, 1 missing on disk",
                       "val: 1 videos listed, 1 classes, 0 missing on disk"]  # fmt: skip
    assert out[2].startswith("total: 3 videos listed, 3 classes, 1 missing on disk")
    assert lines_of(output / "classes.txt") == ["Back / 15som / 05Twis / FREE", "Back / 15som / 15Twis / FREE",
                                                "Forward / 2som / NoTwis / PIKE"]  # fmt: skip
    assert listing(output / "train.csv") == [("-mmq0PT-u8k_00155.mp4", 2), ("-mmq0PT-u8k_00156.mp4", 0)]
    assert listing(output / "val.csv") == [("0GAGg2Zl8DE_00010.mp4", 1)]
    assert lines_of(output / "missing.txt") == ["train gone"]


def test_diving48_bad_label(tmp_path, capsys):
    annotations, videos = make_diving48(tmp_path)
    (annotations / "Diving48_V2_test.json").write_text(json.dumps([diving_entry("0GAGg2Zl8DE_00010", 3)]))
    argv = ["diving48", "--annotations", str(annotations), "--videos", str(videos), "--output", str(tmp_path / "o")]
    line = error_line(capsys, argv)
    assert f"{annotations / 'Diving48_V2_test.json'}: entry 1 (0GAGg2Zl8DE_00010): label 3" in line, line


# ------------------------------------------------------------------------------ folders
def test_folders_split_on_disk(tmp_path, capsys):
    videos = tmp_path / "videos"
    touch(videos, "train/walk/a.mp4", "train/walk/b.avi", "train/run/day1/c.mp4", "train/run/notes.txt",
          "val/walk/d.mp4", "val/jump/e.mkv")  # fmt: skip
    out = convert(capsys, "folders", None, videos, tmp_path / "out")
    assert out[:2] == ["train: 3 videos listed, 2 classes, 0 missing on disk",
                       "val: 2 videos listed, 2 classes, 0 missing on disk"]  # fmt: skip
    assert out[2].startswith("total: 5 videos listed, 3 classes, 0 missing on disk; wrote")
    assert lines_of(tmp_path / "out" / "classes.txt") == ["jump", "run", "walk"]
    assert listing(tmp_path / "out" / "train.csv") == [("c.mp4", 1), ("a.mp4", 2), ("b.avi", 2)]
    assert listing(tmp_path / "out" / "val.csv") == [("e.mkv", 0), ("d.mp4", 2)]
    assert lines_of(tmp_path / "out" / "missing.txt") == []


def test_folders_val_fraction(tmp_path, capsys):
    videos = tmp_path / "videos"
    touch(videos, *(f"{name}/{i}.mp4" for name in ("walk", "run") for i in range(10)))
    argv = ("--val-fraction", "0.3", "--seed", "4")
    out = convert(capsys, "folders", None, videos, tmp_path / "a", *argv)
    assert out[:2] == ["train: 14 videos listed, 2 classes, 0 missing on disk",
                       "val: 6 videos listed, 2 classes, 0 missing on disk"]  # fmt: skip
    convert(capsys, "folders", None, videos, tmp_path / "b", *argv)
    assert lines_of(tmp_path / "a" / "val.csv") == lines_of(tmp_path / "b" / "val.csv")  # the same draw
    train, val = listing(tmp_path / "a" / "train.csv"), listing(tmp_path / "a" / "val.csv")
    assert not set(train) & set(val) and len(set(train) | set(val)) == 20
    bad = ["folders", "--videos", str(videos), "--output", str(tmp_path / "c"), "--val-fraction", "1"]
    assert "--val-fraction must be in [0, 1)" in error_line(capsys, bad)
    assert "ssv2 needs --annotations" in error_line(capsys, ["ssv2", "--videos", str(videos), "--output", "o"])


# ------------------------------------------------------------------------------ the listings train
def make_folders(root: Path) -> tuple[None, Path]:
    videos = root / "videos"
    touch(videos, *(f"{split}/{name}/{i}.{suffix}" for split, count in (("train", 3), ("val", 1))
                    for name, suffix in (("walk", "mp4"), ("run", "avi")) for i in range(count)))  # fmt: skip
    return None, videos


def real_videos(videos: Path) -> None:
    """Turn every placeholder below ``videos`` into a real moving-square video (H.264 in an mp4
    container whatever the name says: decoders read the content, and a .webm or .avi name stays)."""
    import numpy as np

    from harness.data.synthetic import moving_square_frames, write_video

    rng = np.random.default_rng(0)
    for index, path in enumerate(sorted(p for p in videos.rglob("*") if p.is_file() and p.stat().st_size == 0)):
        write_video(path.with_name("real.mp4"), moving_square_frames(index % 4, 12, 32, 32, rng), fps=15)
        path.with_name("real.mp4").replace(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "make", "extra"),
    [("ssv2", make_ssv2, ()), ("kinetics", make_kinetics, ()), ("ucf101", make_ucf101, ("--split", "2")),
     ("hmdb51", make_hmdb51, ()), ("diving48", make_diving48, ()), ("folders", make_folders, ())],
)  # fmt: skip
def test_every_converters_listings_train_the_demo_model(tmp_path, capsys, name, make, extra):
    """Each converter's listings of its miniature replica, its videos made real, train the demo
    model for an epoch and evaluate on the validation listing, its classes named by classes.txt
    (charades and ek100: tests/datasets/test_charades.py, test_ek100.py)."""
    from harness.config import load_config
    from harness.training import Trainer
    from tests.conftest import tiny_overrides

    annotations, videos = make(tmp_path)
    real_videos(videos)
    output = tmp_path / "listings"
    convert(capsys, name, annotations, videos, output, *extra)
    options = ("optimization.epochs=1", "data.batch_size=2", "logging.level=warning", "optimization.warmup=0",
               "optimization.anneal=0")  # fmt: skip
    Trainer(load_config(None, tiny_overrides(output, tmp_path / "run", *options))).fit()
    epochs = lines_of(tmp_path / "run" / "epochs.csv")
    assert len(epochs) == 2 and epochs[1].startswith("0,")  # one epoch trained and evaluated on val.csv
    per_class = [line.split(",")[0] for line in lines_of(tmp_path / "run" / "best_per_class.csv")[1:]]
    assert per_class == lines_of(output / "classes.txt")
    if name == "kinetics":  # a class name with a space, videos in three layouts
        assert per_class == ["abseiling", "air drumming", "zumba"]
