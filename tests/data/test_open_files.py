"""Bounded open files when streaming many shard sources; the start-up check of the open-file limit;
errors of a worker out of descriptors reach the trainer; only one rank checks that shards exist."""

import contextlib
import hashlib
import logging
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.config import ConfigError, load_config, save_config
from harness.data import ClipSpec, TrainTransform
from harness.data.open_files import RAISED_LIMIT_CAP, OpenFileBudget, ParkableFile, open_descriptors
from harness.data.shard_io import ShardChecksumError, check_open_file_limit
from harness.data.shards import Shard, ShardDataset, ShardError, ShardLoader, list_shards, read_samples
from harness.training import data_parts
from tests.conftest import tiny_overrides
from tests.data.test_shards import sample_members, write_tar
from tests.deadline import time_left

REPO = Path(__file__).resolve().parents[2]
SPEC = ClipSpec(4, frame_step=2)


def junk_sources(root: Path, sources: int, shards: int, samples: int, size: int = 300) -> list[list[Shard]]:
    """``sources`` sources of ``shards`` tar shards of ``samples`` samples of about ``size`` bytes
    (random bytes, not videos: the raw stream never decodes), with manifest counts and checksums."""
    listed = []
    for source in range(sources):
        listed.append([])
        for index in range(shards):
            path = root / f"s{source:03d}-{index}.tar"
            members = [m for i in range(samples) for m in sample_members(f"k{i}", os.urandom(size + i), b"1")]
            write_tar(path, members)
            listed[-1].append(Shard(str(path), samples, hashlib.sha256(path.read_bytes()).hexdigest()))
    return listed


def draw(sources: list[list[Shard]], max_open_files: int, draws: int) -> tuple[list, int, dict]:
    """``draws`` raw samples of one stream, the most descriptors it held at once, and its stats."""
    dataset = ShardDataset(sources, SPEC, TrainTransform(32), seed=5, interleave=2, max_open_files=max_open_files)
    dataset.configure(0, 1, 1)
    samples = dataset._raw_samples(0, dataset._fresh_state())
    before, most, drawn = open_descriptors(), 0, []
    for _ in range(draws):
        key, parts, url = next(samples)
        drawn.append((url, key, parts))
        most = max(most, open_descriptors() - before)
    samples.close()
    return drawn, most, dataset.stats()


def test_a_stream_over_300_sources_keeps_its_budget_and_draws_the_same_samples(tmp_path):
    sources = junk_sources(tmp_path, 300, 2, 4)
    parked, most_parked, stats_parked = draw(sources, 16, 1000)
    unbounded, most_unbounded, stats_unbounded = draw(sources, 10**6, 1000)
    assert most_parked <= 16, "at most the budget of shard files open at once"
    assert most_unbounded > 300, "without the budget a stream holds a file per open shard"
    assert parked == unbounded, "parking changes nothing that is read"
    assert stats_parked == stats_unbounded and stats_parked["broken_shards"] == 0


def test_checksums_verify_across_parking(tmp_path):
    ((first, second),) = junk_sources(tmp_path, 1, 2, 5, size=100_000)
    budget = OpenFileBudget(1)  # the two readers take turns: each read parks the other
    readers = [read_samples(shard.url, sha256=shard.sha256, budget=budget) for shard in (first, second)]
    rounds = [[next(reader, None) for reader in readers] for _ in range(6)]  # the 6th ends each: checksum checked
    assert sum(sample is not None for row in rounds for sample in row) == 10 and budget.reopened >= 4
    readers = [read_samples(shard.url, sha256=second.sha256, budget=budget) for shard in (first, second)]
    with pytest.raises(ShardChecksumError):
        [[next(reader, None) for reader in readers] for _ in range(6)]


def test_a_parked_file_reopens_where_it_was(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 40)
    budget = OpenFileBudget(1)
    first, second = ParkableFile(str(path), budget), ParkableFile(str(path), budget)
    assert first.read(100) == path.read_bytes()[:100]
    assert second.read(7) == path.read_bytes()[:7] and first._file is None, "the first one was parked"
    assert first.read(50) == path.read_bytes()[100:150] and budget.reopened == 1
    first.close()
    second.close()
    assert not budget.open


def test_exact_resume_holds_with_a_budget_of_one_file(demo_shards):
    sources = [list_shards(str(demo_shards / "train" / "manifest.json")),
               list_shards(str(demo_shards / "val" / "manifest.json"))]  # fmt: skip

    def loader(max_open_files):
        dataset = ShardDataset(sources, SPEC, TrainTransform(32, normalize=False), seed=1, interleave=2,
                               resample=True, max_open_files=max_open_files)  # fmt: skip
        dataset.configure(0, 1, 1)
        return ShardLoader(dataset, 3, steps_per_epoch=6, num_workers=0)

    reference = loader(64)
    reference.set_epoch(0)
    expected = [batch.videos for batch in reference]
    partial = loader(1)
    partial.set_epoch(0)
    iterator = iter(partial)
    first = [next(iterator).videos for _ in range(2)]
    resumed = loader(1)
    resumed.load_state_dict(partial.state_dict())
    resumed.set_epoch(0, start=2 * 3)
    assert first + [batch.videos for batch in resumed] == expected


