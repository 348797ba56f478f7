"""``harness.plan --suggest``: the layout search and what it prints (formulas only here; the
simulator's agreement with the formulas is tests/parallel/test_simulate.py's)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import load_config
from harness.parallel.layouts import collectives, configured_layout, layouts
from harness.plan.cli import main
from harness.plan.memory import GIB, ModelCounts, count_parameters
from harness.plan.simulate import Hardware
from harness.plan.suggest import CHECKPOINTING, COMMENT_START, as_configured, candidates, config_comment
from tests.deadline import time_left

REPO = Path(__file__).resolve().parent.parent
VITG = str(REPO / "configs" / "vitg16_finetune.yaml")
#: the shipped ViT configs scripts/suggest_comments.py writes a comment into
SHIPPED = sorted([*(REPO / "configs").glob("vit*.yaml"), *(REPO / "configs").glob("vjepa21_*.yaml")])


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
        assert tried.model.use_activation_checkpointing == bool(candidate.every)
        # the layout a run of these overrides has is the candidate's
        assert configured_layout(tried.distributed, 128, 8) == candidate.layout


def test_suggest_prints_the_table_with_the_overrides(capsys):
    assert main(["--config", VITG, "--gpus", "8", "--nodes", "128", "--suggest", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "suggestions for 1024 x h100 (128 node(s) x 8), global batch 2048:" in out
    assert "   0. as configured" in out and "   3. distributed.strategy=" in out and "   4. " not in out
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
    # exit status 2 is entry_point's for a UserError (a bug would be 1 with a traceback); the last
    # line says what is wrong (in this process an earlier test's closed log stream may add noise)
    assert message in err[-1] and err[-1].startswith("error: ")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.stem)
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


def test_hpz_gathers_across_nodes_once_a_step_however_many_micro_batches():
    # DeepSpeed reads hpZ's secondary partition in every gather after the first forward
    counts = ModelCounts(total=10**9, trainable=10**9, largest_unit=10**7, depth=39, width=1024, mlp_ratio=4.0)
    hardware = Hardware("h100", 8, 16)
    named = {layout.name: layout for layout in layouts(hardware.world, 8)}

    def across(name: str, accumulation: int) -> float:
        traffic = collectives(named[name], counts, hardware, 2, 4, accumulation)
        return sum(t.bytes for t in traffic if t.nodes > 1) / counts.total

    assert across("zero3", 2) == pytest.approx(12.0)  # everything, twice
    assert across("zero3+hpz 8", 2) == pytest.approx(2.0 + 2 * 2.0)  # one forward gather, two reductions


def test_any_divisor_is_a_group_and_the_slowest_group_sets_the_link():
    names = [layout.name for layout in layouts(12, 6)]
    assert names[:3] == ["ddp", "fsdp", "hsdp 2 x 6"]  # a node's group first
    assert {"hsdp 6 x 2", "hsdp 4 x 3", "hsdp 3 x 4"} <= set(names)
    counts = count_parameters(load_config(None, ["model.model_name=vit_tiny", "model.depth=2"]), 10)
    four = next(layout for layout in layouts(12, 6) if layout.name == "hsdp 3 x 4")
    gathers = next(t for t in collectives(four, counts, Hardware("h100", 6, 2), 2, 4) if t.name == "all_gather")
    assert gathers.nodes == 2  # ranks 4-7 straddle the two nodes of 6


def test_a_group_size_the_world_does_not_split_into_is_the_runs_one_line(capsys):
    assert main(["--config", VITG, "--gpus", "8", "--nodes", "2", "--suggest", "distributed.strategy=fsdp",
                 "distributed.fsdp.shard_group_size=3"]) == 2  # fmt: skip
    assert "16 ranks do not split into groups of 3" in capsys.readouterr().err
    assert main(["--config", VITG, "--gpus", "6", "--nodes", "2", "--suggest", "--top", "1",
                 "distributed.strategy=fsdp", "distributed.fsdp.shard_group_size=auto"]) == 0  # fmt: skip
    assert "hsdp 2 x 6" in capsys.readouterr().out


def test_as_configured_takes_the_same_global_batch_and_its_own_checkpointing(vitg):
    config, counts = vitg
    config = load_config(VITG, ["distributed.strategy=fsdp", "model.activation_checkpointing_every=4"])
    mine = as_configured(config, counts, Hardware("h100", 8, 128), global_batch=8192)
    assert (mine.micro_batch, mine.accumulation, mine.every, mine.layout.name) == (2, 4, 4, "fsdp")
    assert mine.checkpointing == "every 4th block"
    deepspeed = "distributed.strategy=deepspeed"
    zero2 = load_config(VITG, [deepspeed, "distributed.deepspeed.config=ds_configs/zero2.json"])
    assert as_configured(zero2, counts, Hardware("h100", 8, 128)) is None  # not a layout --suggest times
    hpz = load_config(VITG, [deepspeed, "distributed.deepspeed.config=ds_configs/zero3_hpz.json"])
    assert as_configured(hpz, counts, Hardware("h100", 8, 128)).layout.name == "zero3+hpz 8"


def test_plain_fsdps_overrides_clear_a_group_size_the_config_set(vitg):
    plain = next(layout for layout in layouts(128, 8) if layout.name == "fsdp")
    config = load_config(VITG, ["distributed.fsdp.shard_group_size=8", *plain.overrides])
    assert config.distributed.fsdp.shard_group_size is None


def test_a_candidate_the_config_refuses_is_not_suggested():
    # data.encoder_batch_size must be a multiple of the micro-batch: 64 x 1 is not offered
    config = load_config(str(REPO / "configs" / "vitl16_probe.yaml"),
                         ["data.encoder_batch_size=32", "optimization.accumulation_steps=4"])  # fmt: skip
    found, _ = candidates(config, count_parameters(config, 174), Hardware("h100", 8, 2), 80.0, 0.1)
    assert found and all(32 % c.micro_batch == 0 or c.micro_batch % 32 == 0 for c in found)
    for candidate in found[:5]:
        load_config(str(REPO / "configs" / "vitl16_probe.yaml"), ["data.encoder_batch_size=32", *candidate.overrides()])


def test_the_planner_knows_vjepa21s_vit_g_2b():
    # V-JEPA 2.1's ViT-G (depth 48, width 1664, 26 heads) fine-tuned at 384 px: its parameters are
    # the family's own count (image path and level norms included) and 1024 GPUs keep 40% MFU
    from harness.models import FAMILIES, EncoderSettings

    overrides = ["model.model_name=vjepa2_1_vit_gigantic_384", "model.use_rope=false", "model.uniform_power=false",
                 "data.crop_size=384"]  # fmt: skip
    config = load_config(VITG, overrides)
    counts = count_parameters(config, 400)
    encoder = FAMILIES["vjepa2.1"].create("vjepa2_1_vit_gigantic_384", EncoderSettings(img_size=384), {}, "meta")
    assert (counts.depth, counts.width) == (48, 1664)
    assert counts.largest_unit == sum(p.numel() for p in encoder.blocks[0].parameters())
    assert counts.total - sum(p.numel() for p in encoder.parameters()) < 0.05 * counts.total  # the probe
    assert counts.total > 1.8e9
    found, _ = candidates(config, counts, Hardware("h100", 8, 128), 80.0, 0.1)
    assert found and found[0].sim.mfu >= 0.40, found[0]
