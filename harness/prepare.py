"""Chunk long videos into clips and pack them into WebDataset tar shards.

    python -m harness.prepare --input videos/ --output shards/ [--segment-seconds 10]
        [--fps 30 --short-side 320] [--val-fraction 0.1 | --val-input val.csv] [--shard-size 256]
        [--workers 8] [--chunked]

``--input`` is a folder of class folders (``root/<class>/*.mp4|webm|mkv|avi``; labels from the
sorted folder names) or a listing (CSV ``path label``). Videos are split by source into train and
validation (no clip of one video in both), cut into ``--segment-seconds`` segments (stream copy,
cut at key frames; or re-encoded to H.264 at ``--fps`` / ``--short-side`` when asked; with PyAV,
or the ``ffmpeg`` command with ``--cutter ffmpeg``), and packed
into ``<split>/shard-%06d.tar`` files of about ``--shard-size`` MB, each sample ``key.mp4`` +
``key.cls`` + ``key.json``, with ``<split>/manifest.json``. ``--chunked`` packs a listing of
already-chunked clips as they are. Rerunning resumes: finished videos and shards (verified by
checksum) are skipped. Unreadable videos are skipped and listed in ``report.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import multiprocessing
import shutil
import sys
import tarfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from harness.data.cutting import Settings, cut_segments, pick_cutter, probe
from harness.data.listing import format_label, label_ids, names_of_label, read_listing
from harness.errors import UserError, entry_point
from harness.fileio import write_atomic
from harness.progress import progress

log = logging.getLogger("harness.prepare")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov")
SHARD_PATTERN = "shard-{:06d}.tar"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Source:
    """One input video (or, with ``--chunked``, one ready clip)."""

    index: int
    path: str
    label: int | tuple[int, ...]  #: several class ids for a multi-label video


def collect(input_path: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """``(path, label)`` pairs and label names from a folder of class folders or a listing."""
    if input_path.is_dir():
        classes = sorted(p.name for p in input_path.iterdir() if p.is_dir())
        if not classes:
            raise UserError(f"{input_path} has no class folders (expected <root>/<class>/*.mp4)")
        pairs = [
            (str(video), label)
            for label, name in enumerate(classes)
            for video in sorted((input_path / name).iterdir())
            if video.suffix.lower() in VIDEO_SUFFIXES
        ]
        return pairs, classes
    records = read_listing(input_path)
    names = [str(i) for i in range(1 + max(max(label_ids(r.label)) for r in records))]
    return [(r.path, r.label) for r in records], names


def split_sources(pairs: list[tuple[str, int]], val_fraction: float, seed: int) -> dict[str, list[Source]]:
    """Train/validation split by source video, stratified per class, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    splits: dict[str, list[Source]] = {"train": [], "val": []}
    by_label: dict[int, list[int]] = {}
    for index, (_, label) in enumerate(pairs):
        by_label.setdefault(label_ids(label)[0], []).append(index)  # multi-label: stratified by the first label
    val = set()
    for indices in by_label.values():
        count = int(round(val_fraction * len(indices)))
        val.update(rng.permutation(indices)[:count].tolist())
    for index, (path, label) in enumerate(pairs):
        splits["val" if index in val else "train"].append(Source(index, path, label))
    return splits


def cut_video(source: Source, settings: Settings, staging: Path, chunked: bool) -> list[dict]:
    """Cut one video into staged clips ``staging/<index>/<segment>.mp4``; returns their metadata.

    Raises on an unreadable video (the caller records it). The done marker makes it resumable.
    """
    folder = staging / f"{source.index:08d}"
    done = folder / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    duration, fps, frames, size = probe(source.path)
    if duration < settings.min_seconds and not chunked:
        raise ValueError(f"shorter than --min-seconds ({duration:.2f} s < {settings.min_seconds} s)")
    if chunked or (not settings.reencode and duration <= settings.segment_seconds):
        segments = [(Path(source.path).read_bytes(), 0.0, duration, frames)]  # kept whole
    else:
        segments = cut_segments(source.path, settings)
    clips = []
    for number, (data, start, end, count) in enumerate(segments):
        if end - start < settings.min_seconds and len(segments) > 1 and not chunked:
            continue  # a short remainder at the end
        name = f"{number:04d}.mp4"
        (folder / name).write_bytes(data)
        clips.append({
            "key": f"{source.index:08d}_{number:04d}", "file": str(folder / name), "source": source.path,
            "label": source.label, "start": round(start, 3), "end": round(end, 3),
            "fps": settings.fps or fps, "frames": count, "size": list(size),
        })  # fmt: skip
    done.write_text(json.dumps(clips))
    return clips


def _cut_job(args: tuple[Source, Settings, Path, bool]) -> tuple[Source, list[dict] | None, str | None]:
    source, settings, staging, chunked = args
    try:
        return source, cut_video(source, settings, staging, chunked), None
    except Exception as error:  # a corrupt input is reported, never fatal
        return source, None, f"{type(error).__name__}: {error}"


# ----------------------------------------------------------------------------- packing
def _tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: identical reruns
    return info, io.BytesIO(data)


