"""``prepare``: cut the sources of one part (or of the whole input) and pack them into shards.

Per split: cut every source into staged clips (in parallel; a done marker per source makes it
resumable), plan the shards from the whole split's clips (a seeded shuffle), pack them in
parallel with a journal, write the manifest once, then remove the journal and the staging copy.
A staged clip is deleted as soon as its shard is written and journaled, so the disk holds at
most about one copy of the data (staged clips not yet packed + shards), not two. A rerun of a
finished split verifies its shards and is done; otherwise it resumes from the journal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from harness.core.errors import UserError
from harness.core.progress import progress
from harness.data.cutting import Settings, pick_cutter
from harness.data.listing import label_ids
from harness.prepare.cut import Workers, cut_job, source_index
from harness.prepare.lock import output_lock
from harness.prepare.manifest import (
    MANIFEST,
    REPORT,
    build_manifest,
    class_histogram,
    cut_settings,
    differences,
    mark_incomplete,
    read_json,
    write_json,
    write_record,
)
from harness.prepare.pack import pack, verify
from harness.prepare.parts import Part, tag_of
from harness.prepare.sources import Source, build_splits, input_digest, sources_of_part

log = logging.getLogger("harness.prepare")
SPLITS = ("train", "val")
OUR_FILES = (".staging", "prepare", "report", "shard", "manifest", "journal", ".tmp-")  #: what --overwrite may remove


@dataclass
class Run:
    """What every split of one run shares."""

    output: Path
    part: Part
    settings: Settings
    chunked: bool
    label_names: list[str]
    input_digest: str  #: the whole input as split (equal in every part)
    workers: Workers

    @property
    def digest(self) -> str:
        """Names this run: the input, the settings and the part (a finished split of the same run
        is not prepared again)."""
        settings = asdict(self.settings)
        if settings["frame_fps"] is None:  # (a setting added later: runs without frame folders keep their digest)
            del settings["frame_fps"]
        text = json.dumps([self.input_digest, settings, self.chunked, self.part.index, self.part.count])
        return hashlib.sha1(text.encode()).hexdigest()

    def identity(self) -> dict:
        """What the manifest records of the run, for reruns and the merge."""
        part = {} if self.part.whole else {"part": {"index": self.part.index, "count": self.part.count}}
        return {"chunked": self.chunked, "input_digest": self.input_digest, "run_digest": self.digest, **part}


def prepare(
    input_path: Path,
    output: Path,
    settings: Settings,
    val_fraction: float = 0.1,
    val_input: Path | None = None,
    workers: int = 4,
    chunked: bool = False,
    overwrite: bool = False,
    part: Part | None = None,
) -> dict:
    """Cut and pack (part ``part`` of the input: by default the whole); returns the report
    (clips per split, skipped videos with reasons).

    Raises:
        UserError: a setting is out of its range, another prepare of this part is writing into
            ``output``, ``output`` holds clips cut with other settings (``overwrite`` redoes them),
            or no clip at all came out of the whole input.
    """
    part = part or Part()
    check_settings(settings, val_fraction, chunked)
    settings = replace(settings, cutter=pick_cutter(settings))  # the manifest names the tool used
    splits, label_names = build_splits(input_path, val_input, val_fraction, settings.seed)
    with output_lock(output, part):  # (only now is anything of ``output`` read or written)
        check_previous_settings(output, settings, chunked, overwrite, part)
        return prepare_locked(input_path, output, settings, (splits, label_names), workers, chunked, part)


def prepare_locked(input_path: Path, output: Path, settings: Settings, split: tuple[dict, list[str]], workers: int,
                   chunked: bool, part: Part) -> dict:  # fmt: skip
    """:func:`prepare` of the sources ``split`` (by split, and the label names), ``output`` held."""
    splits, label_names = split
    previous = read_json(output / part.record_name) or {}
    record = {
        "settings": asdict(settings),
        "chunked": chunked,
        "input_digest": input_digest(splits, label_names),
        "label_map": {str(i): name for i, name in enumerate(label_names)},
        "splits": [split for split in SPLITS if splits[split]],  # non-empty in the whole input
    }
    output.mkdir(parents=True, exist_ok=True)
    write_record(output, part, {**record, "finished": False})
    report: dict = {"splits": {}, "skipped": []}
    with Workers(workers) as pool:
        run = Run(output, part, settings, chunked, label_names, record["input_digest"], pool)
        for split in record["splits"]:
            done_before = [s for s in previous.get("report", {}).get("skipped", []) if s["split"] == split]
            sources = sources_of_part(splits[split], part, settings.seed)
            report["splits"][split], skipped = prepare_split(run, split, sources, done_before)
            report["skipped"] += skipped
    shutil.rmtree(output / part.staging_name, ignore_errors=True)
    write_record(output, part, {**record, "finished": True, "report": report})
    clips = sum(counts["clips"] for counts in report["splits"].values())
    if part.whole:
        write_json(output / REPORT, report)
        if not clips:
            raise UserError(f"no clips were produced from {input_path}: every video was skipped (reasons in "
                            f"{output / REPORT})")  # fmt: skip
    elif not clips:
        log.warning("part %s produced no clips: every one of its videos was skipped", part)
    return report


def check_settings(settings: Settings, val_fraction: float, chunked: bool = False) -> None:
    """Refuse settings that cannot work, naming the option (before anything is read or written;
    ``chunked``: clips are packed as they are, so segments and their minimum do not matter)."""
    positive = {
        "--segment-seconds": settings.segment_seconds,
        "--shard-size": settings.shard_size_mb,
        "--fps": settings.fps,
        "--short-side": settings.short_side,
        "--shard-samples": settings.shard_samples,
        "--frame-fps": settings.frame_fps,
    }
    for option, value in positive.items():
        if value is not None and not (0 < value < math.inf):
            raise UserError(f"{option} must be > 0, got {value}")
    if not 0 <= settings.min_seconds < math.inf:
        raise UserError(f"--min-seconds must be >= 0, got {settings.min_seconds}")
    if settings.min_seconds > settings.segment_seconds and not chunked:
        raise UserError(f"--segment-seconds {settings.segment_seconds:g} is shorter than --min-seconds "
                        f"{settings.min_seconds:g}: every clip would be dropped; lower --min-seconds to at most "
                        f"{settings.segment_seconds:g} or cut longer segments")  # fmt: skip
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")


def prepare_split(run: Run, split: str, sources: list[Source], skipped_before: list[dict]) -> tuple[dict, list]:
    """Cut and pack one split of this run's part; returns its counts and the skipped videos."""
    folder, part = run.output / split, run.part
    path = folder / part.manifest_name
    manifest = read_json(path)
    previous = trusted_entries(manifest, run)
    verified: set[str] = set()
    if manifest and manifest.get("complete") and manifest.get("run_digest") == run.digest:
        verified = verify(folder, manifest["shards"], run.workers, f"{split}{part.tag}")
        if len(verified) == len(manifest["shards"]):
            return counts_of(manifest), skipped_before  # finished in an earlier run, verified
        log.warning("%s: %d shard(s) are missing or damaged: cutting again to rewrite them", path,
                    len(manifest["shards"]) - len(verified))  # fmt: skip
    staging = run.output / part.staging_name / split
    clips, skipped = cut_sources(run, split, sources, staging)
    if manifest:
        mark_incomplete(path, manifest)
    if not part.whole:
        (folder / MANIFEST).unlink(missing_ok=True)  # the merged manifest would no longer tell the truth
    remove_strays(folder, part)  # half-written files of a killed attempt

    def restage(missing: list[dict]) -> None:
        cut_again(run, split, sources, staging, missing)

    settings = run.settings
    shard = (settings.shard_size_mb * 1e6, settings.seed, settings.shard_samples)
    entries = pack(clips, folder, part, run.label_names, shard, run.digest, previous, run.workers, restage,
                   f"{split}{part.tag}", verified)  # fmt: skip
    multi_label = any(len(label_ids(clip["label"])) > 1 for clip in clips)
    manifest = build_manifest(entries, class_histogram(clips, run.label_names), run.label_names, settings,
                              multi_label, len(sources) - len(skipped), run.identity())  # fmt: skip
    write_json(path, manifest)
    (folder / part.journal_name).unlink(missing_ok=True)
    remove_strays(folder, part, keep={entry["name"] for entry in entries})  # and shards of an older plan
    shutil.rmtree(staging, ignore_errors=True)
    return counts_of(manifest), skipped


