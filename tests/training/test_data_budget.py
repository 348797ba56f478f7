"""One failure verdict for the run, the same on 1, 8 and 64 ranks.

The ranks are simulated in one process: each has its own dataset and loader made exactly as the
trainer makes them (``make_loader`` with this rank's ``LoaderSettings``), decoding is stubbed
(dead files raise as an unreadable file does), and the verdict adds the ranks' counts up as the
trainer's all-reduce does, at the trainer's cadence (every ``log_every`` steps and at the end of
the epoch). A real two-process run under torchrun checks the trainer's wiring.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import harness.data.files as files
from harness.config import load_config, save_config
from harness.data import ClipSpec, DecodeError, TooManyDecodeFailures, VideoClipDataset
from harness.data.listing import Listing, VideoRecord
from harness.data.source import LoaderSettings
from harness.training.data_budget import FailureBudget, failure_verdict
from tests.conftest import tiny_overrides
from tests.deadline import time_left

REPO = Path(__file__).resolve().parents[2]
VIDEOS, BATCH, EPOCHS, LOG_EVERY = 4000, 4, 6, 10


@pytest.fixture()
def stub_decoding(monkeypatch):
    """Decoding replaced by a tiny clip; a path containing 'dead' raises like a missing file."""

    def load_clips(path, spec, num_clips, transform, **_):
        if "dead" in path:
            raise DecodeError(f"cannot open {path}")
        return [torch.zeros(3, 1, 1, 1, dtype=torch.uint8)] * num_clips, torch.zeros(num_clips, 1, dtype=torch.long)

    monkeypatch.setattr(files, "load_clips", load_clips)


def listing_with_dead_files(share: float) -> Listing:
    dead = set(np.random.default_rng(7).choice(VIDEOS, int(share * VIDEOS), replace=False).tolist())
    records = [VideoRecord(f"/data/{'dead' if i in dead else 'ok'}/v{i:06d}.mp4", i % 10) for i in range(VIDEOS)]
    return Listing.from_records(records)


def run_epochs(share: float, world_size: int, fraction: float = 0.01) -> tuple[int, str | None]:
    """Epochs finished and the stop message (None: all finished) of a simulated run."""
    listing = listing_with_dead_files(share)
    ranks = [VideoClipDataset([(listing, ClipSpec(1, frame_step=1))], lambda clip: clip, decoder="pyav")
             for _ in range(world_size)]  # fmt: skip
    loaders = [rank.make_loader(LoaderSettings(BATCH, rank=r, world_size=world_size), train=True)
               for r, rank in enumerate(ranks)]  # fmt: skip
    steps = len(loaders[0])  # every rank the same (the samplers pad)
    assert all(len(loader) == steps for loader in loaders)
    # the all-reduce of the ranks' counts, as harness.training.data_budget.build_budgets wires it
    summed = lambda: tuple(map(sum, zip(*(rank.attempt_counts() for rank in ranks))))  # noqa: E731
    budget = FailureBudget(summed, lambda t: t, fraction, planned=steps * BATCH * world_size)
    for epoch in range(EPOCHS):
        for loader in loaders:
            loader.set_epoch(epoch)
        iterators = [iter(loader) for loader in loaders]
        budget.start_epoch(epoch)
        try:
            for step in range(1, steps + 1):
                for iterator in iterators:
                    next(iterator)
                if step % LOG_EVERY == 0 or step == steps:
                    budget.check(final=step == steps)
        except TooManyDecodeFailures as error:
            return epoch, str(error)
    return EPOCHS, None


@pytest.mark.parametrize("world_size", [1, 8, 64])
def test_half_a_percent_of_dead_files_trains_six_epochs_on_any_number_of_ranks(stub_decoding, world_size):
    finished, message = run_epochs(0.005, world_size)
    assert (finished, message) == (EPOCHS, None)


def test_five_percent_of_dead_files_stop_every_world_size_in_epoch_one_with_the_same_message(stub_decoding):
    outcomes = {world_size: run_epochs(0.05, world_size) for world_size in (1, 8, 64)}
    assert {epoch for epoch, _ in outcomes.values()} == {0}, outcomes
    shapes = {re.sub(r"\d+(\.\d+)?", "N", message) for _, message in outcomes.values()}
    assert shapes == {"training epoch N: N of N videos tried over all ranks could not be used (N%), more than "
                      "data.max_failure_fraction=N allows; check the listing and the files (each unusable one is "
                      "named in the warnings and quarantine files)"}, shapes  # fmt: skip
    assert all("training epoch 1:" in message for _, message in outcomes.values())
    page = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    shown = re.search(r"^error: (training epoch .*)$", page, re.MULTILINE).group(1)
    assert re.sub(r"\d+(\.\d+)?", "N", shown) in shapes, "docs/data.md shows the message as it is"


def test_the_old_per_rank_rule_would_have_stopped_the_64_rank_run(stub_decoding):
    """The failure this replaces: marks summed over epochs against one rank's share of one epoch."""
    listing = listing_with_dead_files(0.005)
    dataset = VideoClipDataset([(listing, ClipSpec(1, frame_step=1))], lambda clip: clip, decoder="pyav")
    loader = dataset.make_loader(LoaderSettings(BATCH, rank=0, world_size=64), train=True)
    allowance = 0.01 * len(loader.sampler)
    for epoch in range(EPOCHS):
        loader.set_epoch(epoch)
        list(loader)
        if dataset.stats()["failed"] > allowance:
            break
    assert dataset.stats()["failed"] > allowance, "the old rule aborted this run"


