"""Listings at cluster scale: parse time, bytes per line per rank, worker memory over an epoch.

Fabricated size, real code: a generated listing of 1M / 10M Kinetics-like lines
(``train/<class>/<youtube id>_<start>_<end>.mp4 <label>``, ~55-byte paths), read by
``harness.data.listing.read_listing`` and by what V-JEPA 2 does (``pandas.read_csv`` + numpy
arrays), alternately, each in a fresh process; a rank's share of a 1-, 8- or 64-rank run (the
sampler the trainer builds for rank 0) iterated for a whole epoch through a real DataLoader with
2 persistent workers, decoding stubbed (a 1-pixel clip: the decoder is not what is measured).
Memory is read from ``/proc/<pid>/smaps_rollup`` (Private_Dirty) after ``malloc_trim``. At 1M lines the same
epoch also runs over the listing held as one Python object per line (what the harness did
before), side by side.

    python bench/bench_scale.py [--sizes 1000000 10000000] [--repeats 3]

Aims (issue 25): parse <= 1.2x pandas + numpy, <= 100 B per line per rank, worker private
memory flat over a whole epoch.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CLASSES = [f"class_{i:03d}_{'x' * (i % 12)}" for i in range(400)]  # 10-22 characters, as Kinetics' names


def write_listing(path: Path, lines: int, segments: bool = False) -> None:
    """``lines`` generated lines, written a million at a time; with ``segments``, each line also
    gives a segment ``start end`` in seconds (under a ``path label start end`` header)."""
    rng = np.random.default_rng(0)
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", np.uint8)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("path label start end\n" if segments else "")
        for first in range(0, lines, 1_000_000):
            count = min(1_000_000, lines - first)
            ids = alphabet[rng.integers(len(alphabet), size=(count, 11))].view("S11").ravel()
            labels = rng.integers(len(CLASSES), size=count)
            starts = rng.integers(0, 300, size=count)
            tails = [f" {start / 7:.3f} {start / 7 + 2.5:.3f}" if segments else "" for start in starts.tolist()]
            handle.write("".join(f"train/{CLASSES[label]}/{video.decode()}_{start:06d}_{start + 10:06d}.mp4 {label}"
                                 f"{tail}\n"
                                 for video, label, start, tail in zip(ids, labels, starts, tails)))  # fmt: skip


def settle() -> None:
    """Collect garbage and hand freed heap pages back (glibc keeps freed blocks below its mmap
    threshold in the heap): what stays is what is held, for every variant alike."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def memory(pid: str | int = "self") -> dict[str, int]:
    """Private_Dirty and Pss of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Private_Dirty", "Pss"):
            values[key] = int(rest.split()[0]) * 1024
    return values


# ------------------------------------------------------------------------ child processes
def child_parse(listing: str, how: str) -> dict:
    """Parse once in this fresh process: seconds and bytes held afterwards (libraries imported
    before the baseline is taken)."""
    import pandas as pd

    from harness.data.listing import read_listing
    from harness.data.listing_parse import parse_lines

    settle()
    before = memory()["Private_Dirty"]
    start = time.perf_counter()
    if how == "ours":
        held = read_listing(listing)
    elif how == "pandas":  # V-JEPA 2's VideoDataset: read_csv, then the columns as arrays
        frame = pd.read_csv(listing, header=None, delimiter=" ")
        held = (frame[0].to_numpy(), frame[1].to_numpy())
        del frame
    else:  # one Python object per line, as listings were held before
        held = [(path, ids) for _, path, ids, _ in parse_lines(Path(listing).read_text(), listing)]
    seconds = time.perf_counter() - start
    settle()
    return {"seconds": seconds, "bytes": memory()["Private_Dirty"] - before, "lines": len(held[0]) if how ==
            "pandas" else len(held)}  # fmt: skip


class RecordList:
    """A listing held as one ``VideoRecord`` per line (what the harness did before), read the way
    the dataset reads a :class:`~harness.data.listing.Listing`."""

    segment_unit = "seconds"

    def __init__(self, records: list) -> None:
        self.records = records

    def path(self, index: int) -> str:
        return self.records[index].path

    def label(self, index: int):
        return self.records[index].label

    def segment(self, index: int):
        return self.records[index].segment


def child_epoch(listing: str, world_size: int, objects: bool) -> dict:
    """One epoch of rank 0's share with 2 workers: workers' private memory after the first
    batch and at the end, and the rank process's memory for the listing."""
    import torch

    import harness.data.files as files
    from harness.data import ClipSpec, VideoClipDataset
    from harness.data.listing import read_listing
    from harness.data.source import LoaderSettings

    files.load_clips = lambda path, spec, num_clips, transform, **_: (
        [torch.zeros(3, 1, 1, 1, dtype=torch.uint8)] * num_clips,
        torch.zeros(num_clips, 1, dtype=torch.long),
    )
    VideoClipDataset([([], ClipSpec(1, frame_step=1))], lambda clip: clip, decoder="pyav")  # imports done
    settle()
    before = memory()["Private_Dirty"]
    columns = read_listing(listing)
    dataset = VideoClipDataset([(columns, ClipSpec(1, frame_step=1))], lambda clip: clip, decoder="pyav")
    if objects:
        dataset.listings = [RecordList(list(columns))]  # a VideoRecord per line, as before
        del columns
    settle()
    rank_bytes = memory()["Private_Dirty"] - before
    loader = dataset.make_loader(LoaderSettings(64, rank=0, world_size=world_size, num_workers=2), train=True)
    loader.set_epoch(0)
    iterator = iter(loader)
    next(iterator)
    workers = [process.pid for process in iterator._workers]
    first = [memory(pid)["Private_Dirty"] for pid in workers]
    start, items, tenth = time.perf_counter(), 64, None
    for number, batch in enumerate(iterator, start=2):
        items += len(batch.labels)
        if number == max(2, len(loader) // 10):  # past the workers' warm-up (imports, first allocations)
            tenth = [memory(pid)["Private_Dirty"] for pid in workers]
    end = [memory(pid)["Private_Dirty"] for pid in workers]
    return {"rank_bytes": rank_bytes, "lines": len(dataset), "items": items, "seconds": time.perf_counter() - start,
            "worker_first": first, "worker_tenth": tenth or first, "worker_end": end}  # fmt: skip


def child_manifest(shards: int, folder: str) -> dict:
    """A manifest of ``shards`` entries: seconds to read it into a rank's shard list (rank 0 of
    1024, 2 workers) and the bytes held."""
    import json as json_module

    from harness.data import ClipSpec
    from harness.data.shards import ShardDataset, list_shards
    from harness.data.transforms import TrainTransform

    path = Path(folder) / "manifest.json"
    entries = [{"name": f"shard-{i:06d}.tar", "samples": 100, "sha256": f"{i:064x}"} for i in range(shards)]
    path.write_text(json_module.dumps({"shards": entries, "label_map": {"0": "a"}, "complete": True}))
    del entries
    settle()
    before = memory()["Private_Dirty"]
    start = time.perf_counter()
    spec = ClipSpec(1, frame_step=1)  # how the clips would be read: no clip is read here
    dataset = ShardDataset([list_shards(str(path))], spec, TrainTransform(32), manifests=[str(path)])
    dataset.configure(0, 1024, 2)
    seconds = time.perf_counter() - start
    settle()
    return {"seconds": seconds, "bytes": memory()["Private_Dirty"] - before, "shards": len(dataset.sources[0])}


def run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------- driver
def measure(lines: int, world_size: int, repeats: int, folder: Path) -> None:
    listing = folder / f"listing_{lines}.txt"
    started = time.perf_counter()
    write_listing(listing, lines)
    mb = listing.stat().st_size / 1e6
    print(f"\n{lines:,} lines ({mb:.0f} MB, {mb * 1e6 / lines:.0f} B per line; written in "
          f"{time.perf_counter() - started:.0f} s)")  # fmt: skip
    ours, pandas = [], []
    for _ in range(repeats):  # alternating, each in a fresh process
        ours.append(run_child("parse", str(listing), "ours"))
        pandas.append(run_child("parse", str(listing), "pandas"))
    ours_s = statistics.median(r["seconds"] for r in ours)
    pandas_s = statistics.median(r["seconds"] for r in pandas)
    held = statistics.median(r["bytes"] for r in ours) / lines
    pandas_held = statistics.median(r["bytes"] for r in pandas) / lines
    print(f"  parse: harness {ours_s:.2f} s, pandas + numpy {pandas_s:.2f} s: ratio {ours_s / pandas_s:.2f} "
          f"(aim <= 1.2)")  # fmt: skip
    print(f"  held after parsing: harness {held:.0f} B per line (aim <= 100), pandas {pandas_held:.0f} B per line")
    segmented = folder / f"segments_{lines}.txt"
    write_listing(segmented, lines, segments=True)
    plain_again, table = [], []
    for _ in range(repeats):
        plain_again.append(run_child("parse", str(listing), "ours")["seconds"])
        table.append(run_child("parse", str(segmented), "ours"))
    table_s = statistics.median(r["seconds"] for r in table)
    extra = (statistics.median(r["bytes"] for r in table) - segmented.stat().st_size) / lines
    plain_extra = (statistics.median(r["bytes"] for r in ours) - listing.stat().st_size) / lines
    ratio = table_s / statistics.median(plain_again)
    print(f"  the same lines with a segment (path label start end): parse {ratio:.2f}x "
          f"the plain listing's time; held beyond the file's bytes {extra:.0f} B per line (plain: "
          f"{plain_extra:.0f})")  # fmt: skip
    segmented.unlink()
    rows = [("columns", run_child("epoch", str(listing), str(world_size), "0"))]
    if lines <= 1_000_000:
        objects = run_child("parse", str(listing), "objects")
        print(f"  one object per line (before): parse {objects['seconds']:.2f} s (ratio to pandas "
              f"{objects['seconds'] / pandas_s:.1f}), {objects['bytes'] / lines:.0f} B per line")  # fmt: skip
        rows.append(("objects", run_child("epoch", str(listing), str(world_size), "1")))
    for name, row in rows:
        mib = lambda values: ", ".join(f"{v / 2**20:.1f}" for v in values)  # noqa: E731
        print(f"  epoch of rank 0 of {world_size} ({row['items']:,} items, {row['seconds']:.0f} s), {name}: rank "
              f"holds {row['rank_bytes'] / lines:.0f} B per line; each worker's Private_Dirty after the first batch "
              f"{mib(row['worker_first'])} MiB, after 10% of the epoch {mib(row['worker_tenth'])}, at its end "
              f"{mib(row['worker_end'])}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 64], help="one per size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--manifest-shards", type=int, default=100_000)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, listing, *rest = args.child
        if kind == "manifest":
            result = child_manifest(int(listing), rest[0])
        elif kind == "parse":
            result = child_parse(listing, rest[0])
        else:
            result = child_epoch(listing, int(rest[0]), rest[1] == "1")
        print(json.dumps(result))
        return
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")  # fmt: skip
    print(f"bench_scale on {cpu}")
    with tempfile.TemporaryDirectory() as folder:
        for lines, world_size in zip(args.sizes, args.world_sizes):
            measure(lines, world_size, args.repeats, Path(folder))
        manifest = run_child("manifest", str(args.manifest_shards), folder)
        per_shard = manifest["bytes"] / manifest["shards"]
        print(f"\nmanifest of {manifest['shards']:,} shards, rank 0 of 1024 with 2 workers: read and placed in "
              f"{manifest['seconds']:.1f} s, {per_shard:.0f} B held per shard")  # fmt: skip


if __name__ == "__main__":
    main()
