"""Process-group environment parsing, strategy selection and DeepSpeed JSON reconciliation."""

import json
from pathlib import Path

import pytest

from harness.core.errors import UserError
from harness.parallel.build import build_strategy
from harness.parallel.deepspeed import DeepSpeedConfigError, resolve_deepspeed_config
from harness.parallel.distributed import ProcessInfo, process_info

REPO = Path(__file__).resolve().parents[2]


def test_process_info_reads_torchrun_slurm_and_nothing():
    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert process_info(torchrun) == ProcessInfo(3, 8, 1, "torchrun", 4)
    assert process_info({**torchrun, "LOCAL_WORLD_SIZE": ""}).local_world_size is None, "unknown, not guessed"
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "n[1-2]",
             "SLURM_TASKS_PER_NODE": "8(x2)"}  # fmt: skip
    assert process_info(slurm) == ProcessInfo(5, 16, 1, "slurm", 8)
    assert process_info({**slurm, "SLURM_TASKS_PER_NODE": "9,7"}).local_world_size is None, "uneven nodes"
    assert process_info({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == ProcessInfo()
    both = {**slurm, "RANK": "0", "WORLD_SIZE": "2"}
    assert process_info(both).source == "torchrun", "torchrun under srun: the launcher's view wins"


def test_slurm_tasks_per_node_are_the_steps_not_the_allocations():
    # What SLURM 22.05 set for `srun -n 2` inside `sbatch --nodes=2 --ntasks-per-node=2` (one task
    # per node): SLURM_NTASKS_PER_NODE is the allocation's, inherited; the step's variables are right.
    step = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0", "SLURM_NTASKS_PER_NODE": "2",
            "SLURM_TASKS_PER_NODE": "1(x2)", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}  # fmt: skip
    assert process_info(step).local_world_size == 1
    # plain `srun` in that job (4 tasks): every variable says 2
    whole = {**step, "SLURM_NTASKS": "4", "SLURM_TASKS_PER_NODE": "2(x2)", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
    assert process_info(whole).local_world_size == 2
    assert process_info({**step, "SLURM_STEP_TASKS_PER_NODE": "2,1"}).local_world_size is None, "uneven step"
    only = {key: value for key, value in step.items() if "TASKS_PER_NODE" not in key or key.startswith("SLURM_N")}
    assert process_info(only).local_world_size == 2, "SLURM_NTASKS_PER_NODE when nothing else says"


def test_several_processes_never_become_one(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="started 2 processes"):
        build_strategy("single", "cpu", "float32")


def test_missing_rendezvous_is_an_error_not_a_fallback(monkeypatch):
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="MASTER_ADDR, MASTER_PORT not set"):
        build_strategy("ddp", "cpu", "float32")


def resolve(base, **kwargs):
    args = {"micro_batch": 4, "accumulation": 2, "world_size": 8, "clip_grad": 1.0, "dtype": "bfloat16"}
    return resolve_deepspeed_config(base, **{**args, **kwargs})


@pytest.mark.parametrize("name", ["zero1", "zero2", "zero3", "zero3_offload"])
def test_shipped_deepspeed_configs_are_filled_from_the_harness(name):
    config = resolve(REPO / "ds_configs" / f"{name}.json")
    assert config["train_micro_batch_size_per_gpu"] == 4 and config["gradient_accumulation_steps"] == 2
    assert config["train_batch_size"] == 64 and config["gradient_clipping"] == 1.0
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False
    if name == "zero3_offload":
        assert config["zero_force_ds_cpu_optimizer"] is False


@pytest.mark.parametrize(
    "base, message",
    [
        ({"train_micro_batch_size_per_gpu": 8}, "train_micro_batch_size_per_gpu=8 contradicts data.batch_size=4"),
        ({"gradient_accumulation_steps": 1}, "contradicts optimization.accumulation_steps=2"),
        ({"gradient_clipping": 0.5}, "gradient_clipping=0.5 contradicts optimization.clip_grad=1.0"),
        ({"fp16": {"enabled": True}}, "fp16.enabled=True contradicts meta.dtype='bfloat16'"),
        ({"optimizer": {"type": "Adam"}}, "has 'optimizer'"),
        ({"train_batch_size": 32}, "train_batch_size=32 contradicts"),
        ({"bf16": {"check_grad_overflow": False}}, "bf16.check_grad_overflow=false would let a NaN/Inf step"),
        ({"zero_optimization": {"compute_grad_norm": False}}, "compute_grad_norm=false hides NaN/Inf gradients"),
    ],
)
def test_contradicting_deepspeed_json_names_both_values(base, message, tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(base))
    with pytest.raises(DeepSpeedConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        resolve(path)
    assert str(path) in str(error.value)


def test_deepspeed_fp16_on_a_device_without_it_is_one_clear_line(monkeypatch):
    import torch

    import harness.parallel.deepspeed as deepspeed_strategy
    from harness.parallel.precision import Precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(deepspeed_strategy, "fp16_supported", lambda: False)
    with pytest.raises(DeepSpeedConfigError, match="meta.dtype=float16 under DeepSpeed: DeepSpeed refuses fp16"):
        deepspeed_strategy.DeepSpeedStrategy(cpu, Precision("float16", cpu), 0, 1, REPO / "ds_configs/zero2.json")
    monkeypatch.setattr(deepspeed_strategy, "fp16_supported", lambda: True)
    deepspeed_strategy.DeepSpeedStrategy(cpu, Precision("float16", cpu), 0, 1, REPO / "ds_configs/zero2.json")


def test_deepspeed_bf16_computes_in_bf16_with_no_autocast_under_zero2_and_zero3(tmp_path, monkeypatch):
    # On a GPU, DeepSpeed switches the CUDA autocast off inside its engine ("enabled outside
    # DeepSpeed but disabled within"): ZeRO-2's bf16 weights then met the fp32 clips at the patch
    # embedding, and ZeRO-3 built block by block (the meta-device start-up) kept every weight in fp32
    # and computed in fp32 (bench/gpu_check.py on an H200). A CPU autocast is left on there, so the
    # model is called here with no autocast at all, as on that GPU.
    import torch
    import torch.distributed as dist

    from harness.config import load_config
    from harness.training.assemble import build_strategy_from_config, prepare_model
    from harness.training.optim import build_optimizer

    for name, value in {"DS_ACCELERATOR": "cpu", "LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for stage, dtype in (("zero2", "bfloat16"), ("zero3", "bfloat16"), ("zero3", "float32")):
            config = load_config(None, [
                "model.model_name=vit_tiny", "model.depth=2", "data.crop_size=32", "data.dataset_fpcs=[4]",
                "data.batch_size=2", "meta.finetune_encoder=true", f"meta.dtype={dtype}", "meta.device=cpu",
                "distributed.strategy=deepspeed", f"distributed.deepspeed.config={REPO / 'ds_configs'}/{stage}.json",
            ])  # fmt: skip
            strategy = build_strategy_from_config(config)
            optimization = config.optimization
            model, _ = prepare_model(
                config, strategy, 4, lambda m, o=optimization, s=strategy: build_optimizer(o, m, s.device)
            )
            expected = getattr(torch, dtype)
            held = {getattr(p, "ds_tensor", p).dtype for p in model.module.parameters()}
            assert held == {expected}, f"{stage} {dtype}: weights held in {held}"
            logits = model(torch.randn(2, 1, 3, 4, 32, 32))
            assert logits.dtype == torch.float32 and torch.isfinite(logits).all(), f"{stage} {dtype}"
    finally:
        dist.destroy_process_group()
