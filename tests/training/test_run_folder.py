"""One job per run folder (a lock), a full disk during a checkpoint, workers that die with the trainer."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config import load_config
from harness.models.checkpoint_io import CheckpointError
from harness.training import Trainer
from harness.training.state import run_lock
from tests.conftest import tiny_overrides
from tests.deadline import time_left
from tests.tmpfs import mounted_tmpfs, resize_tmpfs

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that takes the run folder and keeps it."""
    code = f"from harness.training.state import run_lock; run_lock.acquire({str(folder)!r}); " \
           "print('held', flush=True); " \
           "import time; time.sleep(600)"  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_job_on_the_folder_is_refused_naming_the_holder(demo_root, tmp_path):
    folder = tmp_path / "run"
    holder = hold_lock(folder)
    config = load_config(None, tiny_overrides(demo_root, folder, "optimization.epochs=1"))
    try:
        with pytest.raises(run_lock.RunFolderInUse, match=f"in use by another run \\(PID {holder.pid} on "):
            Trainer(config)
        assert not (folder / "config.yaml").exists(), "the refused job wrote nothing"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    trainer = Trainer(config)  # the holder died: its lock went with it
    trainer.fit()
    assert trainer.state.epoch == 1
    assert json.loads((folder / ".lock").read_text() or "{}") == {}, "released at the end"


def test_the_exclusive_file_fallback_reclaims_only_dead_holders(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": time.time() - 60}
    (folder / run_lock.EXCLUSIVE_FILE).write_text(json.dumps(stale))
    run_lock.acquire(folder, use_flock=False)
    assert json.loads((folder / run_lock.EXCLUSIVE_FILE).read_text())["pid"] == os.getpid()
    run_lock.release(folder)
    assert not (folder / run_lock.EXCLUSIVE_FILE).exists()
    alive = {"pid": os.getppid(), "host": socket.gethostname(), "started": time.time()}
    (folder / run_lock.EXCLUSIVE_FILE).write_text(json.dumps(alive))
    with pytest.raises(run_lock.RunFolderInUse, match=f"PID {os.getppid()} on .*delete .*lock.excl"):
        run_lock.acquire(folder, use_flock=False)
    elsewhere = {**alive, "host": "another-node"}
    (folder / run_lock.EXCLUSIVE_FILE).write_text(json.dumps(elsewhere))
    with pytest.raises(run_lock.RunFolderInUse, match="on another-node"):
        run_lock.acquire(folder, use_flock=False)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_and_leaves_nothing(demo_root, tmp_path):
    """``Trainer.save`` (the trainer's own writer: the strategy's torch.save, meta.json, the rank and
    size files) on a real tmpfs that, once the first checkpoint is written, has room for half of another."""
    with mounted_tmpfs(tmp_path / "small", "64m") as disk:
        trainer = Trainer(load_config(None, tiny_overrides(demo_root, disk / "run", "optimization.epochs=1")))
        try:
            first = trainer.save(["latest"])
            written = {path.name: path.read_bytes() for path in first.iterdir()}
            size = sum(map(len, written.values()))
            resize_tmpfs(disk, shutil.disk_usage(disk).used + size // 2)
            trainer.state.step += 1  # the next checkpoint: another name
            with pytest.raises(CheckpointError) as caught:
                trainer.save(["latest"])
        finally:
            trainer.strategy.close()
            run_lock.release(disk / "run")
        message = str(caught.value)
        expected = f"no space left on tmpfs (tmpfs) mounted at {disk} while writing checkpoint e0000_s00000001"
        assert message.startswith(f"{expected}: about {size:,} bytes needed, "), message
        assert "checkpoints/latest (e0000_s00000000) is intact" in message
        root = disk / "run" / "checkpoints"
        assert sorted(p.name for p in root.iterdir()) == ["e0000_s00000000", "latest"], "no partial folder left"
        assert trainer.checkpoints.find("latest") == first
        assert {path.name: path.read_bytes() for path in first.iterdir()} == written, "the previous is untouched"


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        found.update(int(c) for c in children)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_loader_workers_die_with_a_killed_trainer(demo_root, tmp_path):
    overrides = tiny_overrides(demo_root, tmp_path / "run", "data.num_workers=2", "optimization.epochs=50",
                               "data.crop_size=64", "model.depth=4")  # fmt: skip
    (tmp_path / "empty.yaml").write_text("{}\n")
    command = [sys.executable, "-m", "harness.train", "--config", str(tmp_path / "empty.yaml"), *overrides]
    trainer = subprocess.Popen(command, env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(workers := _children(trainer.pid)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert len(workers) >= 2, "the trainer started its loader workers"
        time.sleep(1.0)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        # The kernel kills them at once (PR_SET_PDEATHSIG); how soon they are gone depends on the
        # machine's load, so wait for it rather than sleep a fixed time: a worker that outlives its
        # trainer for 60 s is one that was never told.
        deadline = time.time() + 60
        while [w for w in workers if _alive(w)] and time.time() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "every worker ended with the trainer"
    finally:
        if trainer.poll() is None:
            trainer.kill()


@pytest.mark.slow
def test_two_trainers_on_one_folder_the_second_is_refused_and_the_first_is_untouched(demo_root, tmp_path):
    (tmp_path / "empty.yaml").write_text("{}\n")
    folder = tmp_path / "run"
    command = [sys.executable, "-m", "harness.train", "--config", str(tmp_path / "empty.yaml"),
               *tiny_overrides(demo_root, folder, "optimization.epochs=20", "data.crop_size=64")]  # fmt: skip
    first = subprocess.Popen(command, env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (folder / "config.yaml").exists() and time.time() < deadline:
        time.sleep(0.1)
    second = subprocess.run(command, env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=time_left())
    out, err = first.communicate(timeout=time_left())
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"is in use by another run (PID {first.pid} on " in second.stderr.strip().splitlines()[-1]
    steps = [line.split(",")[1] for line in (folder / "log_r0.csv").read_text().splitlines()[1:]]
    assert len(steps) == len(set(steps)) == 6 * 20, "one run's rows, each step once"
