"""The ``harness.train`` entry point: resume after a kill, script mode, config errors, seed YAML."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from harness.config import load_config
from harness.train import main
from harness.training import Trainer
from tests import deadline
from tests.conftest import tiny_overrides
from tests.fake_wandb import API_KEY, FakeSweepServer
from tests.wandb_records import read_run

REPO = Path(__file__).resolve().parent.parent
COMPARED = ("epoch", "step", "loss", "acc1", "acc5", "lr", "wd", "grad_norm")


def log_rows(folder, name="log_r0.csv", columns=COMPARED):
    with open(folder / name, newline="") as handle:
        return [{key: row[key] for key in columns} for row in csv.DictReader(handle)]


def logged_steps(folder):
    """The step of the last row of the step log (0 before the first)."""
    try:
        lines = (folder / "log_r0.csv").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return int(lines[-1].split(",")[1]) if len(lines) > 1 else 0


def kill_at_step(command: list[str], env: dict, folder: Path, step: int) -> int:
    """Run ``command`` until its step log reaches ``step`` (or 120 s pass), SIGKILL it (no chance to
    save anything), and return the last step it logged."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while logged_steps(folder) < step and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return logged_steps(folder)


def write_config(path, root, folder, *extra):
    overrides = tiny_overrides(root, folder, *extra)
    config = load_config(None, overrides)
    from harness.config import save_config

    save_config(config, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("source", ["listing", "shards"])
def test_kill_mid_epoch_then_rerun_continues_bit_for_bit(source, demo_root, demo_shards, tmp_path):
    # Rows every 3 steps and checkpoints every 4: a resume lands inside a logging window too.
    shards = ()
    if source == "shards":  # the same 24 + 8 clips, streamed from tar shards
        shards = ("data.datasets=[]", "data.val_datasets=[]", f"data.shards=[{demo_shards / 'train/manifest.json'}]",
                  f"data.val_shards=[{demo_shards / 'val/manifest.json'}]")  # fmt: skip
    extra = (*shards, "data.batch_size=2", "data.num_workers=1", "optimization.epochs=3", "checkpointing.every_steps=4",
             "logging.log_every=3", "model.drop_path_rate=0.1", "data.crop_size=48", "model.depth=3")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reference = write_config(tmp_path / "reference.yaml", demo_root, tmp_path / "reference", *extra)
    subprocess.run([sys.executable, "harness/train.py", "--config", str(reference)], cwd=REPO, env=env, check=True)
    expected = log_rows(tmp_path / "reference")
    steps_per_epoch = 24 // 2
    assert len(expected) == 3 * steps_per_epoch // 3

    folder = tmp_path / "killed"
    config = write_config(tmp_path / "killed.yaml", demo_root, folder, *extra)
    command = [sys.executable, "-m", "harness.train", "--config", str(config)]
    killed_at = kill_at_step(command, env, folder, steps_per_epoch + 5)
    assert steps_per_epoch < killed_at < 2 * steps_per_epoch, f"killed in epoch 2, at step {killed_at}"

    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    resumed = [line for line in rerun.stderr.splitlines() if "resumed from" in line]
    assert resumed, rerun.stderr[-2000:]
    resumed_step = int(resumed[0].rsplit("step ", 1)[1])
    assert resumed_step % steps_per_epoch != 0, "the resume point is inside an epoch"
    assert log_rows(folder) == expected, "losses after resume equal the uninterrupted run's"
    epoch_columns = ("epoch", "step", "train_loss", "train_acc1", "val_top1", "val_loss")
    assert log_rows(folder, "epochs.csv", epoch_columns) == log_rows(
        tmp_path / "reference", "epochs.csv", epoch_columns
    )


def test_runs_as_a_script(demo_root, tmp_path):
    config = write_config(tmp_path / "c.yaml", demo_root, tmp_path / "run", "optimization.epochs=1",
                          "optimization.ipe=1", "data.val_datasets=[]")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "harness/train.py", "--config", str(config)], cwd=REPO, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert logged_steps(tmp_path / "run") == 1 and (tmp_path / "run" / "summary.json").is_file()


