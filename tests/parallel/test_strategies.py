"""DDP, FSDP2 and DeepSpeed ZeRO 1/2/3 on CPU with gloo and 2 real processes (``torchrun``).

Each strategy trains a tiny model from the same seed with the same global batch as a
single-process reference, resumes from its own checkpoint for the second epoch, and must give
the reference's losses; ranks must hold the same weights; the checkpoint must consolidate into one
plain file equal to the live weights; a frozen encoder must stay frozen.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.config import load_config, save_config
from harness.export.consolidate import consolidate, load_consolidated
from harness.training import Trainer
from tests.conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[2]
STRATEGIES = {
    "ddp": ["distributed.strategy=ddp"],
    "fsdp": ["distributed.strategy=fsdp"],
    "zero1": ["distributed.strategy=deepspeed", f"distributed.deepspeed.config={REPO / 'ds_configs/zero1.json'}"],
    "zero2": ["distributed.strategy=deepspeed", f"distributed.deepspeed.config={REPO / 'ds_configs/zero2.json'}"],
    "zero3": ["distributed.strategy=deepspeed", f"distributed.deepspeed.config={REPO / 'ds_configs/zero3.json'}"],
    # host-memory offload: FSDP2's CPUOffloadPolicy; ZeRO-3 optimizer and parameter offload
    "fsdp_offload": ["distributed.strategy=fsdp", "distributed.fsdp.cpu_offload=true"],
    "zero3_offload": [
        "distributed.strategy=deepspeed",
        f"distributed.deepspeed.config={REPO / 'ds_configs/zero3_offload.json'}",
    ],  # fmt: skip
}
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def losses(folder: Path, rank: int = 0) -> list[float]:
    with open(folder / f"log_r{rank}.csv", newline="") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def write(tmp_path: Path, name: str, overrides: list[str]) -> Path:
    path = tmp_path / f"{name}.yaml"
    save_config(load_config(None, overrides), path)
    return path


@pytest.fixture(scope="module")
def reference(demo_root, tmp_path_factory):
    """Single process, global batch 4, 2 epochs."""
    folder = tmp_path_factory.mktemp("reference")
    Trainer(load_config(None, tiny_overrides(demo_root, folder, "data.batch_size=4"))).fit()
    return losses(folder)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from harness.models import create_encoder

    torch.manual_seed(11)
    encoder = create_encoder("vit_tiny", img_size=32, num_frames=4, depth=2)
    path = tmp_path_factory.mktemp("pretrained") / "encoder.pt"
    torch.save({"encoder": encoder.state_dict()}, path)
    return path


def run_driver(tmp_path: Path, demo_root: Path, strategy: list[str], pretrained: Path, *extra: str) -> Path:
    folder = tmp_path / "run"
    base = [*strategy, "data.batch_size=2"]  # 2 ranks x 2 = the reference's global batch
    config_a = write(tmp_path, "a", tiny_overrides(demo_root, folder, *base, "optimization.epochs=1"))
    config_b = write(tmp_path, "b", tiny_overrides(demo_root, folder, *base, "optimization.epochs=2"))
    # The frozen probe runs V-JEPA 2's evaluation protocol: 2 clips (tokens joined) x 2 views.
    probe = tiny_overrides(demo_root, tmp_path / "probe", *base, "optimization.epochs=1", "meta.finetune_encoder=false",
                           f"meta.pretrain_checkpoint={pretrained}", "model.clip_aggregation=concat_tokens",
                           "data.num_clips=2", "data.val_num_clips=2", "data.num_views=2")  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "tests/parallel/driver.py",
               str(tmp_path), str(config_a), str(config_b), "--frozen", str(write(tmp_path, "probe", probe)),
               str(pretrained), *extra]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_matches_single_process_and_resumes(name, demo_root, tmp_path, reference, pretrained):
    extra: list[str] = []
    if name in ("fsdp", "zero3"):  # activation checkpointing must not change the loss
        ac = tiny_overrides(demo_root, tmp_path / "ac", *STRATEGIES[name], "data.batch_size=2", "optimization.epochs=1",
                            "model.use_activation_checkpointing=true")  # fmt: skip
        extra = ["--extra", "ac", str(write(tmp_path, "ac", ac))]
    # A NaN loss on one rank skips that step on every rank, with an EMA of the weights too: a
    # skipped step must not move the average either (in the same launch: starts cost seconds).
    nan = write(tmp_path, "nan", tiny_overrides(demo_root, tmp_path / "nan", *STRATEGIES[name], "data.batch_size=2",
                                                "optimization.epochs=1", "optimization.ema_decay=0.5"))  # fmt: skip
    folder = run_driver(tmp_path, demo_root, STRATEGIES[name], pretrained, *extra, "--nan", str(nan), "2")
    results = [json.loads((tmp_path / f"result_r{rank}.json").read_text()) for rank in range(2)]
    assert_a_nan_step_was_skipped_on_every_rank([result["nan"] for result in results])

    # Same global batch, same seed: the mean of the two ranks' losses is the single-process loss,
    # in epoch 1 and, after resuming from the strategy's own checkpoint, in epoch 2.
    global_losses = [(a + b) / 2 for a, b in zip(losses(folder, 0), losses(folder, 1))]
    assert len(global_losses) == len(reference) == 12
    assert results[0]["resumed_at_step"] == 6
    assert global_losses == pytest.approx(reference, rel=1e-5, abs=1e-6)
    assert results[0]["digest"] == results[1]["digest"], "every rank holds the same weights"
    assert results[0]["frozen_unchanged"] and results[1]["frozen_unchanged"]
    if extra:
        assert losses(tmp_path / "ac", 0) == losses(folder, 0)[:6], "activation checkpointing changes nothing"

    # One plain file, loadable without a process group, equal to the live weights.
    out = consolidate(folder / "checkpoints" / "latest", tmp_path / "consolidated")
    plain = load_consolidated(out).state_dict()
    final = torch.load(tmp_path / "final.pt", weights_only=True)
    assert set(plain) == set(final)
    for key, value in final.items():
        torch.testing.assert_close(plain[key], value.float(), rtol=0, atol=0, msg=key)
    if name.startswith("zero"):  # DeepSpeed's own converter works on our checkpoints too
        from safetensors.torch import load_file

        checkpoint = (folder / "checkpoints" / "latest").read_text().strip()
        script = folder / "checkpoints" / checkpoint / "zero_to_fp32.py"
        command = [sys.executable, str(script), str(script.parent), str(tmp_path / "z2f"), "--tag", "deepspeed",
                   "--safe_serialization"]  # fmt: skip
        subprocess.run(command, env=ENV, check=True, capture_output=True, timeout=300)
        converted = load_file(str(tmp_path / "z2f" / "model.safetensors"))
        parameters = {name for name, _ in load_consolidated(out).named_parameters()}
        assert parameters <= set(converted)
        for key, value in ((k, v) for k, v in final.items() if k in converted):
            torch.testing.assert_close(converted[key], value.float(), rtol=0, atol=0, msg=key)


def launch(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_on_another_number_of_ranks(demo_root, tmp_path, reference):
    folder = tmp_path / "run"
    two_ranks = write(tmp_path, "two", tiny_overrides(demo_root, folder, *STRATEGIES["fsdp"], "data.batch_size=2",
                                                      "optimization.epochs=1"))  # fmt: skip
    launch([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "harness/train.py",
            "--config", str(two_ranks)], tmp_path)  # fmt: skip
    one_rank = write(tmp_path, "one", tiny_overrides(demo_root, folder, *STRATEGIES["fsdp"], "data.batch_size=4",
                                                     "optimization.epochs=2"))  # fmt: skip
    done = launch([sys.executable, "harness/train.py", "--config", str(one_rank)], tmp_path)
    assert "resumed from" in done.stderr
    # DCP resharded 2 -> 1: the second epoch (one rank, batch 4) equals the reference's.
    assert losses(folder, 0)[6:] == pytest.approx(reference[6:], rel=1e-5, abs=1e-6)


def assert_bf16_losses(folder: Path, reference: list[float]) -> None:
    """The two ranks' mean losses of a bf16 run are near the fp32 reference's, yet not them.

    Every strategy in fp32 gives the reference within 1e-5
    (test_strategy_matches_single_process_and_resumes), so a run that silently computed in fp32
    fails the second check: bf16's 8-bit mantissa moves a loss by far more than 1e-4.
    """
    global_losses = [(a + b) / 2 for a, b in zip(losses(folder, 0), losses(folder, 1))]
    assert global_losses == pytest.approx(reference[:6], rel=0.05), "bf16 within a small tolerance of fp32"
    gap = max(abs(a - b) / abs(b) for a, b in zip(global_losses, reference))
    assert gap > 1e-4, f"bf16 really computed in bf16: the losses are within {gap:.1e} of the fp32 reference's"


@pytest.mark.slow
def test_real_deepspeed_launcher_with_bf16(demo_root, tmp_path, reference):
    folder = tmp_path / "run"
    config = write(tmp_path, "ds", tiny_overrides(demo_root, folder, *STRATEGIES["zero2"], "data.batch_size=2",
                                                  "optimization.epochs=1", "meta.dtype=bfloat16"))  # fmt: skip
    launcher = Path(sys.executable).with_name("deepspeed")
    launch([str(launcher), "--num_gpus", "2", "harness/train.py", "--config", str(config)], tmp_path)
    assert_bf16_losses(folder, reference)
    # DeepSpeed's own bf16 mode, not autocast alone: its engine holds the parameters in bf16 (the
    # fp32 master copy lives in its optimizer) and saves them so. It casts parameters only: the
    # fixed sin-cos table, a buffer, stays fp32.
    tag = (folder / "checkpoints" / "latest").read_text().strip()
    saved = torch.load(folder / "checkpoints" / tag / "deepspeed" / "mp_rank_00_model_states.pt", map_location="cpu",
                       weights_only=True)["module"]  # fmt: skip
    wide = sorted(key for key, value in saved.items() if value.is_floating_point() and value.dtype != torch.bfloat16)
    assert wide == ["encoder.pos_embed"], f"DeepSpeed held these outside bf16: {wide}"


@pytest.mark.slow
def test_fsdp_bf16_under_torchrun(demo_root, tmp_path, reference):
    folder = tmp_path / "run"
    config = write(tmp_path, "bf16", tiny_overrides(demo_root, folder, *STRATEGIES["fsdp"], "data.batch_size=2",
                                                    "optimization.epochs=1", "meta.dtype=bfloat16"))  # fmt: skip
    launch([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "harness/train.py",
            "--config", str(config)], tmp_path)  # fmt: skip
    assert_bf16_losses(folder, reference)


def test_resuming_with_another_strategy_is_a_clear_error(demo_root, tmp_path):
    folder = tmp_path / "run"
    Trainer(load_config(None, tiny_overrides(demo_root, folder, "optimization.ipe=1", "optimization.epochs=1"))).fit()
    config = write(tmp_path, "fsdp", tiny_overrides(demo_root, folder, *STRATEGIES["fsdp"], "optimization.epochs=2"))
    done = subprocess.run([sys.executable, "harness/train.py", "--config", str(config)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode != 0
    assert "written by distributed.strategy=single" in done.stderr and "harness.consolidate" in done.stderr


@pytest.mark.slow
def test_ddp_trains_on_shards_with_equal_steps_per_rank(demo_root, demo_shards, tmp_path):
    folder = tmp_path / "run"
    shards = ("data.datasets=[]", "data.val_datasets=[]", f"data.shards=[{demo_shards / 'train/manifest.json'}]",
              f"data.val_shards=[{demo_shards / 'val/manifest.json'}]", "data.num_workers=2")  # fmt: skip
    config = write(tmp_path, "ddp", tiny_overrides(demo_root, folder, *STRATEGIES["ddp"], *shards, "data.batch_size=3",
                                                   "optimization.epochs=1"))  # fmt: skip
    launch([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "harness/train.py",
            "--config", str(config)], tmp_path)  # fmt: skip
    assert len(losses(folder, 0)) == len(losses(folder, 1)) == 24 // (2 * 3)
    with open(folder / "epochs.csv", newline="") as handle:
        assert [int(row["val_count"]) for row in csv.DictReader(handle)] == [8], "each val clip once over ranks"


def assert_a_nan_step_was_skipped_on_every_rank(results: list[dict]) -> None:
    """Rank 1's loss was NaN at one step (driver.py ``--nan``): every rank skipped that step."""
    for result in results:
        assert result["skipped_steps"] == 1 and result["steps"] == 6, "both ranks skipped the same one step"
        assert result["before"] == result["after"], "the skipped step changed no weight"
        assert result["ema_before"] == result["ema_after"], "nor the average of the weights"
        assert result["before"] != result["final"], "the other steps trained"
    assert results[0]["final"] == results[1]["final"], "ranks still hold the same weights"
