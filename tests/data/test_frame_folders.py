"""Folders of numbered frames as videos: the frame order (numeric, the last number), only the frames
asked for are read, unusable folders are decode errors naming the folder or file, a video's frames
written as PNG read back as that video, and JPEG frames decode smaller when the crops allow."""

import numpy as np
import pytest
import torch

from harness.data import frame_folders
from harness.data.decode import DecodeError, open_video
from harness.data.files import load_clips
from harness.data.frame_folders import FrameFolderReader, frame_names
from harness.data.sampling import ClipSpec
from harness.data.transforms import DecodeScale, EvalTransform, TrainTransform
from tests.frame_folders import write_frames
from tests.images import encode_image, smooth_frame


def numbered_frames(count: int, height: int = 20, width: int = 30) -> np.ndarray:
    """``uint8 [count, H, W, 3]``: frame ``t`` is flat grey ``10 + t`` (its number readable from a pixel)."""
    return np.broadcast_to((10 + np.arange(count, dtype=np.uint8))[:, None, None, None], (count, height, width, 3))


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["frame_10.jpg", "frame_2.jpg", "frame_1.jpg"], ["frame_1.jpg", "frame_2.jpg", "frame_10.jpg"]),
        (["0002.png", "1.png", "10.PNG"], ["1.png", "0002.png", "10.PNG"]),  # padding mixed: the number decides
        (["p01_take2_0003.jpg", "p01_take2_0001.jpg"], ["p01_take2_0001.jpg", "p01_take2_0003.jpg"]),  # the last one
        (["cover.jpg", "notes.txt", "frame_1.txt", "frame_3.webp", "frame_2"], ["frame_3.webp"]),  # numbered images
        ([f"frame_{n}.jpg" for n in (5, 10**25, 7)], ["frame_5.jpg", "frame_7.jpg", f"frame_{10**25}.jpg"]),
        # zero-padded names of one pattern (text order is number order), and two patterns of one width (it is not)
        ([f"frame_{n:010d}.jpg" for n in (10, 2, 1)], [f"frame_{n:010d}.jpg" for n in (1, 2, 10)]),
        (["a_001.jpg", "b_000.jpg", "a_002.jpg"], ["b_000.jpg", "a_001.jpg", "a_002.jpg"]),
        # a folder copied from a Mac: each frame has a hidden AppleDouble twin of the same number
        (["frame_2.jpg", "._frame_2.jpg", "frame_1.jpg", "._frame_1.jpg"], ["frame_1.jpg", "frame_2.jpg"]),
    ],
)
def test_frames_are_ordered_by_the_last_number_in_their_name(names, expected):
    assert frame_names(names) == expected


def test_a_folder_reads_its_frames_in_numeric_order(tmp_path):
    folder = tmp_path / "P01_01"
    frames = numbered_frames(12)
    write_frames(folder, frames, "png", name="frame_{}")  # frame_1 ... frame_12: frame_10 sorts before frame_2 as text
    (folder / "notes.txt").write_text("not a frame")
    (folder / "cover.png").write_bytes(encode_image(smooth_frame(8, 8), "png"))  # no number: not a frame
    (folder / "sub").mkdir()
    reader = open_video(str(folder), fps=50)
    assert isinstance(reader, FrameFolderReader) and (reader.num_frames, reader.fps) == (12, 50.0)
    decoded = reader.get_frames(np.arange(12))
    assert decoded.shape == (12, 20, 30, 3) and decoded.dtype == torch.uint8
    assert decoded[:, 0, 0, 0].tolist() == list(range(10, 22)), "frame_2 before frame_10"
    assert open_video(str(folder)).fps == 0.0, "no rate given: unknown"


def test_only_the_requested_frames_are_read_each_once(tmp_path, monkeypatch):
    folder = tmp_path / "long"
    frames = numbered_frames(40)
    paths = write_frames(folder, frames, "png")
    for index, path in enumerate(paths):
        if index not in (0, 5, 17):
            path.write_bytes(b"garbage")  # a read of any of these would fail
    decoded_files = []
    original = frame_folders.decode_image
    monkeypatch.setattr(
        frame_folders, "decode_image", lambda path, *a: decoded_files.append(path) or original(path, *a)
    )
    reader = open_video(str(folder))
    assert reader.num_frames == 40 and decoded_files == [], "opening lists names, reads no frame"
    clip = reader.get_frames(np.array([5, 5, 17, 0, 17]))
    assert clip[:, 0, 0, 0].tolist() == [15, 15, 27, 10, 27]
    assert sorted(decoded_files) == [str(paths[i]) for i in (0, 5, 17)], "each distinct frame decoded once"
    with pytest.raises(DecodeError, match="frame_0000000002.png"):
        reader.get_frames(np.array([1]))


