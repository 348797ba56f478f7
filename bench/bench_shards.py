"""Shards versus individual files for the training input pipeline, and prepare throughput.

In one run: N generated 320x240 H.264 clips (textured, panning; as in bench_data.py) are read
(1) as individual mp4 files through ``VideoClipDataset`` + ``build_loader`` and (2) packed into
tar shards by ``harness.prepare --chunked`` through ``ShardDataset`` + ``ShardLoader``; same clip
sampling (16 frames, stride 2), same augmentation (random resized crop 224, flip, uint8), batch 8,
with 0 and 2 workers. Each loader runs a warm-up epoch, then three timed epochs alternating with
the other's; clips/s (medians) and the ratio shards/files are printed. Then the prepare
throughput (clips/s) for stream-copy cutting of 10 s sources into 2 s segments, and for
re-encoding them (15 fps, short side 160).

    python bench/bench_shards.py [--clips 48]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_data import textured_frames  # noqa: E402

from harness.data import ClipSpec, TrainTransform, VideoClipDataset, VideoRecord, build_loader  # noqa: E402
from harness.data.listing import write_listing  # noqa: E402
from harness.data.shards import ShardDataset, ShardLoader, list_shards  # noqa: E402
from harness.data.synthetic import write_video  # noqa: E402
from harness.prepare import Settings, prepare  # noqa: E402

SPEC = ClipSpec(16, frame_step=2)
BATCH = 8


def timed_epoch(loader, epoch: int) -> float:
    loader.set_epoch(epoch)
    start = time.perf_counter()
    clips = sum(len(batch.labels) for batch in loader)
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=96)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "clips").mkdir()
        records = []
        for index in range(args.clips):
            path = root / "clips" / f"c{index:04d}.mp4"
            write_video(path, textured_frames(rng, frames=60), fps=30, gop=30, crf=23)
            records.append(VideoRecord(str(path), index % 10))
        write_listing(records, root / "clips.csv")
        prepare(root / "clips.csv", root / "shards", Settings(shard_samples=8), val_fraction=0, workers=2, chunked=True)
        transform = TrainTransform(224, normalize=False)
        print(f"{args.clips} clips 320x240 2 s, clip 16 frames stride 2 -> uint8 224 px, batch {BATCH}")
        print(f"{'workers':>7} {'files clips/s':>14} {'shards clips/s':>15} {'ratio':>6}")
        for workers in (0, 2):
            files = VideoClipDataset([(records, SPEC)], transform, seed=0)
            file_loader = build_loader(files, BATCH, train=True, num_workers=workers, seed=0)
            shards = ShardDataset([list_shards(str(root / "shards" / "train" / "manifest.json"))], SPEC, transform)
            shards.configure(0, 1, max(1, workers))
            shard_loader = ShardLoader(shards, BATCH, steps_per_epoch=args.clips // BATCH, num_workers=workers,
                                       persistent_workers=workers > 0)  # fmt: skip
            for loader in (file_loader, shard_loader):
                timed_epoch(loader, 0)  # warm-up: worker start, first imports
            # Alternate the two over three epochs (different random clips each) and take medians,
            # so that machine noise and per-clip seek costs hit both alike.
            rates: list[list[float]] = [[], []]
            for epoch in range(1, 4):
                for which, loader in enumerate((file_loader, shard_loader)):
                    rates[which].append(timed_epoch(loader, epoch))
            files_rate, shards_rate = (statistics.median(r) for r in rates)
            print(f"{workers:7d} {files_rate:14.1f} {shards_rate:15.1f} {shards_rate / files_rate:6.2f}")

        bench_prepare(root, rng)


def bench_prepare(root: Path, rng: np.random.Generator) -> None:
    """clips/s of harness.prepare with each cutter (PyAV and the ffmpeg command), side by side."""
    for name, count, (height, width) in (("small", 6, (240, 320)), ("hd", 3, (360, 640))):
        (root / name / "a").mkdir(parents=True)
        for index in range(count):
            frames = textured_frames(rng, frames=300, height=height, width=width)
            write_video(root / name / "a" / f"s{index}.mp4", frames, fps=30, gop=30)
    kinds = (
        ("small", "6 x 10 s 320x240, stream copy", {}),
        ("small", "6 x 10 s 320x240 -> 15 fps 160 px", {"fps": 15, "short_side": 160}),
        ("hd", "3 x 10 s 640x360 -> 30 fps 320 px", {"fps": 30, "short_side": 320}),
    )
    cutters = ["pyav", "ffmpeg"] if shutil.which("ffmpeg") else ["pyav"]
    print("prepare -> 2 s clips, clips/s (best of 2 runs, cutters alternating)")
    print(f"{'source, cutting':36s} {'workers':>7} {'pyav':>7} {'ffmpeg':>7} {'ratio':>6}")
    for source, label, extra in kinds:
        for workers in (1, 2):
            rates: dict[str, list[float]] = {cutter: [] for cutter in cutters}
            for repeat in range(2):  # alternate the cutters: the machine is shared and noisy
                for cutter in cutters:
                    settings = Settings(segment_seconds=2, shard_samples=8, cutter=cutter, **extra)
                    out = root / "prepared" / f"{label}-{workers}-{repeat}-{cutter}".replace(" ", "_")
                    start = time.perf_counter()
                    report = prepare(root / source, out, settings, val_fraction=0, workers=workers)
                    rates[cutter].append(report["splits"]["train"]["clips"] / (time.perf_counter() - start))
            best = {cutter: max(values) for cutter, values in rates.items()}
            ffmpeg = best.get("ffmpeg", float("nan"))
            print(f"{label:36s} {workers:7d} {best['pyav']:7.1f} {ffmpeg:7.1f} {ffmpeg / best['pyav']:6.2f}")


if __name__ == "__main__":
    main()
