"""Data pipeline benchmark: raw decoding vs the full item pipeline, measured side by side.

(a) raw: open the video, pick the clip's frame indices, decode those frames (uint8).
(b) item: ``VideoClipDataset.__getitem__`` = sample + decode + train augmentation + float
    normalisation, 16 frames at 224 px.
Both run over the same generated 320x240 H.264 videos (GOP 60) with the same indices, in one
process and with 2 DataLoader workers, interleaved in rounds so machine noise hits both alike.
Prints clips/s and the ratio (b)/(a); 1.0 means augmentation is free.

    python bench/bench_data.py [--videos 24] [--rounds 3] [--decoder auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from harness.data import ClipSpec, TrainTransform, VideoClipDataset, VideoRecord, open_video, read_clip_frames
from harness.data.decode import resolve_backend
from harness.data.sampling import sample_clip_indices
from harness.data.synthetic import write_video

SPEC = ClipSpec(16, frame_step=4)


class RawDecode(Dataset):
    """Only the decoder's work: the same indices the item pipeline would use."""

    def __init__(self, paths: list[str], decoder: str) -> None:
        self.paths, self.decoder = paths, decoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        reader = open_video(self.paths[index], self.decoder)
        rng = np.random.default_rng([0, 0, index, 0])
        indices = sample_clip_indices(reader.num_frames, reader.fps, SPEC, 1, random=True, rng=rng)
        frames = read_clip_frames(reader, indices)
        reader.close()
        return frames


def textured_frames(rng: np.random.Generator, frames: int = 150, height: int = 240, width: int = 320) -> np.ndarray:
    """Camera-like content: a detailed texture panning across the frame plus sensor noise.

    Flat synthetic shapes compress to almost nothing and decode unrealistically fast, which
    would flatter the ratio; this content encodes at a bitrate typical of 320x240 web video.
    """
    texture = rng.integers(0, 256, (height // 4 + frames, width // 4 + frames, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((4, 4, 1), dtype=np.uint8))
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        noise = rng.integers(0, 24, (height, width, 3), dtype=np.uint8)
        out[t] = texture[t : t + height, 2 * t : 2 * t + width] // 2 + noise
    return out


def make_videos(root: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = root / f"v{i:03d}.mp4"
        write_video(path, textured_frames(rng), fps=30, gop=60, crf=23)
        paths.append(str(path))
    return paths


def clips_per_second(dataset: Dataset, workers: int) -> float:
    if workers == 0:
        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        return len(dataset) / (time.perf_counter() - start)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=4)
    iterator = iter(loader)
    next(iterator)  # workers started and warm
    start = time.perf_counter()
    count = sum(1 for _ in iterator)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decoder", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(1)
    decoder = resolve_backend(args.decoder)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_videos(Path(tmp), args.videos)
        raw = RawDecode(paths, decoder)
        records = [VideoRecord(p, 0) for p in paths]
        kbps = sum(Path(p).stat().st_size for p in paths) * 8 / 1000 / (5.0 * len(paths))
        variants = {
            "float": VideoClipDataset([(records, SPEC)], TrainTransform(crop_size=224), decoder=decoder),
            "uint8": VideoClipDataset(
                [(records, SPEC)], TrainTransform(crop_size=224, normalize=False), decoder=decoder
            ),
        }
        print(f"decoder={decoder}, {args.videos} videos 320x240 30 fps 5 s (~{kbps:.0f} kb/s), clip 16x224 stride 4")
        print("item = sample + decode + random resized crop + flip (+ normalise to float32 for 'float';")
        print("       'uint8' leaves normalisation to the accelerator, see normalize_clips)")
        print(f"{'workers':>8} {'raw clips/s':>12} {'float item':>11} {'ratio':>6} {'uint8 item':>11} {'ratio':>6}")
        for workers in (0, 2):
            rates: dict[str, list[float]] = {"raw": [], "float": [], "uint8": []}
            for _ in range(args.rounds):
                rates["raw"].append(clips_per_second(raw, workers))
                for name, dataset in variants.items():
                    rates[name].append(clips_per_second(dataset, workers))
            r, f, u = (float(np.median(rates[k])) for k in ("raw", "float", "uint8"))
            print(f"{workers:>8} {r:>12.1f} {f:>11.1f} {f / r:>6.3f} {u:>11.1f} {u / r:>6.3f}")


if __name__ == "__main__":
    main()
