"""Packing many small shards: the bookkeeping before issue 25 against the journal, side by side.

In one run, N tiny staged clips (1 KB each: packing copies bytes, it never decodes) are packed
into N shards of one clip (``--shard-samples 1``), for N = 500 and 2000:

* ``old``: the packing loop of ``harness.prepare`` before issue 25 (git b2585ba): after every
  shard, the whole manifest rewritten and fsynced, with every class counted again, and the shard
  read back for its checksum. Cost ~ shards x (shards + clips).
* ``new``: :func:`harness.prepare.pack.pack` (one journal line per shard, the checksum taken while
  writing, the manifest written once at the end), with 1 and 2 worker processes.

Printed: seconds per shard for each, and the ratio of the per-shard time at 2000 to that at
500 (1.0: linear cost; ~4 for a cost that grows as shards squared).

    python bench/bench_packing.py [--shards 500 2000] [--classes 400]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.data.cutting import Settings
from harness.prepare.cut import Workers
from harness.prepare.manifest import build_manifest, class_histogram, write_json
from harness.prepare.pack import keys_digest, pack, plan_shards, sha256_of, write_shard
from harness.prepare.parts import Part


def staged_clips(folder: Path, count: int, classes: int) -> list[dict]:
    """``count`` staged clips of 1 KB (as :func:`harness.prepare.cut.cut_video` describes them)."""
    rng = np.random.default_rng(0)
    clips = []
    for index in range(count):
        path = folder / f"{index:08d}" / "0000.mp4"
        path.parent.mkdir(parents=True)
        path.write_bytes(rng.bytes(1024))
        clips.append({"key": f"{index:08d}_0000", "file": str(path), "source": f"videos/v{index}.mp4",
                      "label": int(rng.integers(classes)), "start": 0.0, "end": 2.0, "fps": 30.0, "frames": 60,
                      "size": [320, 240], "bytes": 1024})  # fmt: skip
    return clips


def old_pack(clips: list[dict], folder: Path, names: list[str], settings: Settings) -> None:
    """The bookkeeping of the packing loop before issue 25 (the tar writing is today's)."""
    folder.mkdir(parents=True)
    entries = []
    plans = plan_shards(sorted(clips, key=lambda c: c["key"]), settings.shard_size_mb * 1e6, settings.seed, 1)
    for number, shard in enumerate(plans):
        path = folder / f"shard-{number:06d}.tar"
        write_shard(path, shard, names)
        checksum = sha256_of(path)  # the old code read each shard back for its checksum
        entries.append({"name": path.name, "samples": len(shard), "sha256": checksum, "keys": keys_digest(shard)})
        manifest = build_manifest(entries, class_histogram(clips, names), names, settings, False, len(clips), {})
        write_json(folder / "manifest.json", {**manifest, "complete": False})
    write_json(folder / "manifest.json", build_manifest(entries, class_histogram(clips, names), names, settings,
                                                        False, len(clips), {}))  # fmt: skip


def new_pack(clips: list[dict], folder: Path, names: list[str], settings: Settings, workers: int) -> None:
    """Today's packing: journal, parallel shards, one manifest."""
    with Workers(workers) as pool:
        entries = pack(clips, folder, Part(), names, (settings.shard_size_mb * 1e6, settings.seed, 1), "bench", {},
                       pool, lambda missing: None, "bench")  # fmt: skip
    write_json(folder / "manifest.json", build_manifest(entries, class_histogram(clips, names), names, settings,
                                                        False, len(clips), {}))  # fmt: skip


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def measure(root: Path, name: str, count: int, names: list[str], settings: Settings) -> float:
    """Seconds to pack ``count`` fresh staged clips (``new`` deletes them as it packs) one way."""
    clips = staged_clips(root / f"staging-{name}", count, len(names))
    if name == "old":
        return timed(old_pack, clips, root / name, names, settings)
    return timed(new_pack, clips, root / name, names, settings, 2 if name == "new2" else 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2, help="each cell: the best of this many runs")
    args = parser.parse_args()
    names = [f"class{i}" for i in range(args.classes)]
    settings = Settings(shard_samples=1)
    best: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Every size and way in turn, repeated: the machine is shared and noisy, so that load
        # changes hit all cells alike; each cell keeps its best run.
        for repeat in range(args.repeats):
            for count in args.shards:
                for name in ("old", "new", "new2"):
                    root = Path(tmp) / f"{repeat}-{count}-{name}"
                    seconds = measure(root, name, count, names, settings)
                    best[name, count] = min(best.get((name, count), seconds), seconds)
                    shutil.rmtree(root)
    print(f"{args.classes} classes, 1 clip of 1 KB per shard; ms per shard, best of {args.repeats} runs")
    print(f"{'shards':>6} {'old':>8} {'new':>8} {'new 2 workers':>14} {'old/new':>8}")
    for count in args.shards:
        old, new, new2 = (1000 * best[name, count] / count for name in ("old", "new", "new2"))
        print(f"{count:6d} {old:8.2f} {new:8.2f} {new2:14.2f} {old / new:8.1f}")
    first, last = args.shards[0], args.shards[-1]
    growth = {name: (best[name, last] / last) / (best[name, first] / first) for name in ("old", "new", "new2")}
    print(f"per-shard time at {last} / at {first} shards: old {growth['old']:.2f}, new {growth['new']:.2f}, "
          f"new with 2 workers {growth['new2']:.2f} (1.0: linear cost)")  # fmt: skip


if __name__ == "__main__":
    main()
