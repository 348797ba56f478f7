"""Frame folders (docs/data.md "Frame folders"): what one open costs for a long folder (the listing
and the sort of its numbers, no frame read), and one clip from a folder of JPEG frames against the
same frames as an H.264 mp4.

Listing: a folder of ``--frames`` empty files, named ``frame_0000000001.jpg``... (zero-padded, one
pattern: the fast order) and ``frame_1.jpg``... (numbers parsed), opened ``--repeats`` times each.
Clip: 300 frames of 456x256 (EPIC-KITCHENS' ``rgb_frames`` size) with a moving square over noise,
as JPEG (quality 95) and as H.264 (CRF 20, GOP 12, 50 fps); an item is a 16-frame clip at stride 4
from a random start, decoded at full size (and, for the folder, at the half size a 112-px crop
allows: ``data.decode_max_short_side: auto``).

    python bench/bench_frame_folders.py [--frames 100000] [--repeats 5] [--clips 30]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.data.decode import backend_available, open_video
from harness.data.frame_folders import list_frames
from harness.data.synthetic import moving_square_frames, write_video
from harness.data.transforms import DecodeScale, EvalTransform


def median_ms(function, repeats: int) -> float:
    """The median wall time of ``function()`` over ``repeats`` calls, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def listing_costs(root: Path, frames: int, repeats: int) -> None:
    for name, pattern in (("zero-padded", "frame_{:010d}.jpg"), ("unpadded", "frame_{}.jpg")):
        folder = root / name
        folder.mkdir()
        for number in range(1, frames + 1):
            (folder / pattern.format(number)).touch()

        def scan(folder: Path = folder) -> None:
            with os.scandir(folder) as entries:
                [entry.name for entry in entries]

        scanned, listed = median_ms(scan, repeats), median_ms(lambda folder=folder: list_frames(str(folder)), repeats)
        print(f"list {frames} frames, {name:<11}: {listed:6.0f} ms per open ({scanned:.0f} ms of it os.scandir)")


def clip_costs(root: Path, clips: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = moving_square_frames(0, 300, 256, 456, rng)
    frames = (frames.astype(np.int16) + rng.integers(0, 30, frames.shape)).clip(0, 255).astype(np.uint8)
    (root / "P01_01").mkdir()
    for number, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(root / "P01_01" / f"frame_{number:010d}.jpg", quality=95)
    write_video(root / "P01_01.mp4", frames, fps=50)
    starts = rng.integers(0, 300 - 61, clips)

    def clip(source: str, backend: str = "auto", **options) -> float:
        remaining = [int(start) for start in starts]

        def read() -> None:
            reader = open_video(source, backend, **options)
            reader.get_frames(np.arange(remaining.pop(), 300, 4)[:16])
            reader.close()

        remaining.append(0)
        read()  # warm-up: libraries, page cache
        return median_ms(read, clips)

    print(f"16-frame clip, folder of JPEG, full size:  {clip(str(root / 'P01_01'), fps=50):6.1f} ms")
    half = DecodeScale(EvalTransform(112), "auto")
    print(f"16-frame clip, folder of JPEG, half size:  {clip(str(root / 'P01_01'), fps=50, scale=half):6.1f} ms")
    for backend in ("torchcodec", "decord", "pyav"):
        if backend_available(backend):
            print(f"16-frame clip, H.264 mp4, {backend:<10}:      {clip(str(root / 'P01_01.mp4'), backend):6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100_000, help="files in the listed folder")
    parser.add_argument("--repeats", type=int, default=5, help="opens of the listed folder")
    parser.add_argument("--clips", type=int, default=30, help="clips per source")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as folder:
        listing_costs(Path(folder), args.frames, args.repeats)
        clip_costs(Path(folder), args.clips)


if __name__ == "__main__":
    main()
