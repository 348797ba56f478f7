"""Memory of ``harness.embed`` against the number of units: features go to disk shard by shard
(each shard spooled to disk row by row), so the peak resident memory must not grow with the units.

Each count runs the whole command (``harness.embed.cli.main``: jobs, batches, shard files, parts,
the merged index) in its own process, with decoding stubbed (:class:`RandomClips`: random uint8
clips in place of videos) and a stand-in encoder whose tokens are the clips' pixels (rows of
24 KB of ``pooled`` + ``tokens`` for no compute), so what is measured is what the command keeps.
Reported per count: the peak resident memory (Linux's VmHWM, reset after the imports) above the
resident memory at that moment, next to the bytes of features written.

    python bench/bench_embed_memory.py [--units 2000 8000 32000] [--rows-per-shard 1024]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIDE, FRAMES = 32, 2  #: the random clips: 3 x 2 x 32 x 32 pixels, one clip per unit


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child(units: int, folder: Path, rows_per_shard: int, loader_units: int = 0) -> None:
    """Embed ``units`` random units into ``folder``/out; print the growth of the peak RSS as JSON."""
    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch
    from torch import nn

    from harness.data.files import ClipItem
    from harness.embed import cli, run
    from harness.embed.source import EmbeddingModel
    from harness.export.model_io import Preprocessing

    class PixelEncoder(nn.Module):
        """Tokens = pixels: ``[B, C, T, H, W]`` -> ``[B, H * W, C * T]`` on a ``[1, H, W]`` grid."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 3, 4, 1, 2).flatten(3).flatten(1, 2)

        def token_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
            return 1, height, width

    class RandomClips(torch.utils.data.Dataset):
        """Stands in for :class:`harness.data.units.VideoUnits`: random clips, no decoding."""

        def __init__(self, units, preprocessing, decoder, frame_fps=None) -> None:
            self.units = units

        def __len__(self) -> int:
            return len(self.units)

        def __getitem__(self, index: int):
            pixels = np.random.default_rng(index).integers(0, 255, (3, FRAMES, SIDE, SIDE), dtype=np.uint8)
            unit = self.units[index]
            return unit, ClipItem([torch.from_numpy(pixels)], 0, torch.arange(FRAMES)[None], unit.video)

    preprocessing = Preprocessing(FRAMES, SIDE, [], frame_step=1)
    run.load = lambda args: EmbeddingModel(PixelEncoder(), preprocessing, {"kind": "encoder", "source": "stand-in"})
    run.VideoUnits = RandomClips
    if loader_units:  # smaller loaders than the command's, so that a run goes through several
        run.LOADER_UNITS = loader_units
    listing = folder / "units.csv"
    listing.write_text("".join(f"/stand-in/video_{i:07d}.mp4 0\n" for i in range(units)))
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from the current RSS
    baseline = status_kib("VmRSS")
    started = time.perf_counter()
    code = cli.main([str(folder / "model"), str(listing), "--output", str(folder / "out"), "--features",
                     "pooled,tokens", "--workers", "0", "--batch-size", "32", "--rows-per-shard", str(rows_per_shard),
                     "--no-progress"])  # fmt: skip
    seconds = time.perf_counter() - started
    written = sum(p.stat().st_size for p in (folder / "out").glob("shard-*"))
    print(json.dumps({"code": code, "units": units, "grown_bytes": (status_kib("VmHWM") - baseline) * 1024,
                      "feature_bytes": written, "seconds": round(seconds, 2)}))  # fmt: skip


def measure(units: int, folder: Path, rows_per_shard: int = 1024, timeout: float = 600, loader_units: int = 0) -> dict:
    """Run :func:`child` for ``units`` units in a new process; its JSON record."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model").mkdir(exist_ok=True)  # (the stand-in model is not read from it)
    command = [sys.executable, __file__, "--child", str(units), str(folder), str(rows_per_shard), str(loader_units)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, nargs="+", default=[2000, 8000, 32000])
    parser.add_argument("--rows-per-shard", type=int, default=1024)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), Path(args.child[1]), int(args.child[2]), int(args.child[3]))
        return
    print(f"{'units':>8} {'features written':>17} {'peak RSS growth':>16} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        for units in args.units:
            record = measure(units, Path(scratch) / str(units), args.rows_per_shard)
            print(f"{units:>8} {record['feature_bytes'] / 2**20:>13.1f} MiB {record['grown_bytes'] / 2**20:>12.1f} MiB "
                  f"{record['seconds']:>8.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
