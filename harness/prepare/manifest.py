"""Manifests (``<split>/manifest<tag>.json``, the format :mod:`harness.data.shard_io` reads) and
the run records (``prepare<tag>.json``) that say how a part was made and whether it finished."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from harness.core.fileio import write_atomic
from harness.data.cutting import Settings
from harness.data.listing import label_ids
from harness.prepare.parts import Part

MANIFEST = "manifest.json"
REPORT = "report.json"


def class_histogram(clips: list[dict], label_names: list[str]) -> list[int]:
    """Clips per class (a multi-label clip counts for each of its classes)."""
    ids = [i for clip in clips for i in label_ids(clip["label"])]
    return np.bincount(np.asarray(ids, dtype=np.int64), minlength=len(label_names)).tolist()


def build_manifest(entries: list[dict], histogram: list[int], label_names: list[str], settings: Settings,
                   multi_label: bool, source_videos: int, identity: dict) -> dict:  # fmt: skip
    """A complete manifest. ``identity``: what names the run (``chunked``, ``input_digest``,
    ``run_digest``, and ``part`` for a part), kept so that reruns and the merge can check it."""
    return {
        "shards": entries,
        "total_clips": sum(entry["samples"] for entry in entries),
        "class_histogram": dict(zip(label_names, histogram)),
        "label_map": {str(i): name for i, name in enumerate(label_names)},
        "settings": asdict(settings),
        "multi_label": multi_label,
        "complete": True,
        "source_videos": source_videos,
        **identity,
    }


def write_json(path: Path, document: dict, indent: int | None = 1) -> None:
    """Write a JSON document durably (atomically: readers see the old file or the new one)."""
    write_atomic(path, lambda handle: handle.write(json.dumps(document, indent=indent).encode()))


def read_json(path: Path) -> dict | None:
    """A JSON document this command wrote, or None when it is not there or not readable."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


def mark_incomplete(path: Path, manifest: dict) -> None:
    """Rewrite a manifest as incomplete before its shards change (readers refuse it until done)."""
    if manifest.get("complete", True):
        write_json(path, {**manifest, "complete": False})


def write_record(output: Path, part: Part, record: dict) -> None:
    """``prepare<tag>.json``: how this part was made (settings, input), and, once it finished, its
    report. The merge refuses parts without a finished record."""
    write_json(output / part.record_name, {"part": {"index": part.index, "count": part.count}, **record})


def cut_settings(settings: dict, chunked: bool) -> dict:
    """The settings that decide how clips are cut (changing one means cutting again)."""
    current = {**settings, "chunked": chunked}
    return {key: current.get(key) for key in CUT_SETTINGS}


CUT_SETTINGS = ("segment_seconds", "min_seconds", "fps", "short_side", "cutter", "chunked", "frame_fps")


def differences(previous: dict, current: dict, keys: tuple[str, ...] | None = None) -> str:
    """``key old -> new`` for each key whose value differs (keys missing from ``previous`` are not
    compared: files of older versions lack some)."""
    keys = keys if keys is not None else tuple(current)
    changed = [key for key in keys if key in previous and previous[key] != current.get(key)]
    return ", ".join(f"{key} {previous[key]!r} -> {current.get(key)!r}" for key in changed)
