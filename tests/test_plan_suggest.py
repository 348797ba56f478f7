"""``harness.plan --suggest``: the layout search and what it prints (formulas only here; the
simulator's agreement with the formulas is tests/parallel/test_simulate.py's)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import load_config
from harness.parallel.layouts import collectives, layouts
from harness.plan.cli import main
from harness.plan.memory import GIB, ModelCounts, count_parameters
from harness.plan.simulate import Hardware
from harness.plan.suggest import CHECKPOINTING, COMMENT_START, as_configured, candidates, config_comment
from tests.deadline import time_left

REPO = Path(__file__).resolve().parent.parent
VITG = str(REPO / "configs" / "vitg16_finetune.yaml")


@pytest.fixture(scope="module")
def vitg():
    config = load_config(VITG)
    return config, count_parameters(config, 174)


@pytest.mark.parametrize(("nodes", "before", "after"), [(128, 0.16, 0.40), (512, 0.09, 0.35)])
def test_vitg_at_1024_and_4096_h100s_reaches_the_target_mfu_without_a_larger_batch(vitg, nodes, before, after):
    # the "done when": 8 H100s a node, 3600/400 Gbit/s (the defaults)
    config, counts = vitg
    hardware = Hardware("h100", 8, nodes)
    found, tried = candidates(config, counts, hardware, 80.0, 0.1)
    best = found[0]
    assert best.micro_batch * best.accumulation == 2  # the shipped per-GPU batch: the global batch is the same
    assert best.memory < 0.9 * 80 * GIB and best.sim.mfu >= after, best
    # what the issue measured: the shipped config under plain FSDP (its checkpointing on)
    shipped = as_configured(load_config(VITG, ["distributed.strategy=fsdp"]), counts, hardware)
    assert shipped.layout.name == "fsdp" and shipped.sim.mfu < before
    assert best.layout.row in ("hsdp", "zero3+hpz") and best.checkpointing == "off"
    assert tried == len(layouts(hardware.world, 8)) * 2 * len(CHECKPOINTING)


def test_the_best_plain_layout_is_hybrid_sharding_inside_a_node(vitg):
    config, counts = vitg
    found, _ = candidates(config, counts, Hardware("h100", 8, 128), 80.0, 0.1)
    torch_native = [c for c in found if c.layout.simulable]
    assert torch_native[0].layout.name == "hsdp 128 x 8" and torch_native[0].sim.mfu >= 0.40
    fsdp = min((c for c in found if c.layout.name == "fsdp"), key=lambda c: c.sim.step_s)
    # the same traffic over the network instead of NVLink: plain FSDP is communication-bound
    assert fsdp.sim.inter_s > 3 * torch_native[0].sim.inter_s and fsdp.sim.step_s > fsdp.sim.compute_s


def test_less_memory_keeps_only_what_fits_and_then_checkpoints(vitg):
    config, counts = vitg
    roomy, _ = candidates(config, counts, Hardware("h100", 8, 128), 80.0, 0.1)
    tight, _ = candidates(config, counts, Hardware("h100", 8, 128), 8.0, 0.1)
    assert len(tight) < len(roomy) and all(c.memory <= 0.9 * 8 * GIB for c in tight)
    assert any(c.checkpointing != "off" for c in tight[:5])


def test_a_frozen_encoder_is_not_offered_checkpointing():
    config = load_config(str(REPO / "configs" / "vitl16_probe.yaml"))
    found, tried = candidates(config, count_parameters(config, 174), Hardware("h100", 8, 2), 80.0, 0.1)
    assert found and {c.checkpointing for c in found} == {"off"}


def test_every_suggestion_is_overrides_the_config_accepts(vitg):
    config, counts = vitg
    found, _ = candidates(config, counts, Hardware("h100", 8, 16), 80.0, 0.1)
    for candidate in found[:10] + found[-3:]:
        tried = load_config(VITG, candidate.overrides())
        assert tried.data.batch_size == candidate.micro_batch
        assert tried.optimization.accumulation_steps == candidate.accumulation
        assert tried.model.use_activation_checkpointing == CHECKPOINTING[candidate.checkpointing][0]


def test_suggest_prints_the_table_with_the_overrides(capsys):
    assert main(["--config", VITG, "--gpus", "8", "--nodes", "128", "--suggest", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "suggestions for 1024 x h100 (128 node(s) x 8), global batch 2048:" in out
    assert "(as configured: ddp)" in out and "   3. distributed.strategy=" in out and "   4. " not in out
    assert "formulas" in out and "data.batch_size=" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--global-batch", "1000"], "--global-batch 1000 does not split over 16 GPUs"),
        (["--gpu-memory", "0.5"], "nothing fits in 0.5 GiB per GPU"),
    ],
)
def test_what_cannot_be_suggested_is_one_line(argv, message, capsys):
    assert main(["--config", VITG, "--gpus", "8", "--nodes", "2", "--suggest", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("vit*.yaml")), ids=lambda path: path.stem)
def test_each_shipped_config_carries_what_suggest_picks_today(path):
    # scripts/suggest_comments.py writes the comment; a planner change that moves a pick fails here
    config = load_config(path)
    comment = config_comment(config, count_parameters(config, config.meta.num_classes or 400))
    lines = path.read_text().splitlines()
    assert COMMENT_START in lines, f"{path.name}: no suggestion comment (python scripts/suggest_comments.py)"
    start = lines.index(COMMENT_START)
    assert lines[start : start + len(comment)] == comment, f"{path.name}: run python scripts/suggest_comments.py"
    assert load_config(path, comment[4].lstrip("# ").split()).data.batch_size == config.data.batch_size


@pytest.mark.slow
def test_the_suggested_layout_simulated_at_1024_h100s_keeps_40_percent():
    # the "done when" with the simulator: the best FSDP/HSDP candidate runs as the real FSDP2 code
    # (1024 fake ranks, ViT-g on fake tensors) and its recorded memory and collectives replace the
    # formulas' (the issue's "today": 15%)
    command = [sys.executable, "-m", "harness.plan", "--config", VITG, "--gpus", "8", "--nodes", "128",
               "--suggest", "--simulate", "--top", "1"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=time_left())
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("hsdp 128 x 8"))
    assert row.endswith("simulated"), done.stdout
    mfu = int(row.split("%")[0].split()[-1])
    memory = float(re.search(r"(?:off|block)\s+([\d.]+)", row).group(1))
    assert mfu >= 40 and memory < 0.9 * 80, row


def test_deepspeed_layouts_send_what_deepspeed_sends_between_nodes():
    # bytes per parameter crossing nodes per micro-step, bf16 (DeepSpeed 0.19.8's accounting,
    # harness/parallel/layouts.py): ZeRO-3 gathers twice and reduce-scatters, all across; hpZ
    # gathers backward inside the node; ZeRO++ sends int8 weights and 1/8 of the int4 gradients
    counts = ModelCounts(total=10**9, trainable=10**9, largest_unit=10**7, depth=39, width=1024, mlp_ratio=4.0)
    hardware = Hardware("h100", 8, 16)
    across = {}
    for layout in layouts(hardware.world, 8):
        if layout.row.startswith("zero3"):
            traffic = collectives(layout, counts, hardware, 2, 4)
            across[layout.name] = sum(t.bytes for t in traffic if t.nodes > 1) / counts.total
    assert across == pytest.approx({"zero3": 6.0, "zero3+hpz 8": 4.0, "zero++ 8": 1.0 + 0.5 / 8})