def trusted_entries(manifest: dict | None, run: Run) -> dict[str, dict]:
    """The shard entries of an earlier manifest of this run (or of a version that did not record
    runs), by name; to be verified before they are kept."""
    if not manifest or manifest.get("run_digest", run.digest) != run.digest:
        return {}
    return {entry["name"]: entry for entry in manifest.get("shards", [])}


def counts_of(manifest: dict) -> dict:
    return {"clips": manifest["total_clips"], "shards": len(manifest["shards"])}


def cut_sources(run: Run, split: str, sources: list[Source], staging: Path) -> tuple[list[dict], list[dict]]:
    """Cut ``sources`` into staged clips in parallel; returns the clips and the skipped videos."""
    settings = run.settings
    jobs = [(source, settings, staging, run.chunked) for source in sources]
    clips: list[dict] = []
    skipped: list[dict] = []
    for source, source_clips, error in progress(run.workers.map(cut_job, jobs), total=len(jobs),
                                                desc=f"{split}{run.part.tag} videos", unit="video"):  # fmt: skip
        if error is not None:
            log.warning("skipping %s: %s", source.path, error)
            skipped.append({"path": source.path, "split": split, "reason": error})
        elif not source_clips:
            reason = f"no clip of at least --min-seconds={settings.min_seconds} s"
            skipped.append({"path": source.path, "split": split, "reason": reason})
        else:
            clips.extend(source_clips)
    return clips, skipped


