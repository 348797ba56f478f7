import itertools
import sys
from importlib.metadata import version

import numpy as np
import pytest
import torch

from harness.data.decode import (
    BACKENDS,
    DecodeError,
    backend_available,
    open_video,
    read_clip_frames,
    resolve_backend,
    scaling_supported,
)
from tests.conftest import VIDEO_SPECS

AVAILABLE = [b for b in BACKENDS if backend_available(b)]


def test_all_backends_installed():
    # CI installs decord, av, torchcodec and the system FFmpeg: a missing one is a setup bug.
    assert AVAILABLE == list(BACKENDS)
    assert resolve_backend("auto") == "torchcodec"


@pytest.mark.parametrize("name", list(VIDEO_SPECS))
@pytest.mark.parametrize("backend", AVAILABLE)
def test_metadata(video_dir, name, backend):
    frames, fps, height, width = VIDEO_SPECS[name]
    reader = open_video(str(video_dir / f"{name}.mp4"), backend)
    assert reader.num_frames == frames
    assert reader.fps == pytest.approx(fps)
    out = read_clip_frames(reader, np.array([[0, 1], [frames - 1, frames - 1]]))
    assert out.shape == (2, 2, height, width, 3) and out.dtype == torch.uint8
    reader.close()


@pytest.mark.parametrize("first, second", list(itertools.combinations(AVAILABLE, 2)))
def test_backends_return_identical_frames(video_dir, first, second):
    path = str(video_dir / "long_30fps.mp4")
    rng = np.random.default_rng(1)
    requests = [np.arange(0, 64, 4), np.array([100, 3, 3, 119, 50]), np.sort(rng.integers(0, 120, 16))]
    a, b = open_video(path, first), open_video(path, second)
    for indices in requests:
        assert torch.equal(read_clip_frames(a, indices), read_clip_frames(b, indices)), (first, second, indices)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_in_memory_bytes_decode_like_the_file(video_dir, backend):
    path = video_dir / "odd_24fps.mp4"
    indices = np.array([5, 6, 40, 76])
    from_file = read_clip_frames(open_video(str(path), backend), indices)
    from_bytes = read_clip_frames(open_video(path.read_bytes(), backend), indices)
    assert torch.equal(from_file, from_bytes)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_broken_files_raise_decode_error(bad_videos, backend):
    for path in bad_videos:
        with pytest.raises(DecodeError):
            reader = open_video(str(path), backend)
            read_clip_frames(reader, np.arange(reader.num_frames))


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown decoder 'ffmpeg'"):
        resolve_backend("ffmpeg")


def panning_video(path, frames: int = 40, height: int = 240, width: int = 320) -> None:
    """Camera-like content (smooth random texture, as lenses deliver) that moves three pixels a
    frame: a wrong frame index shows."""
    import torchvision.transforms.v2.functional as F

    from harness.data.synthetic import write_video

    generator = torch.Generator().manual_seed(3)
    coarse = torch.randint(0, 256, (3, height // 12 + 1, (width + 3 * frames) // 12 + 1), generator=generator)
    texture = F.resize(coarse.to(torch.uint8), [12 * coarse.shape[1], 12 * coarse.shape[2]]).permute(1, 2, 0)
    clip = np.stack([texture[:height, 3 * t : 3 * t + width].numpy() for t in range(frames)])
    write_video(path, clip, gop=40)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_scaled_decoding_equals_a_full_decode_resized(tmp_path, backend):
    if not scaling_supported(backend):  # the fallback is tested below on every torchcodec
        pytest.skip(f"torchcodec {version('torchcodec')} has no decoder transforms (torchcodec.transforms, from 0.9)")
    import torchvision.transforms.v2.functional as F

    path = str(tmp_path / "pan.mp4")
    panning_video(path)
    indices = np.arange(3, 39, 4)

    def resized(frames: torch.Tensor) -> torch.Tensor:
        return F.resize(frames.permute(0, 3, 1, 2), [120, 160], antialias=True).permute(0, 2, 3, 1).float()

    full = read_clip_frames(open_video(path, backend), indices)
    scaled = read_clip_frames(open_video(path, backend, scale=lambda height, width: (120, 160)), indices)
    assert full.shape == (9, 240, 320, 3) and scaled.shape == (9, 120, 160, 3)
    difference = (scaled.float() - resized(full)).abs()
    assert difference.mean() < 6 and difference.quantile(0.99) < 40, (backend, difference.mean())
    neighbour = (scaled.float() - resized(read_clip_frames(open_video(path, backend), indices + 1))).abs()
    assert neighbour.mean() > 3 * difference.mean(), "the same frames, not their neighbours"
    assert read_clip_frames(open_video(path, backend, scale=lambda height, width: None), indices).equal(full)


def test_a_torchcodec_without_decoder_transforms_decodes_full_frames(tmp_path, monkeypatch):
    # torchcodec 0.8 (what pip gives the lowest supported torch, 2.9) has no torchcodec.transforms:
    # a requested scale is then ignored and the frames come full size (the crop's resize scales
    # them). Hidden here, so that this fallback runs on whichever torchcodec is installed.
    path = str(tmp_path / "pan.mp4")
    panning_video(path)
    indices = np.arange(3, 39, 4)
    full = read_clip_frames(open_video(path, "torchcodec"), indices)
    monkeypatch.setitem(sys.modules, "torchcodec.transforms", None)  # its import now fails
    scaling_supported.cache_clear()
    try:
        assert not scaling_supported("torchcodec")
        scaled = read_clip_frames(open_video(path, "torchcodec", scale=lambda height, width: (120, 160)), indices)
    finally:
        monkeypatch.undo()
        scaling_supported.cache_clear()
    assert full.shape == scaled.shape == (9, 240, 320, 3), "frames it cannot scale stay full size"
    assert scaled.equal(full)


def test_decode_scale_rule_never_upsamples_a_crop():
    from torchvision.transforms import RandomResizedCrop

    from harness.data.transforms import DecodeScale, EvalTransform, TrainTransform

    train = TrainTransform(224, random_resize_scale=(0.3, 1.0), random_resize_aspect_ratio=(0.75, 1.35))
    size = DecodeScale(train, "auto")(1080, 1920)
    assert size == (358, 636), "1080p is decoded at a third of its side"
    frame = torch.empty(1, 3, *size)
    torch.manual_seed(0)
    boxes = [RandomResizedCrop.get_params(frame, [0.3, 1.0], [0.75, 1.35]) for _ in range(3000)]
    assert min(min(box[2], box[3]) for box in boxes) >= 222, "no crop box below 224 px (but for rounding)"
    assert DecodeScale(train, "auto")(240, 320) is None, "a small source is decoded as it is"
    assert DecodeScale(EvalTransform(224), "auto")(720, 1280) == (256, 456)
    assert DecodeScale(train, 0)(1080, 1920) is None and DecodeScale(train, 480)(1080, 1920) == (480, 854)