@contextlib.contextmanager
def descriptors_exhausted():
    """This process can open no more files (the soft limit lowered, the free numbers below it taken)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(int(fd) for fd in os.listdir("/proc/self/fd")) + 1, hard))
    taken = []
    try:
        with contextlib.suppress(OSError):
            while True:
                taken.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_running_out_of_descriptors_is_no_broken_shard_but_a_clear_error(tmp_path):
    sources = junk_sources(tmp_path, 1, 2, 2)
    dataset = ShardDataset(sources, SPEC, TrainTransform(32), interleave=2)
    dataset.configure(0, 1, 1)
    samples = dataset._raw_samples(0, dataset._fresh_state())
    for budget in (None, OpenFileBudget(4)):
        with descriptors_exhausted(), pytest.raises(ShardError, match="too many open files in this process"):
            next(read_samples(sources[0][0].url, budget=budget))
    with descriptors_exhausted(), pytest.raises(ShardError, match="ulimit -n"):
        next(samples)
    assert dataset.stats()["broken_shards"] == 0


@pytest.fixture()
def limits(monkeypatch):
    """A fake RLIMIT_NOFILE: ``limits.value`` is ``(soft, hard)``; setrlimit calls are recorded."""

    class Limits:
        value, set_to = (1024, 4096), []

    monkeypatch.setattr(resource, "getrlimit", lambda which: Limits.value)
    monkeypatch.setattr(resource, "setrlimit", lambda which, value: Limits.set_to.append(value))
    monkeypatch.setattr("harness.data.open_files.open_descriptors", lambda: 40)
    return Limits


def test_the_start_up_check_passes_raises_the_soft_limit_or_fails_in_one_line(limits, caplog):
    few = [[Shard(f"s{i}.tar") for i in range(8)]]
    many = [[Shard(f"{s}-{i}.tar") for i in range(8)] for s in range(300)]
    pipes = [[Shard(f"pipe:cat {s}-{i}.tar") for i in range(8)] for s in range(300)]
    check_open_file_limit(few, 4, 64, 8)
    check_open_file_limit(many, 4, 64, 8)  # 300 sources: still the budget of 64 per worker
    assert limits.set_to == []
    with caplog.at_level(logging.INFO, logger="harness.data.shards"):
        check_open_file_limit(many, 4, 2000, 2)
    assert limits.set_to == [(4096, 4096)] and "raised the open-file limit from 1024 to 4096" in caplog.text
    limits.value = (1024, 1024)
    with pytest.raises(ShardError, match=r"^the data loader may hold 1384 open files .*\(soft 1024, hard 1024\)"
                       r".*ulimit -Hn.*shards.max_open_files") as error:  # fmt: skip
        check_open_file_limit(pipes, 4, 64, 2)  # pipes cannot be parked: 1200 of them
    assert "\n" not in str(error.value)
    with pytest.raises(ShardError, match=r"the main process: 40 open now \+ 64 workers x 20 .*data.num_workers"):
        check_open_file_limit(few, 4, 64, 64)  # the main process holds what 64 workers hand over
    limits.value = (1024, 10**6)
    check_open_file_limit(many, 4, 2000, 2)
    assert limits.set_to[-1] == (RAISED_LIMIT_CAP, 10**6), "raised as far as a cap, not to a huge hard limit"


def test_only_the_main_rank_checks_that_pattern_shards_exist(tmp_path, monkeypatch):
    write_tar(tmp_path / "a-0.tar", sample_members("x", b"junk", b"0"))
    pattern = str(tmp_path / "a-{0..1}.tar")  # a-1.tar is missing
    with pytest.raises(ShardError, match="1 shard"):
        list_shards(pattern)
    monkeypatch.setattr(Path, "is_file", lambda self: pytest.fail("no stat without check_exists"))
    assert len(list_shards(pattern, check_exists=False)) == 2
    monkeypatch.undo()
    config = load_config(None, ["data.datasets=[]", f"data.shards=[{pattern}]", "meta.num_classes=2"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="data.shards: 1 shard"):
        data_parts.build_train_dataset(config)
    monkeypatch.setenv("RANK", "1")
    dataset = data_parts.build_train_dataset(config)
    dataset.quarantine = tmp_path / "quarantine_r1.txt"
    dataset.configure(0, 1, 1)
    samples = dataset._raw_samples(0, dataset._fresh_state())
    assert {next(samples)[2] for _ in range(4)} == {str(tmp_path / "a-0.tar")}
    assert dataset.stats()["broken_shards"] >= 1, "on other ranks a missing shard is a broken shard"
    assert "a-1.tar" in dataset.quarantine.read_text()


# ------------------------------------------------------------------ processes under a real limit
def limited(soft_and_hard: int):
    """``preexec_fn`` of a child with an open-file limit of ``soft_and_hard`` (soft and hard)."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft_and_hard, soft_and_hard))


