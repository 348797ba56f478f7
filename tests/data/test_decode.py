import itertools

import numpy as np
import pytest
import torch

from harness.data.decode import BACKENDS, DecodeError, backend_available, open_video, read_clip_frames, resolve_backend
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
