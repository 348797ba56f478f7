"""Decode-time scaling on large sources: training items per second decoding at full size versus
at the size the crops need (``data.decode_max_short_side: auto``), side by side in one run.

Sources: camera-like H.264 (a detailed texture panning under sensor noise, CRF 23, one keyframe
every 250 frames, i.e. a long GOP as cameras and phones write), 720p and 1080p, 30 fps, 4 s. An
item is the trainer's: a 16-frame clip at stride 4 from a random start, random resized crop
(scale 0.3-1, ratio 0.75-1.35) to 224 px, uint8 (normalised on the accelerator). Each decoder
that is installed is measured; the two settings alternate item by item over the same draws.

    python bench/bench_decode_scale.py [--items 12] [--decoders torchcodec pyav decord]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from harness.data.decode import backend_available
from harness.data.files import VideoClipDataset
from harness.data.listing import VideoRecord
from harness.data.sampling import ClipSpec
from harness.data.transforms import DecodeScale, TrainTransform

SOURCES = {"720p": (720, 1280), "1080p": (1080, 1920)}


def write_camera_video(path: Path, height: int, width: int, frames: int, seed: int) -> None:
    """Encode camera-like frames one at a time (a 1080p clip held whole would take gigabytes)."""
    import av

    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height // 8 + frames, width // 8 + 2 * frames, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), dtype=np.uint8))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30))
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.gop_size = 250
        stream.options = {"crf": "23", "preset": "veryfast", "keyint": "250", "min-keyint": "250"}
        for t in range(frames):
            frame = texture[t : t + height, 2 * t : 2 * t + width] // 2 + rng.integers(0, 24, (height, width, 3),
                                                                                         dtype=np.uint8)  # fmt: skip
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12, help="items per setting, source and decoder")
    parser.add_argument("--decoders", nargs="+", default=["torchcodec", "pyav", "decord"])
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    transform = TrainTransform(224, normalize=False)
    spec = ClipSpec(16, frame_step=4)
    print("item = random 16-frame clip (stride 4) + random resized crop to 224 + flip, uint8, 0 workers")
    print(f"{'decoder':<11} {'source':<6} {'decoded at':>10} {'full items/s':>12} {'scaled items/s':>14} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as folder:
        videos = {}
        for index, (name, (height, width)) in enumerate(SOURCES.items()):
            videos[name] = Path(folder) / f"{name}.mp4"
            write_camera_video(videos[name], height, width, int(30 * args.seconds), seed=index)
        for decoder in args.decoders:
            if not backend_available(decoder):
                print(f"{decoder:<11} not installed")
                continue
            for name, path in videos.items():
                records = [VideoRecord(str(path), 0)]
                datasets = [VideoClipDataset([(records, spec)], transform, decoder=decoder, seed=1,
                                             decode_max_short_side=setting) for setting in (0, "auto")]  # fmt: skip
                for dataset in datasets:
                    dataset[0]  # warm-up: libraries, first open
                seconds = [0.0, 0.0]
                for item in range(args.items):
                    for which, dataset in enumerate(datasets):
                        dataset.set_epoch(item)  # the same draw for both settings
                        start = time.perf_counter()
                        dataset[0]
                        seconds[which] += time.perf_counter() - start
                full, scaled = (args.items / s for s in seconds)
                size = DecodeScale(transform, "auto")(*SOURCES[name]) or SOURCES[name]
                print(f"{decoder:<11} {name:<6} {f'{size[1]}x{size[0]}':>10} {full:>12.2f} {scaled:>14.2f} "
                      f"{scaled / full:>5.2f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