@pytest.mark.slow
def test_a_worker_that_cannot_hand_a_batch_over_fails_the_loader_instead_of_hanging():
    script = textwrap.dedent("""
        import os, torch
        from torch.utils.data import DataLoader, IterableDataset
        from harness.data.workers import die_with_parent

        class FillsTheTable(IterableDataset):
            def __iter__(self):  # takes all descriptors but one: handing the batch over needs two
                taken = []
                try:
                    while True:
                        taken.append(os.open(os.devnull, os.O_RDONLY))
                except OSError:
                    os.close(taken.pop())
                yield torch.zeros(3)

        print(torch.multiprocessing.get_sharing_strategy())
        list(DataLoader(FillsTheTable(), batch_size=1, num_workers=1, worker_init_fn=die_with_parent))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO,
                          preexec_fn=limited(256))  # fmt: skip
    assert done.stdout.strip() == "file_descriptor", "torch's default sharing strategy"
    assert done.returncode != 0
    assert "could not hand a batch to the trainer" in done.stderr and "Too many open files" in done.stderr
    assert "exited unexpectedly" in done.stderr


@pytest.fixture(scope="module")
def many_video_sources(demo_root, tmp_path_factory) -> list[str]:
    """300 sources of 4 real shards of 3 demo clips each (hard links of 4 tar files)."""
    root = tmp_path_factory.mktemp("many_sources")
    videos = sorted((demo_root / "train").glob("*.mp4"))
    for index in range(4):
        members = [m for i in range(3) for m in sample_members(f"v{i}", videos[3 * index + i].read_bytes(), b"1")]
        write_tar(root / f"base-{index}.tar", members)
    for source in range(300):
        for index in range(4):
            os.link(root / f"base-{index}.tar", root / f"s{source:03d}-{index}.tar")
    return [str(root / f"s{source:03d}-{{0..3}}.tar") for source in range(300)]


def train_command(demo_root, folder: Path, sources, *extra) -> list[str]:
    """``python -m harness.train`` for 2 short epochs streamed from ``sources`` by 2 workers."""
    overrides = tiny_overrides(demo_root, folder, "data.datasets=[]", f"data.shards=[{','.join(sources)}]",
                               "meta.num_classes=4", "shards.samples_per_epoch=64", "data.batch_size=8",
                               "data.num_workers=2", "optimization.epochs=2", *extra)  # fmt: skip
    config = folder.parent / f"{folder.name}.yaml"
    save_config(load_config(None, overrides), config)
    return [sys.executable, "-m", "harness.train", "--config", str(config)]


@pytest.mark.slow
def test_300_sources_train_with_two_workers_under_an_open_file_limit_of_1024(demo_root, many_video_sources, tmp_path):
    # A budget of 8 files parks shards within these short epochs (the default, 64, after more draws).
    command = train_command(demo_root, tmp_path / "run", many_video_sources, "shards.max_open_files=8")
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=time_left(), cwd=REPO, preexec_fn=limited(1024)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Too many open files" not in done.stderr + done.stdout
    assert (tmp_path / "run" / "log_r0.csv").read_text().count("\n") > 2


@pytest.mark.slow
@pytest.mark.parametrize("limit, extra", [(1024, ("shards.max_open_files=5000",)), (128, ())])
def test_an_open_file_limit_too_low_stops_at_start_up_in_one_line(demo_root, many_video_sources, tmp_path, limit,
                                                                   extra):  # fmt: skip
    done = subprocess.run(train_command(demo_root, tmp_path / "run", many_video_sources, *extra), capture_output=True,
                          text=True, timeout=time_left(), cwd=REPO, preexec_fn=limited(limit))  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "open files in one process" in errors[0] and f"(soft {limit}, hard {limit})" in errors[0]
    assert "shards.max_open_files" in errors[0]


@pytest.mark.slow
def test_a_worker_out_of_descriptors_while_opening_shards_fails_the_trainer(many_video_sources, tmp_path):
    # Without the start-up check (the loader made directly) and without a budget, a worker runs out.
    script = textwrap.dedent(f"""
        from harness.data import ClipSpec, TrainTransform
        from harness.data.shards import ShardDataset, ShardLoader, list_shards
        from harness.core.errors import entry_point

        @entry_point
        def main(argv):
            sources = [list_shards(source) for source in {many_video_sources!r}]
            dataset = ShardDataset(sources, ClipSpec(4, frame_step=2), TrainTransform(32), max_open_files=10**6)
            dataset.configure(0, 1, 2)
            loader = ShardLoader(dataset, 4, steps_per_epoch=500, num_workers=2, persistent_workers=True)
            loader.set_epoch(0)
            for batch in loader:
                pass
            return 0

        raise SystemExit(main([]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=time_left(), cwd=REPO,
                          preexec_fn=limited(200))  # fmt: skip
    assert done.returncode != 0
    assert "too many open files" in done.stderr.lower(), done.stderr[-3000:]
