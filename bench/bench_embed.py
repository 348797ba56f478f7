"""Embedding throughput: ``harness.embed`` (the whole command: jobs, batches, features, shard files,
parts, the merged index) against a bare forward of the model's encoder over the same clips, side by
side in one run (aim: embed >= 0.9 x the bare forward).

Decoding is not what is measured: the clips are decoded once, before any timing, from real demo
mp4 files (320x180) by the command's own dataset (:class:`harness.data.units.VideoUnits`), and both
sides then take them from memory (the command's dataset is swapped for one that hands them out).
The bare side normalises each batch and runs ``model.encoder`` under ``no_grad``; the command does
that and everything else (the probe for ``probe``, the features to float32 NumPy, spool files,
shard files written atomically, the index). The two alternate ``--repeats`` times; medians compared.

    python bench/bench_embed.py [--model vit_small] [--videos 48] [--batch 8] [--features pooled,probe]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_predict import demo_videos_and_model  # noqa: E402

from harness.data.transforms import normalize_clips  # noqa: E402
from harness.data.units import Unit, VideoUnits, collate_units  # noqa: E402
from harness.embed import cli, run  # noqa: E402
from harness.embed.source import EmbeddingModel  # noqa: E402
from harness.export.model_io import Preprocessing  # noqa: E402


class DecodedUnits(Dataset):
    """Stands in for :class:`VideoUnits` in the command: the clips decoded before timing, by video."""

    decoded: dict[str, object] = {}

    def __init__(self, units, preprocessing, decoder) -> None:
        self.units = units

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, index: int):
        unit = self.units[index]
        return unit, self.decoded[unit.video]


def bare_seconds(model, items: list, preprocessing: Preprocessing, batch: int) -> float:
    """Normalise and encode every clip, batch by batch, nothing kept."""
    loader = DataLoader(items, batch_size=batch, collate_fn=collate_units)
    started = time.perf_counter()
    with torch.no_grad():
        for _, clips, _ in loader:
            model.encoder(normalize_clips(clips.clips, preprocessing.mean, preprocessing.std).flatten(0, 1))
    return time.perf_counter() - started


def embed_seconds(listing: Path, out: Path, features: str, batch: int) -> float:
    """The whole command into a new ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the command's summary line
        code = cli.main([str(out.parent / "model"), str(listing), "--output", str(out), "--features", features,
                         "--batch-size", str(batch), "--workers", "0", "--rows-per-shard", "16",
                         "--no-progress"])  # fmt: skip
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"harness.embed exited {code}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_small")
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--features", default="pooled,probe")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records, model, preprocessing = demo_videos_and_model(root, args)
        paths = [str(root / record.path) for record in records]
        units = [Unit((i,), path) for i, path in enumerate(paths)]
        source = VideoUnits(units, preprocessing, "auto")
        items = [source[i] for i in range(len(units))]  # decoded once, before any timing
        DecodedUnits.decoded = {unit.video: item for unit, item in items}
        run.VideoUnits = DecodedUnits
        run.load = lambda _: EmbeddingModel(model, preprocessing, {"kind": "classifier", "source": "bench"})
        listing = root / "videos.csv"
        listing.write_text("".join(f"{path} 0\n" for path in paths))
        (root / "model").mkdir()
        out = root / "embeddings"
        bare_seconds(model, items[: args.batch], preprocessing, args.batch)  # warm-up
        embed_seconds(listing, out, args.features, args.batch)
        times: dict[str, list[float]] = {"bare encoder": [], "harness.embed": []}
        for _ in range(args.repeats):  # alternated, so that load on a shared machine hits both alike
            times["bare encoder"].append(bare_seconds(model, items, preprocessing, args.batch))
            times["harness.embed"].append(embed_seconds(listing, out, args.features, args.batch))
        rates = {name: len(items) / statistics.median(values) for name, values in times.items()}
        print(f"{args.model} {args.frames}x{args.size}, {len(items)} videos (clips decoded beforehand), batch "
              f"{args.batch}, features {args.features}, median of {args.repeats}")  # fmt: skip
        for name, rate in rates.items():
            print(f"  {name:14s} {rate:7.2f} videos/s")
        print(f"  harness.embed / bare encoder = {rates['harness.embed'] / rates['bare encoder']:.3f}")


if __name__ == "__main__":
    main()