def _write_shard(path: Path, clips: list[dict], label_names: list[str]) -> str:
    def write(handle) -> None:
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for clip in clips:
                meta = {k: clip[k] for k in ("source", "start", "end", "fps", "frames", "size", "label")}
                meta["label_name"] = names_of_label(clip["label"], label_names)
                for suffix, data in (
                    ("mp4", Path(clip["file"]).read_bytes()),
                    ("cls", format_label(clip["label"]).encode()),  # "3" or "3,17,42"
                    ("json", json.dumps(meta, sort_keys=True).encode()),
                ):
                    tar.addfile(*_tar_member(f"{clip['key']}.{suffix}", data))

    write_atomic(path, write)
    return _sha256(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_shards(clips: list[dict], shard_bytes: float, seed: int, max_samples: int | None = None) -> list[list[dict]]:
    """Clips in a seeded random order (shards mix videos and classes), cut into shards of about
    ``shard_bytes`` (and at most ``max_samples`` clips)."""
    order = np.random.default_rng(seed).permutation(len(clips))
    shards: list[list[dict]] = [[]]
    size = 0
    for index in order:
        clip = clips[int(index)]
        clip_size = Path(clip["file"]).stat().st_size
        full = max_samples is not None and len(shards[-1]) >= max_samples
        if shards[-1] and (size + clip_size > shard_bytes or full):
            shards.append([])
            size = 0
        shards[-1].append(clip)
        size += clip_size
    return [shard for shard in shards if shard]


def pack(clips: list[dict], folder: Path, label_names: list[str], settings: Settings, extra: dict) -> dict:
    """Write the shards of one split and its manifest; existing shards that match are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    for stray in folder.glob(".tmp-*"):  # half-written shards of a killed run
        stray.unlink()
    previous = {}
    if (folder / MANIFEST).exists():
        from harness.data.shard_io import read_manifest

        previous = {s["name"]: s for s in read_manifest(folder / MANIFEST)["shards"]}
    entries = []
    plans = plan_shards(
        sorted(clips, key=lambda c: c["key"]), settings.shard_size_mb * 1e6, settings.seed, settings.shard_samples
    )
    for number, shard_clips in enumerate(progress(plans, desc=f"{folder.name} shards", unit="shard")):
        name = SHARD_PATTERN.format(number)
        keys = hashlib.sha1("\n".join(c["key"] for c in shard_clips).encode()).hexdigest()
        old = previous.get(name)
        if old and old.get("keys") == keys and (folder / name).exists() and _sha256(folder / name) == old["sha256"]:
            entries.append(old)  # finished in an earlier run, verified
            continue
        checksum = _write_shard(folder / name, shard_clips, label_names)
        entries.append({"name": name, "samples": len(shard_clips), "sha256": checksum, "keys": keys})
        _write_manifest(folder, entries, clips, label_names, settings, extra, complete=False)
    return _write_manifest(folder, entries, clips, label_names, settings, extra, complete=True)


def _write_manifest(folder, entries, clips, label_names, settings, extra, complete: bool) -> dict:
    ids = [i for c in clips for i in label_ids(c["label"])]
    histogram = np.bincount(ids, minlength=len(label_names)).tolist()
    manifest = {
        "shards": entries,
        "total_clips": sum(e["samples"] for e in entries),
        "class_histogram": dict(zip(label_names, histogram)),
        "label_map": {str(i): name for i, name in enumerate(label_names)},
        "settings": asdict(settings),
        "multi_label": any(len(label_ids(c["label"])) > 1 for c in clips),
        "complete": complete,
        **extra,
    }
    write_atomic(folder / MANIFEST, lambda h: h.write(json.dumps(manifest, indent=1).encode()))
    return manifest


# ----------------------------------------------------------------------------- driver
def prepare(
    input_path: Path,
    output: Path,
    settings: Settings,
    val_fraction: float = 0.1,
    val_input: Path | None = None,
    workers: int = 4,
    chunked: bool = False,
    overwrite: bool = False,
) -> dict:
    """Cut and pack; returns the report (clips per split, skipped videos with reasons).

    Raises:
        UserError: ``output`` holds clips cut with other settings (``overwrite`` redoes them), or
            no clip at all came out.
    """
    settings = replace(settings, cutter=pick_cutter(settings))  # the manifest names the tool used
    check_previous_settings(output, settings, chunked, overwrite)
    pairs, label_names = collect(input_path)
    if val_input is not None:
        val_pairs, _ = collect(val_input)
        splits = {
            "train": [Source(i, p, label) for i, (p, label) in enumerate(pairs)],
            "val": [Source(len(pairs) + i, p, label) for i, (p, label) in enumerate(val_pairs)],
        }
    else:
        splits = split_sources(pairs, val_fraction, settings.seed)
    report: dict = {"splits": {}, "skipped": []}
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    for split, sources in splits.items():
        if not sources:
            continue
        staging = output / ".staging" / split
        jobs = [(source, settings, staging, chunked) for source in sources]
        clips: list[dict] = []
        with context.Pool(max(1, workers)) as pool:
            results = pool.imap_unordered(_cut_job, jobs) if workers > 1 else map(_cut_job, jobs)
            for source, source_clips, error in progress(results, total=len(jobs), desc=f"{split} videos", unit="video"):
                if error is not None:
                    log.warning("skipping %s: %s", source.path, error)
                    report["skipped"].append({"path": source.path, "split": split, "reason": error})
                elif not source_clips:
                    reason = f"no clip of at least --min-seconds={settings.min_seconds} s"
                    report["skipped"].append({"path": source.path, "split": split, "reason": reason})
                else:
                    clips.extend(source_clips)
        extra = {"source_videos": len(sources) - sum(1 for s in report["skipped"] if s["split"] == split)}
        manifest = pack(clips, output / split, label_names, settings, extra)
        report["splits"][split] = {"clips": manifest["total_clips"], "shards": len(manifest["shards"])}
    write_atomic(output / "report.json", lambda h: h.write(json.dumps(report, indent=1).encode()))
    if not any(counts["clips"] for counts in report["splits"].values()):
        raise UserError(f"no clips were produced from {input_path}: every video was skipped (reasons in "
                        f"{output / 'report.json'})")  # fmt: skip
    return report


CUT_SETTINGS = ("segment_seconds", "min_seconds", "fps", "short_side", "cutter", "chunked")
SETTINGS_FILE = "cut_settings.json"  # in the staging folder: how its clips were cut


def check_previous_settings(output: Path, settings: Settings, chunked: bool, overwrite: bool) -> None:
    """Refuse to mix clips cut with other settings into ``output`` (naming what differs); with
    ``overwrite``, drop the old clips and shards instead. Records the settings for the next run."""
    staging = output / ".staging"
    current = {**asdict(settings), "chunked": chunked}
    current = {key: current[key] for key in CUT_SETTINGS}
    previous: dict = {}
    if (staging / SETTINGS_FILE).is_file():
        previous = json.loads((staging / SETTINGS_FILE).read_text(encoding="utf-8"))
    else:  # written before the settings file existed: the manifests' settings (no "chunked")
        for manifest in sorted(output.glob(f"*/{MANIFEST}"))[:1]:
            from harness.data.shard_io import read_manifest

            previous = read_manifest(manifest).get("settings", {})
    changed = [key for key in CUT_SETTINGS if key in previous and previous[key] != current[key]]
    if changed and not overwrite:
        differences = ", ".join(f"{key} {previous[key]!r} -> {current[key]!r}" for key in changed)
        raise UserError(f"{output} holds clips cut with other settings ({differences}): use another --output, "
                        "or --overwrite to cut everything again")  # fmt: skip
    if changed:
        log.warning("--overwrite: removing the clips and shards cut with the old settings in %s", output)
        shutil.rmtree(staging, ignore_errors=True)
        for split in ("train", "val"):
            shutil.rmtree(output / split, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    write_atomic(staging / SETTINGS_FILE, lambda h: h.write(json.dumps(current).encode()))


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="harness-prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--input", required=True, type=Path, help="folder of class folders, or a listing")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of source videos for validation")
    parser.add_argument("--val-input", type=Path, default=None, help="validation listing/folder (no random split)")
    parser.add_argument("--segment-seconds", type=float, default=10.0)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="skip shorter videos (and remainders)")
    parser.add_argument("--fps", type=float, default=None, help="re-encode to this frame rate")
    parser.add_argument("--short-side", type=int, default=None, help="re-encode to this short side (px)")
    parser.add_argument("--shard-size", type=float, default=256.0, help="MB per shard")
    parser.add_argument("--shard-samples", type=int, default=None, help="at most this many clips per shard")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunked", action="store_true", help="the listing holds ready clips: pack as they are")
    parser.add_argument("--overwrite", action="store_true",
                        help="the output holds clips cut with other settings: remove them and cut again")  # fmt: skip
    parser.add_argument("--cutter", choices=("auto", "pyav", "ffmpeg"), default="auto",
                        help="auto: PyAV (as fast as ffmpeg re-encoding, faster copying)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings(
        segment_seconds=args.segment_seconds,
        min_seconds=args.min_seconds,
        fps=args.fps,
        short_side=args.short_side,
        shard_size_mb=args.shard_size,
        seed=args.seed,
        shard_samples=args.shard_samples,
        cutter=args.cutter,
    )
    report = prepare(args.input, args.output, settings, args.val_fraction, args.val_input, args.workers, args.chunked,
                     args.overwrite)  # fmt: skip
    for split, counts in report["splits"].items():
        print(f"{split}: {counts['clips']} clips in {counts['shards']} shards -> {args.output / split}")
    skipped = report["skipped"]
    if skipped:
        print(f"WARNING: {len(skipped)} videos were dropped (all listed in {args.output / 'report.json'}):",
              file=sys.stderr)  # fmt: skip
        for entry in skipped[:20]:
            print(f"  {entry['path']}: {entry['reason']}", file=sys.stderr)
        if len(skipped) > 20:
            print(f"  ... and {len(skipped) - 20} more", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