def cut_again(run: Run, split: str, sources: list[Source], staging: Path, missing: list[dict]) -> None:
    """Cut again the sources of staged clips that are gone (their shard, written by an earlier
    attempt, was lost since)."""
    indices = {source_index(clip) for clip in missing}
    for index in indices:
        shutil.rmtree(staging / f"{index:08d}", ignore_errors=True)
    cut_sources(run, split, [source for source in sources if source.index in indices], staging)
    lost = [clip["file"] for clip in missing if not Path(clip["file"]).is_file()]
    if lost:
        raise RuntimeError(f"cutting {len(indices)} source(s) again did not give back {lost[0]}")


def remove_strays(folder: Path, part: Part, keep: set[str] | None = None) -> None:
    """Remove this part's half-written (``.tmp-*``) files, and, given ``keep``, its shards not in it."""
    if not folder.is_dir():
        return
    shards = part.shard_pattern
    temporary = re.compile(rf"\.tmp-\d+-({shards.pattern}|{re.escape(part.manifest_name)})")
    for path in folder.iterdir():
        old_shard = keep is not None and shards.fullmatch(path.name) and path.name not in keep
        if old_shard or temporary.fullmatch(path.name):
            path.unlink(missing_ok=True)


def check_previous_settings(output: Path, settings: Settings, chunked: bool, overwrite: bool, part: Part) -> None:
    """Refuse to mix clips cut with other settings into ``output`` (naming what differs); with
    ``overwrite``, remove the old clips and shards this run replaces (a part never removes a
    sibling part's files: that part overwrites its own when it runs)."""
    current = cut_settings(asdict(settings), chunked)
    stale = [(owner, changed) for owner, previous in recorded_settings(output)
             if (changed := differences(previous, current, tuple(current)))]  # fmt: skip
    if not stale:
        return
    if not overwrite:
        raise UserError(f"{output} holds clips cut with other settings ({stale[0][1]}): use another --output, "
                        "or --overwrite to cut everything again")  # fmt: skip
    if any(replaced_by(owner, part) for owner, _ in stale):
        log.warning("--overwrite: removing the clips and shards cut with the old settings in %s", output)
        remove_previous(output, part)


def recorded_settings(output: Path) -> list[tuple[Part | None, dict]]:
    """The cut settings of what ``output`` holds, with the part that recorded each (None: a
    whole-input run): the run records, else (outputs of older versions) the staging folder's
    settings file or a manifest."""
    found = []
    for path in sorted(output.glob("prepare*.json")):
        record = read_json(path)
        if record and "settings" in record:
            found.append((tag_of(path.name), cut_settings(record["settings"], record.get("chunked", False))))
    legacy = read_json(output / ".staging" / "cut_settings.json")
    if legacy:
        found.append((None, legacy))
    if not found:
        for path in sorted(output.glob(f"*/{MANIFEST}"))[:1]:
            manifest = read_json(path) or {}
            found.append((None, manifest.get("settings", {})))  # no "chunked" recorded there
    return found


def replaced_by(owner: Part | None, part: Part) -> bool:
    """Whether a file of ``owner`` (None: a whole-input run's) is this run's to replace."""
    return part.whole or owner is None or owner.count != part.count or owner.index == part.index


def remove_previous(output: Path, part: Part) -> None:
    """``--overwrite``: remove what this run replaces (see :func:`replaced_by`)."""
    folders = [output, *(output / split for split in SPLITS if (output / split).is_dir())]
    for path in [path for folder in folders for path in folder.iterdir()]:
        if path.name.startswith(OUR_FILES) and replaced_by(tag_of(path.name), part):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
