"""The memory planner: parameter counts of the real model, formulas against measured bytes."""

from pathlib import Path

import pytest
import torch

from harness.config import load_config
from harness.plan import count_parameters, main, model_state_bytes, plan
from harness.training import Trainer
from tests.conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[2]


def test_counts_and_single_process_bytes_match_a_real_training_step(demo_root, tmp_path):
    config = load_config(
        None, tiny_overrides(demo_root, tmp_path / "run", "optimization.ipe=1", "optimization.epochs=1")
    )
    trainer = Trainer(config)
    counts = count_parameters(config, trainer.num_classes)
    assert counts.total == sum(p.numel() for p in trainer.model.parameters())
    assert counts.largest_unit == sum(p.numel() for p in trainer.model.encoder.blocks[0].parameters())
    batch = next(iter(trainer.train_loader))
    loss = torch.nn.functional.cross_entropy(trainer.model(batch.clips.float()), batch.labels)
    loss.backward()
    trainer.optimizer.step()  # Adam state now exists; gradients are still held
    measured = {
        "weights": sum(p.numel() * p.element_size() for p in trainer.model.parameters()),
        "gradients": sum(p.grad.numel() * p.grad.element_size() for p in trainer.model.parameters()),
        "optimizer": sum(
            t.numel() * t.element_size() for s in trainer.optimizer.state.values() for t in s.values() if t.dim() > 0
        ),
    }
    weights, gradients, optimizer, gathered = model_state_bytes("single", counts, 1, "float32")
    assert (weights, gradients, optimizer, gathered) == (
        measured["weights"],
        measured["gradients"],
        measured["optimizer"],
        0,
    )


def test_sharded_strategies_divide_by_ranks(demo_root, tmp_path):
    config = load_config(REPO / "configs" / "vitl16_finetune.yaml")
    rows = {row.strategy: row for row in plan(config, 16, 174)}
    assert rows["fsdp"].model_states == pytest.approx(rows["ddp"].model_states / 16)
    assert rows["zero3"].model_states < rows["zero2"].model_states < rows["zero1"].model_states + 1
    assert rows["zero3+offload"].optimizer == 0 and rows["fsdp+offload"].total < rows["fsdp"].total
    assert rows["ddp"].activations == rows["zero3"].activations > 0


def test_plan_command_prints_every_strategy(capsys):
    assert main(["--config", str(REPO / "configs" / "vitg16_finetune.yaml"), "--gpus", "8", "--nodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "vit_giant_xformers: 1034M parameters" in out and "16 GPUs" in out
    assert all(name in out for name in ("ddp", "fsdp", "zero1", "zero2", "zero3", "zero3+offload"))


def test_an_encoder_pass_over_several_micro_batches_counts_their_clips_and_tokens():
    from harness.plan import activation_bytes

    probe = ["meta.finetune_encoder=false", "data.batch_size=4", "optimization.accumulation_steps=4"]
    config = load_config(REPO / "configs" / "vitl16_probe.yaml", probe)
    counts = count_parameters(config, 400)
    one = activation_bytes(config, counts)
    grouped = {size: activation_bytes(load_config(REPO / "configs" / "vitl16_probe.yaml",
                                                  [*probe, f"data.encoder_batch_size={size}"]), counts)
               for size in (8, 16)}  # fmt: skip
    assert one < grouped[8] < grouped[16]
    data = config.data
    clips = data.batch_size * data.num_clips * 3 * max(data.dataset_fpcs) * data.crop_size**2 * 4  # fp32
    assert grouped[16] > 2 * 4 * clips  # the 4 micro-batches' clips and their joined copy, at least
