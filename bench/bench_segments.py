"""Segments of long videos: what one item costs, late in a long file against early in it.

A generated 10-minute 320x240 H.264 video at 30 fps (18000 frames, a key frame every second) and
two segments of 2 s, one at its start and one at minute 9; each item is what training does for a
segment (``harness.data.clips.load_clips``: open, find the segment, decode one 16-frame clip at
step 4), timed side by side in one run, alternately, median of ``--repeats``. Per decoder: the late
segment's time over the early one's (seeking: near 1), and for torchcodec its approximate open (a
segment's) against the exact open (a whole video's) on the same late segment.

    python bench/bench_segments.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from harness.data import clips
    from harness.data.decode import backend_available, open_video
    from harness.data.sampling import ClipSpec
    from harness.data.synthetic import moving_square_frames, write_video

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")  # fmt: skip
    print(f"bench_segments on {cpu}")
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / "long.mp4"
        rng = np.random.default_rng(0)
        frames = np.concatenate([moving_square_frames(i % 4, 600, 240, 320, rng) for i in range(30)])
        write_video(video, frames, fps=30, gop=30)
        print(f"video: {len(frames)} frames at 30 fps, 320x240, {video.stat().st_size / 1e6:.1f} MB")
        spec = ClipSpec(16, frame_step=4)

        def item(decoder: str, start: float):
            return lambda: clips.load_clips(str(video), spec, 1, lambda f: f, random=False, allow_clip_overlap=False,
                                            rng=np.random.default_rng(0), decoder=decoder,
                                            segment=(start, start + 2.0))  # fmt: skip

        for decoder in ("pyav", "torchcodec", "decord"):
            if not backend_available(decoder):
                print(f"{decoder}: not installed")
                continue
            early, late = [], []
            for _ in range(args.repeats):  # alternately
                early += timed(item(decoder, 1.0), 1)
                late += timed(item(decoder, 540.0), 1)
            ratio = statistics.median(late) / statistics.median(early)
            print(f"{decoder}: a segment at minute 9 over one at second 1: {ratio:.2f}x "
                  f"({statistics.median(late) * 1e3:.0f} ms vs {statistics.median(early) * 1e3:.0f} ms)")  # fmt: skip
        if backend_available("torchcodec"):
            exact, approximate = [], []
            indices = np.arange(16200, 16264, 4)
            for _ in range(args.repeats):
                exact += timed(lambda: open_video(str(video), "torchcodec").get_frames(indices), 1)
                approximate += timed(lambda: open_video(str(video), "torchcodec", partial=True).get_frames(indices), 1)
            ratio = statistics.median(exact) / statistics.median(approximate)
            print(f"torchcodec, the late clip: exact open (a whole video's) over approximate open (a segment's): "
                  f"{ratio:.1f}x ({statistics.median(exact) * 1e3:.1f} ms vs "
                  f"{statistics.median(approximate) * 1e3:.1f} ms)")  # fmt: skip


if __name__ == "__main__":
    main()