def test_config_typo_is_an_error_with_a_suggestion(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("optimization:\n  lr: 0.1\n")
    assert main(["--config", str(path), "optimization.warmpu=2"]) == 2
    assert "did you mean 'warmup'" in capsys.readouterr().err
    path.write_text("optimisation:\n  lr: 0.1\n")
    assert main(["--config", str(path)]) == 2
    assert "did you mean 'optimization'" in capsys.readouterr().err


def test_a_vjepa2_classifier_yaml_trains_as_it_is(demo_root, tmp_path):
    text = textwrap.dedent(f"""
        app: vjepa
        nodes: 16
        tasks_per_node: 8
        cpus_per_task: 16
        mem_per_gpu: 220G
        folder: {tmp_path / "vjepa2"}
        data:
          dataset_type: VideoDataset
          datasets: [{demo_root / "train.csv"}]
          dataset_fpcs: [4]
          val_datasets: [{demo_root / "val.csv"}]
          val_dataset_fpcs: [4]
          batch_size: 4
          val_batch_size: 4
          crop_size: 32
          patch_size: 16
          tubelet_size: 2
          fps: 8
          num_clips: 2
          val_num_clips: 2
          num_workers: 0
          pin_mem: true
        data_aug:
          auto_augment: true
          horizontal_flip: false
          motion_shift: true
          random_resize_aspect_ratio: [0.75, 1.35]
          random_resize_scale: [0.3, 1.0]
          reprob: 0.25
        meta:
          dtype: bfloat16
          load_checkpoint: true
          load_encoder: true
          finetune_encoder: true
          num_classes: 4
          pretrain_checkpoint: null
          read_checkpoint: null
          save_every_freq: 1
          seed: 239
          use_sdpa: true
        model:
          compile_model: false
          model_name: vit_tiny_rope
          attn_pooler_depth: 2
          attn_pooler_heads: 3
          uniform_power: true
          use_activation_checkpointing: true
          use_rope: true
          use_silu: true
          wide_silu: true
        optimization:
          anneal: 0
          epochs: 1
          final_lr: 0.0
          final_weight_decay: 0.01
          ipe: 2
          lr: 0.0005
          start_lr: 0.0001
          warmup: 1
          weight_decay: 0.01
          enc_lr_scale: 0.1
          betas: [0.9, 0.999]
          eps: 1.0e-8
        """)
    path = tmp_path / "vjepa2.yaml"
    path.write_text(text)
    config = load_config(path)
    assert sorted(config.ignored) == ["app", "cpus_per_task", "mem_per_gpu", "nodes", "tasks_per_node"]
    trainer = Trainer(config)
    result = trainer.fit()
    assert trainer.steps_per_epoch == 2 and result.count == 8
    assert trainer.checkpoints.pointers()["epoch_0001"] == trainer.checkpoints.pointers()["latest"]
    resolved = yaml.safe_load((tmp_path / "vjepa2" / "config.yaml").read_text())
    assert resolved["data"]["fps"] == 8 and resolved["data"]["frame_step"] is None


def readme_sweep() -> dict:
    """The sweep.yaml of the W&B section of docs/scaling.md."""
    page = (REPO / "docs" / "scaling.md").read_text(encoding="utf-8")
    found = re.search(r"```yaml\n(# sweep\.yaml:.*?)```", page, re.S)
    assert found, "docs/scaling.md has a sweep.yaml example"
    return yaml.safe_load(found.group(1))


@pytest.mark.slow
def test_a_real_wandb_agent_runs_the_readme_sweep_each_run_in_its_own_folder(demo_root, tmp_path):
    """The real ``wandb agent`` CLI runs the documented sweep.yaml (docs/scaling.md). Its one stand-in is the W&B server
    (:mod:`tests.fake_wandb`, W&B has no offline agent): it serves this sweep and hands out one run
    with values of the sweep's parameters, as W&B's controller would. The agent launches the
    sweep's command with the environment it sets (WANDB_SWEEP_ID, WANDB_RUN_ID) and the values as
    ``${args_no_hyphens}``; the run trains with them in ``<folder>/<run id>``, and its W&B run
    (offline: nothing to upload it to) is the agent's run."""
    sweep = readme_sweep()
    command = sweep["command"]
    assert command[:3] == ["${env}", "${interpreter}", "${program}"] and command[-1] == "${args_no_hyphens}"
    # The documented command, on the tiny demo run instead of ViT-L, and W&B offline for the run itself.
    tiny = [o for o in tiny_overrides(demo_root, tmp_path / "unused") if not o.startswith("folder=")]
    command = [{"configs/vitl16_probe.yaml": "configs/demo.yaml", "folder=runs/sweep": f"folder={tmp_path / 'sweep'}"}
               .get(part, part) for part in command[:-1]]  # fmt: skip
    command += [*tiny, "optimization.epochs=1", "optimization.ipe=1", "optimization.warmup=0",
                "optimization.anneal=0", "logging.wandb.mode=offline", "${args_no_hyphens}"]  # fmt: skip
    sweep["command"] = command
    parameters = sweep["parameters"]  # what a controller picks from each: none is the demo run's own value
    chosen = {"optimization.lr": parameters["optimization.lr"]["min"],
              "optimization.weight_decay": parameters["optimization.weight_decay"]["values"][0],
              "model.drop_path_rate": parameters["model.drop_path_rate"]["values"][2]}  # fmt: skip
    run_id = "swrun001"
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # the agent runs "python"
            "HOME": str(tmp_path), "WANDB_DIR": str(tmp_path), "WANDB_API_KEY": API_KEY}  # fmt: skip
    with FakeSweepServer("sweep001", yaml.safe_dump(sweep), run_id, chosen) as server:
        env["WANDB_BASE_URL"] = server.url
        agent_command = [sys.executable, "-m", "wandb", "agent", "--count", "1", "entity/project/sweep001"]
        agent = subprocess.run(agent_command, cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=deadline.time_left())  # fmt: skip
    output = (agent.stdout + agent.stderr)[-4000:]  # the agent's log, with the run's output in it
    assert agent.returncode == 0, output
    assert [name for name, _ in server.operations[:3]] == ["Viewer", "SweepWithRuns", "CreateAgent"], output
    folder = tmp_path / "sweep" / run_id
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else None
    assert summary and summary["finished"], output
    assert summary["wandb_run_id"] == run_id, "the harness's W&B run is the one the agent started"
    files = list((folder / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1, "its offline W&B run, for wandb sync"
    recorded = read_run(files[0])
    assert recorded["run_id"] == run_id and recorded["config"]["optimization"]["lr"] == chosen["optimization.lr"]
    assert not (tmp_path / "sweep" / "summary.json").exists(), "nothing trained in the sweep's folder itself"
    resolved = yaml.safe_load((folder / "config.yaml").read_text())
    assert resolved["optimization"]["lr"] == chosen["optimization.lr"]
    assert resolved["optimization"]["weight_decay"] == chosen["optimization.weight_decay"]
    assert resolved["model"]["drop_path_rate"] == chosen["model.drop_path_rate"]
