"""``python -m harness.prepare merge --output DIR``: join the parts of a split-up preparation.

Each part (``--part I/N``, or a SLURM array task) leaves its record ``prepare-IofN.json`` and, per
split, ``<split>/manifest-IofN.json``. The merge checks that all N parts finished, from the same
input with the same settings, and writes one ``<split>/manifest.json`` per split (the shards of
every part, summed class histograms and totals) and ``report.json`` (every part's dropped videos).
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.core.errors import UserError
from harness.core.progress import progress
from harness.prepare.manifest import MANIFEST, REPORT, differences, read_json, write_json
from harness.prepare.parts import Part

RECORD = re.compile(r"prepare-(\d+)of(\d+)\.json")
SAME_IN_EVERY_PART = ("settings", "chunked", "input_digest", "label_map", "splits")


def merge(output: Path) -> dict:
    """Write the merged manifests and report of the parts in ``output``; returns the report.

    Raises:
        UserError: no parts, parts of different splittings, a part missing or unfinished, parts
            made with other settings or from another input, or no clip at all.
    """
    records = finished_records(output)
    first = records[0]
    report: dict = {"splits": {}, "skipped": [entry for record in records for entry in record["report"]["skipped"]]}
    for split in first["splits"]:
        manifest = merge_split(output / split, [Part(i, len(records)) for i in range(len(records))], first)
        write_json(output / split / MANIFEST, manifest)
        report["splits"][split] = {"clips": manifest["total_clips"], "shards": len(manifest["shards"])}
    write_json(output / REPORT, report)
    if not any(counts["clips"] for counts in report["splits"].values()):
        raise UserError(f"no clips were produced by the {len(records)} parts in {output}: every video was skipped "
                        f"(reasons in {output / REPORT})")  # fmt: skip
    return report


def finished_records(output: Path) -> list[dict]:
    """The records of parts 0..N-1, checked: all there, finished, made alike."""
    if not output.is_dir():
        raise UserError(f"--output {output} is not a folder")
    found = {(int(m.group(1)), int(m.group(2))) for path in output.iterdir() if (m := RECORD.fullmatch(path.name))}
    counts = sorted({count for _, count in found})
    if not counts:
        raise UserError(f"{output} holds no parts to merge (prepare-IofN.json): run harness.prepare with --part I/N "
                        "(or as a SLURM array) first")  # fmt: skip
    if len(counts) > 1:
        splittings = " and of ".join(map(str, counts))
        raise UserError(f"{output} holds parts of {splittings} parts: remove the files of the old splitting "
                        "(prepare-*ofNNNN.json, <split>/*-*ofNNNN.*) or use another --output")  # fmt: skip
    count = counts[0]
    records = []
    for part in (Part(index, count) for index in range(count)):
        record = read_json(output / part.record_name) if (part.index, count) in found else None
        if record is None:
            raise UserError(f"part {part} is missing ({output / part.record_name} not found): run it "
                            f"(harness.prepare ... --part {part}) before the merge")  # fmt: skip
        if not record.get("finished"):
            raise UserError(f"part {part} has not finished ({output / part.record_name}): run it again (it "
                            "resumes where it stopped) before the merge")  # fmt: skip
        check_alike(record, records[0] if records else record, part)
        records.append(record)
    return records


def check_alike(record: dict, first: dict, part: Part) -> None:
    """Refuse a part made differently from part 0 (naming the first difference)."""
    for key in SAME_IN_EVERY_PART:
        if record.get(key) == first.get(key):
            continue
        if key == "settings":
            what = f"other settings ({differences(first['settings'], record['settings'])})"
        elif key == "chunked":
            what = f"--chunked {'on' if record.get(key) else 'off'} (part 0: {'on' if first.get(key) else 'off'})"
        else:
            what = "another input (listing, class folders, --val-input, --val-fraction or --seed differ)"
        raise UserError(f"part {part} was made with {what} than part 0/{part.count}: run every part with the same "
                        "options (--overwrite to cut it again)")  # fmt: skip


def merge_split(folder: Path, parts: list[Part], first: dict) -> dict:
    """The merged manifest of one split from its part manifests (all complete)."""
    merged: dict = {"shards": [], "total_clips": 0, "class_histogram": {}, "source_videos": 0, "multi_label": False}
    for part in progress(parts, desc=f"{folder.name} manifests merged", unit="part"):
        path = folder / part.manifest_name
        manifest = read_json(path)
        if manifest is None or not manifest.get("complete"):
            state = "not found" if manifest is None else "incomplete"
            raise UserError(f"{path} is {state}: run part {part} again (it resumes) before the merge")
        if manifest.get("settings") != first["settings"] or manifest.get("input_digest") != first["input_digest"]:
            raise UserError(f"{path} was made by another run than {part.record_name}: run part {part} again")
        merged["shards"] += manifest["shards"]
        merged["total_clips"] += manifest["total_clips"]
        merged["source_videos"] += manifest.get("source_videos", 0)
        merged["multi_label"] |= bool(manifest.get("multi_label"))
        for name, count in manifest["class_histogram"].items():
            merged["class_histogram"][name] = merged["class_histogram"].get(name, 0) + count
    return {
        "shards": merged["shards"],
        "total_clips": merged["total_clips"],
        "class_histogram": {name: merged["class_histogram"].get(name, 0) for name in first["label_map"].values()},
        "label_map": first["label_map"],
        "settings": first["settings"],
        "multi_label": merged["multi_label"],
        "complete": True,
        "source_videos": merged["source_videos"],
        "chunked": first["chunked"],
        "input_digest": first["input_digest"],
        "parts": len(parts),
    }
