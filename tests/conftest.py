"""Shared fixtures: small real mp4 files written with PyAV (libx264), including broken ones."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from harness.data.listing import VideoRecord, write_listing
from harness.data.synthetic import moving_square_frames, write_video
from tests import deadline


def in_ci() -> bool:
    """CI sets ``CI=true`` (``.ci/run`` does too)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# In CI nothing may skip: a skipped test there is a prerequisite CI failed to provide, which is a
# failure (tests/test_skips.py lists every skip and its condition).
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


def _fail_skip_in_ci(report) -> None:
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"


@pytest.fixture(autouse=True)
def _test_clock(request):
    """Starts :mod:`tests.deadline`'s clock with this test's pytest-timeout limit."""
    marker = request.node.get_closest_marker("timeout")
    limit = marker.args[0] if marker and marker.args else request.config.getini("timeout")
    deadline.start(float(limit) if limit else None)


# name: (frames, fps, height, width)
VIDEO_SPECS = {
    "short_30fps": (12, 30, 48, 64),
    "medium_25fps": (50, 25, 96, 64),
    "long_30fps": (120, 30, 48, 64),
    "odd_24fps": (77, 24, 48, 80),
}


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of real videos of different lengths, rates and sizes, plus broken files."""
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    for index, (name, (frames, fps, height, width)) in enumerate(VIDEO_SPECS.items()):
        write_video(root / f"{name}.mp4", moving_square_frames(index % 4, frames, height, width, rng), fps=fps)
    good = (root / "long_30fps.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "zero.mp4").write_bytes(b"")
    (root / "not_video.mp4").write_text("this is not a video\n")
    return root


@pytest.fixture(scope="session")
def good_videos(video_dir: Path) -> list[Path]:
    return [video_dir / f"{name}.mp4" for name in VIDEO_SPECS]


@pytest.fixture(scope="session")
def bad_videos(video_dir: Path) -> list[Path]:
    return [video_dir / n for n in ("truncated.mp4", "zero.mp4", "not_video.mp4", "missing.mp4")]


@pytest.fixture()
def listing_of(tmp_path: Path):
    """Write records to a listing file in ``tmp_path`` and return its path."""

    def write(paths: list[Path], labels: list[int] | None = None, name: str = "list.csv") -> Path:
        labels = labels if labels is not None else list(range(len(paths)))
        target = tmp_path / name
        write_listing([VideoRecord(str(p), label) for p, label in zip(paths, labels)], target)
        return target

    return write


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic demo dataset (4 motion classes, 6 train + 2 val videos each)."""
    from harness.data.synthetic import make_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, 4, 6, 2, num_frames=24, size=(48, 64), progress=False)
    return root


@pytest.fixture(scope="session")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small image dataset laid out as the demo's (4 classes, 3 train + 1 val image each, PNG,
    JPEG, WebP and BMP in turn: tests/images.py)."""
    from tests.images import make_image_dataset

    return make_image_dataset(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def multilabel_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The multi-label demo dataset, small: one or two squares per video, listed as ``path 0,3``."""
    from harness.data.synthetic import make_demo_dataset

    root = tmp_path_factory.mktemp("multilabel")
    make_demo_dataset(root, 4, 6, 3, num_frames=24, size=(48, 64), progress=False, multi_label=True)
    return root


@pytest.fixture(scope="session")
def label_set_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The label-set demo data, small: listings ``path,axis,sense,direction`` and a names file per
    set (``classes_<set>.txt``)."""
    from harness.data.synthetic import make_label_set_demo

    root = tmp_path_factory.mktemp("label_sets")
    make_label_set_demo(root, 6, 2, num_frames=24, size=(48, 64), progress=False)
    return root


def tiny_overrides(root: Path, folder: Path, *extra: str) -> list[str]:
    """Config overrides for a seconds-long CPU run on :func:`demo_root` data."""
    return [
        f"folder={folder}",
        f"data.datasets=[{root / 'train.csv'}]",
        f"data.val_datasets=[{root / 'val.csv'}]",
        f"data.class_names={root / 'classes.txt'}",
        "data.dataset_fpcs=[4]",
        "data.val_dataset_fpcs=[4]",
        "data.frame_step=2",
        "data.batch_size=4",
        "data.crop_size=32",
        "data.num_workers=0",
        "data_aug.horizontal_flip=false",
        "meta.dtype=float32",
        "meta.finetune_encoder=true",
        "model.model_name=vit_tiny",
        "model.depth=2",
        "optimization.epochs=2",
        "optimization.lr=0.001",
        "logging.log_every=1",
        "logging.progress_bar=false",
        *extra,
    ]


@pytest.fixture(scope="session")
def demo_shards(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`demo_root` packed into shards of 3 clips: train (8 shards) and val (3 shards)."""
    from harness.prepare import Settings, prepare

    out = tmp_path_factory.mktemp("shards")
    settings = Settings(shard_samples=3)
    prepare(demo_root / "train.csv", out, settings, val_input=demo_root / "val.csv", workers=1, chunked=True)
    return out


@pytest.fixture(scope="session")
def multilabel_shards(multilabel_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`multilabel_root` packed into shards of 3 clips (``.cls`` holds ``0,3``)."""
    from harness.prepare import Settings, prepare

    out = tmp_path_factory.mktemp("multilabel_shards")
    prepare(multilabel_root / "train.csv", out, Settings(shard_samples=3), val_input=multilabel_root / "val.csv",
            workers=1, chunked=True)  # fmt: skip
    return out


#: the demo data :func:`square_run` trains on: half the demo's videos, enough for its probe to look
#: at the moving square (tests/test_explain.py)
SQUARES = {"num_classes": 4, "train_per_class": 12, "val_per_class": 4}


@pytest.fixture(scope="session")
def square_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(data root, run folder)``: configs/demo.yaml as shipped (15 epochs, 64-pixel crops) on
    :data:`SQUARES`; a probe that attends to the square and whose vectors group by class."""
    from harness.config import load_config
    from harness.data.synthetic import make_demo_dataset
    from harness.training import Trainer

    root = tmp_path_factory.mktemp("squares")
    make_demo_dataset(root, **SQUARES, progress=False)
    folder = root / "run"
    overrides = [f"folder={folder}", f"data.datasets=[{root / 'train.csv'}]", f"data.val_datasets=[{root / 'val.csv'}]",
                 f"data.class_names={root / 'classes.txt'}", "data.generate_demo_data=false", "data.num_workers=0",
                 "logging.progress_bar=false", "logging.level=warning"]  # fmt: skip
    Trainer(load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml", overrides)).fit()
    return root, folder


@pytest.fixture(scope="session")
def trained_run(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-epoch run of a RoPE ViT (V-JEPA 2's architecture) on the named demo classes."""
    from harness.config import load_config
    from harness.training import Trainer

    folder = tmp_path_factory.mktemp("trained") / "run"
    extra = ("optimization.epochs=1", "model.model_name=vit_tiny_rope", "logging.level=warning")
    Trainer(load_config(None, tiny_overrides(demo_root, folder, *extra))).fit()
    return folder