def test_verdict_rules():
    assert failure_verdict(40, 4100, 4000, 0.01, "training epoch 1", final=False) is None
    assert failure_verdict(41, 2000, 4000, 0.01, "training epoch 1", final=False), "the epoch's budget is spent"
    assert failure_verdict(41, 4100, 4000, 0.01, "training epoch 1", final=True) is None, "1% of those tried"
    assert failure_verdict(42, 4100, 4000, 0.01, "training epoch 1", final=True), "more than 1% of those tried"
    assert failure_verdict(0, 10, 10, 0.0, "x", final=True) is None
    assert failure_verdict(1, 10, 10, 0.0, "x", final=True)


def test_each_epoch_is_judged_alone_and_a_resume_continues_the_epochs_counts():
    counts = [0, 0]
    budget = FailureBudget(lambda: tuple(counts), lambda t: t, 0.1, planned=100)
    for epoch in range(3):  # 9 of 100 each epoch: never more than 10%, however many epochs
        budget.start_epoch(epoch)
        counts[0] += 100
        counts[1] += 9
        budget.check(final=True)
    assert budget.totals() == {"attempts": 300, "failed_attempts": 27}
    budget.start_epoch(3)
    counts[0], counts[1] = counts[0] + 50, counts[1] + 6
    budget.check()
    saved = budget.state_dict()
    resumed = FailureBudget(lambda: (0, 0), lambda t: t, 0.1, planned=100)  # a new process counts from 0
    resumed.load_state_dict(saved)
    resumed.start_epoch(3, resumed=True)
    assert resumed.counts() == [50, 6]
    fresh = FailureBudget(lambda: (0, 0), lambda t: t, 0.1, planned=100)
    fresh.load_state_dict(saved)
    fresh.start_epoch(4, resumed=False)
    assert fresh.counts() == [0, 0], "a new epoch starts from nothing"
    assert fresh.totals()["attempts"] == 300 + 0


def dead_listing(demo_root: Path, folder: Path, dead: int) -> Path:
    lines = (demo_root / "train.csv").read_text().splitlines()
    out = [f"{demo_root / line.split()[0]} {line.split()[1]}" for line in lines]
    out += [f"{folder / f'missing{i}.mp4'} {i % 4}" for i in range(dead)]
    listing = folder / f"train_{dead}.csv"
    listing.write_text("\n".join(out) + "\n")
    return listing


@pytest.mark.slow
def test_two_real_ranks_reach_the_same_verdict_and_exit_2(demo_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    results = {}
    for dead in (0, 6):  # 24 videos + 6 missing: 20% > 10%
        listing = dead_listing(demo_root, tmp_path, dead)
        config = tmp_path / f"c{dead}.yaml"
        overrides = tiny_overrides(demo_root, tmp_path / f"run{dead}", f"data.datasets=[{listing}]",
                                   "data.max_failure_fraction=0.1", "distributed.strategy=ddp",
                                   "data.batch_size=2", "optimization.epochs=1")  # fmt: skip
        save_config(load_config(None, overrides), config)
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "harness.train",
                   "--config", str(config)]  # fmt: skip
        results[dead] = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=time_left())
    assert results[0].returncode == 0, results[0].stderr[-3000:]
    failed = results[6]
    assert failed.returncode != 0
    verdicts = re.findall(r"error: (training epoch \d+: .*? quarantine files\))", failed.stderr)
    assert len(verdicts) == 2, failed.stderr[-3000:]  # one line from each rank (they may share a line)
    assert len(set(verdicts)) == 1 and verdicts[0].startswith("training epoch 1:"), "both ranks, the same verdict"
    assert f'File "{REPO / "harness"}' not in failed.stderr, "no traceback of ours (torchrun prints its own)"