def test_unusable_folders_are_decode_errors_naming_the_folder_or_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DecodeError, match=f"frame folder {empty} is empty"):
        open_video(str(empty))
    unnumbered = tmp_path / "unnumbered"
    unnumbered.mkdir()
    (unnumbered / "cover.jpg").write_bytes(encode_image(smooth_frame(8, 8), "jpg"))
    with pytest.raises(DecodeError, match=f"frame folder {unnumbered} holds no numbered image"):
        open_video(str(unnumbered))
    two_kinds = tmp_path / "two_kinds"
    write_frames(two_kinds, numbered_frames(2), "jpg", name="img_{:05d}")
    write_frames(two_kinds, numbered_frames(2), "jpg", name="flow_x_{:05d}")
    with pytest.raises(DecodeError, match=f"frame folder {two_kinds}: two frames are numbered 1 "):
        open_video(str(two_kinds))

    mixed = tmp_path / "mixed"
    write_frames(mixed, numbered_frames(4), "png")
    write_frames(mixed, numbered_frames(1, 22, 30), "png", first=3)  # frame 3 is 2 rows taller
    reader = open_video(str(mixed))
    assert reader.get_frames(np.array([0, 1, 3])).shape == (3, 20, 30, 3), "the other frames read"
    with pytest.raises(DecodeError, match=r"frame_0000000003.png: 30x22 frame where the first frame is 30x20"):
        reader.get_frames(np.array([0, 2]))

    broken = tmp_path / "broken"
    paths = write_frames(broken, np.stack([smooth_frame(48, 64, seed=s) for s in range(3)]), "jpg")
    paths[1].write_bytes(paths[1].read_bytes()[:300])  # truncated after its header
    reader = open_video(str(broken))
    with pytest.raises(DecodeError, match=f"cannot decode frame {paths[1]}"):
        reader.get_frames(np.array([0, 1, 2]))


def test_a_videos_frames_written_as_png_read_back_as_the_video(video_dir, tmp_path):
    video = str(video_dir / "odd_24fps.mp4")  # 77 frames at 24 fps, 48x80
    reader = open_video(video)
    frames = reader.get_frames(np.arange(reader.num_frames))
    folder = tmp_path / "12345"
    write_frames(folder, frames.numpy(), "png", name="{:05d}")  # SSv2 copies' layout: 00001.png ...
    from_folder = open_video(str(folder), fps=reader.fps)
    assert (from_folder.num_frames, from_folder.fps) == (reader.num_frames, reader.fps)
    assert torch.equal(from_folder.get_frames(np.arange(77)), frames), "identical pixels"
    # The same clips through the same sampling and augmentation (fps sampling reads the rate given)
    cases = ((ClipSpec(8, fps=6), EvalTransform(32, num_views=2), False),
             (ClipSpec(4, frame_step=3), TrainTransform(32, normalize=False), True))  # fmt: skip
    for spec, transform, random in cases:
        outputs = [load_clips(source, spec, 2, transform, random=random, allow_clip_overlap=False,
                              rng=np.random.default_rng(3), fps=rate)
                   for source, rate in ((video, None), (str(folder), reader.fps))]  # fmt: skip
        (video_clips, video_indices), (folder_clips, folder_indices) = outputs
        assert torch.equal(video_indices, folder_indices)
        assert all(torch.equal(a, b) for a, b in zip(video_clips, folder_clips, strict=True))
    assert torch.equal(video_indices[0], torch.tensor([0, 3, 6, 9]) + video_indices[0, 0])


def test_jpeg_frames_decode_smaller_when_the_crops_allow(tmp_path):
    folder = tmp_path / "large"
    write_frames(folder, np.stack([smooth_frame(256, 320, seed=s) for s in range(4)]), "jpg")
    reader = open_video(str(folder), scale=DecodeScale(EvalTransform(32), 64))  # short side 64 asked for
    assert reader.get_frames(np.array([0, 3])).shape == (2, 64, 80, 3), "DCT scaling, 1/4"
    clips, _ = load_clips(str(folder), ClipSpec(2, frame_step=1), 1, EvalTransform(32), random=False,
                          allow_clip_overlap=False, rng=np.random.default_rng(0), decode_max_short_side=64)  # fmt: skip
    full, _ = load_clips(str(folder), ClipSpec(2, frame_step=1), 1, EvalTransform(32), random=False,
                         allow_clip_overlap=False, rng=np.random.default_rng(0))  # fmt: skip
    assert clips[0].shape == full[0].shape == (3, 2, 32, 32)
    assert (clips[0] - full[0]).abs().mean() < 0.05, "the same picture, decoded smaller"
