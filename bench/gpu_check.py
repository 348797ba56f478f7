"""The GPU check: one command that checks and measures the CUDA paths on one GPU machine.

    python bench/gpu_check.py              # on a GPU machine: ViT-L/16, 16x224 (about 6-8 minutes)
    python bench/gpu_check.py --dry-run    # anywhere: the same code at toy sizes on the CPU
    python bench/gpu_check.py --quick      # the step table without the torch.compile variants

What it checks and measures, in order, each a row of the table it prints (markdown, ready for
``bench/RESULTS.md``):

1. SDPA's flash and memory-efficient attention kernels, forward and backward, against the math
   path computed in fp32 (bf16 inputs on the GPU; on the CPU the kernels the build has).
2. bf16 autocast: the classifier's logits come out fp32 and close to an fp32 run's.
3. The data pipeline's device normalisation of uint8 clips equals the CPU reference; encoders
   Meta's own code built (V-JEPA 2.1 at every level and on the image path, area attention at
   every block: tests/fixtures) give Meta's outputs on the device (fp32, fused attention).
4. One training step (fwd + bwd + AdamW) of the model, median of 5 after warm-up, and its MFU
   against the device's bf16 peak, under ``single``, ``fsdp`` (1 rank), DeepSpeed ZeRO-2 and
   ZeRO-3 (1 rank), each without and with activation checkpointing, and (unless ``--quick``) with
   per-block ``torch.compile``; then hybrid sharding (``hsdp``, without and with checkpointing;
   ``hsdp_offload``, with ``distributed.fsdp.cpu_offload``), see below.
5. The frozen-encoder probe step's fast path (bench/bench_frozen.py's comparisons, bf16, one head):
   frozen weights held in bf16, one encoder pass over two micro-batches, both; each against the
   path without it, stepping in turn.
6. The demo trained end to end on the device (``configs/demo.yaml``, 2 epochs with a shortened
   schedule; one 2-step epoch in the dry run).

HSDP on one GPU (the ``hsdp`` rows): one process is a world of 1, where the harness makes any
``shard_group_size`` plain FSDP (a group as large as the world), so the check builds the 1 x 1
``(replicate, shard)`` mesh itself. What one GPU shows: the 2-D mesh builds under NCCL (every
parameter a DTensor on it) and a step runs on it: the meta-device build, the gradient reduction
in two stages (reduce-scatter in the group, all-reduce between groups), the clipping norm,
AdamW; with offload too (shards in pinned host memory beside a CUDA mesh, which the CPU tests
cannot reach); and its step time beside plain FSDP's ("x1.00 of fsdp's step": neither sends
anything here, so a gap is the 2-D layout's own overhead).

What only several multi-GPU nodes can show, none of it measured yet: the traffic split (HSDP
all-gathers and reduce-scatters over NVLink inside a node, and per step each rank sends about
2 x its gradient shard, the model's gradient bytes / GPUs per node, between nodes; plain FSDP
runs all its collectives, about 3 x the model's bytes per rank per step, in rings that span the
nodes), the step time and MFU gained where the network between nodes is slower than NVLink, and
the memory it costs per GPU (model states / GPUs per node instead of / all GPUs). To measure: the same job
on 2+ nodes through ``slurm/train.sbatch`` with ``distributed.strategy=fsdp`` and then with
``distributed.fsdp.shard_group_size=auto`` added, comparing ``step_time`` / ``mfu`` /
``memory_gb`` in ``log_r0.csv`` and the bytes on the NICs (or ``NCCL_DEBUG=INFO``'s rings).

It re-launches itself under ``torchrun`` with one process, so the strategies' process groups are
real. A failed check is a row marked FAIL and the exit status is 1; nothing stops the rest. A
strategy whose package is not installed (DeepSpeed: ``pip install 'harness[deepspeed]'``) is one
row marked "not installed", which is no failure.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ROWS: list[tuple[str, str, str]] = []  # (check, result, detail)


NOT_INSTALLED = "not installed"  #: the result of a check whose optional package is missing (no failure)


def row(check: str, ok: bool | str, detail: str) -> None:
    """Record and print one check's result: ``ok``, ``FAIL``, or a status such as :data:`NOT_INSTALLED`."""
    result = ok if isinstance(ok, str) else "ok" if ok else "FAIL"
    ROWS.append((check, result, detail))
    print(f"{check}: {result} ({detail})", flush=True)


def guarded(check: str, function, *args) -> None:
    """Run one check; an exception becomes a FAIL row with its last line."""
    try:
        function(*args)
    except Exception as error:  # a check that breaks is reported, and the rest still run
        traceback.print_exc()
        row(check, False, f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}")


def check_attention(device: torch.device, dry: bool) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dtype = torch.float32 if dry else torch.bfloat16
    generator = torch.Generator().manual_seed(0)
    shape = (2, 4, 64, 32) if dry else (2, 16, 1568, 64)  # ViT-L 16x224: 1568 tokens, 16 heads of 64
    q, k, v = (torch.randn(shape, generator=generator).to(device, dtype).requires_grad_() for _ in range(3))
    grad = torch.randn(shape, generator=generator).to(device, dtype)
    reference = [t.detach().float().requires_grad_() for t in (q, k, v)]
    with sdpa_kernel([SDPBackend.MATH]):
        expected = F.scaled_dot_product_attention(*reference)
    expected.backward(grad.float())
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        for t in (q, k, v):
            t.grad = None
        try:
            with sdpa_kernel([backend]):
                out = F.scaled_dot_product_attention(q, k, v)
                out.backward(grad)
        except RuntimeError as error:
            row(f"sdpa {backend.name.lower()}", dry, f"not available here: {str(error).splitlines()[0][:80]}")
            continue
        errors = [(out.float() - expected).abs().max().item()]
        errors += [(t.grad.float() - r.grad).abs().max().item() for t, r in zip((q, k, v), reference)]
        kind = str(dtype).removeprefix("torch.")
        row(f"sdpa {backend.name.lower()} fwd+bwd vs math", max(errors) <= tolerance,
            f"max abs diff {max(errors):.1e} ({kind}, tolerance {tolerance:g})")  # fmt: skip


FIXTURES = REPO / "tests" / "fixtures"
#: fp32 on the device against Meta's CPU outputs: fused attention kernels sum in another order
FIXTURE_TOLERANCE = 1e-4


def check_metas_fixtures(device: torch.device) -> None:
    """Encoders Meta's own code built (tests/fixtures: V-JEPA 2.1, every hierarchical level on the
    video and image paths; area attention, every block, grids its splits divide and do not) on the
    device in fp32 with the fused attention kernels: the largest difference from Meta's outputs."""
    from harness.models import create_encoder, load_encoder
    from harness.models.vit_family import AREA_OPTIONS

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 here
    try:
        worst: dict[str, float] = {}
        record = torch.load(FIXTURES / "vjepa21" / "outputs.pt")["encoders"]
        for name, encoder_record in record.items():
            settings = encoder_record["settings"]
            for case_record in encoder_record["cases"].values():
                options = {"interpolate_rope": settings["interpolate_rope"],
                           "modality_embedding": settings["modality_embedding"],
                           "image_patch_embed": settings["img_temporal_dim_size"] == 1,
                           "use_silu": settings["use_silu"], **case_record["overrides"]}  # fmt: skip
                sizes = {key: settings[key] for key in ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size",
                                                        "tubelet_size")}  # fmt: skip
                encoder = create_encoder("vjepa2_1_vit_base_384", **sizes, **options)
                load_encoder(encoder, FIXTURES / "vjepa21" / f"{name}.pt")
                x = encoder_record["inputs"][case_record["input"]].float().div(64).to(device)
                with torch.no_grad():
                    levels = encoder.to(device).eval().forward_levels(x, tuple(encoder_record["hierarchical_layers"]))
                error = max(
                    (ours.cpu() - theirs).abs().max().item() for ours, theirs in zip(levels, case_record["levels"])
                )
                worst["vjepa2.1"] = max(worst.get("vjepa2.1", 0.0), error)
        record = torch.load(FIXTURES / "area_attention" / "outputs.pt")
        size_keys = ("img_size", "num_frames", "patch_size", "tubelet_size", "embed_dim", "depth", "num_heads",
                     "mlp_ratio", "use_rope", "use_silu", "uniform_power")  # fmt: skip
        for name, encoder_record in record["encoders"].items():
            settings = encoder_record["settings"]
            options = {key: settings[key] for key in AREA_OPTIONS} if settings["use_rope"] else {}
            encoder = create_encoder("vit_tiny", **{k: settings[k] for k in size_keys if k in settings}, **options,
                                     out_layers=tuple(range(settings["depth"])))  # fmt: skip
            load_encoder(encoder, FIXTURES / "area_attention" / f"{name}.pt")
            encoder = encoder.to(device).eval()
            for case_record in encoder_record["cases"].values():
                x = record["inputs"][case_record["input"]].float().div(64).to(device)
                with torch.no_grad():
                    blocks = encoder(x).cpu().chunk(settings["depth"], dim=1)
                error = max((ours - theirs).abs().max().item() for ours, theirs in zip(blocks, case_record["levels"]))
                worst["area attention"] = max(worst.get("area attention", 0.0), error)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    detail = ", ".join(f"{name} max |diff| {error:.1e}" for name, error in worst.items())
    row(
        "Meta's fixtures on the device",
        all(e <= FIXTURE_TOLERANCE for e in worst.values()) and len(worst) == 2,
        f"{detail} (fp32, fused attention; tolerance {FIXTURE_TOLERANCE:g})",
    )


def tiny_classifier(device: torch.device):
    from harness.models import AttentiveClassifier, VideoClassifier, create_encoder

    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny", img_size=32, num_frames=4, depth=2)
    return VideoClassifier(encoder, AttentiveClassifier(192, 5, num_heads=3)).to(device).eval()


def check_autocast(device: torch.device) -> None:
    model = tiny_classifier(device)
    clips = torch.randn(2, 1, 3, 4, 32, 32, device=device)
    with torch.no_grad():
        exact = model(clips)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            mixed = model(clips)
    difference = (mixed - exact).abs().max().item() / exact.abs().max().item()
    row("bf16 autocast, fp32 head", mixed.dtype == torch.float32 and difference < 5e-2,
        f"logits {str(mixed.dtype).removeprefix('torch.')}, relative difference to fp32 {difference:.1e}")  # fmt: skip


def check_normalisation(device: torch.device) -> None:
    from harness.training.evaluation import to_model_input

    clips = torch.randint(0, 256, (2, 1, 3, 4, 32, 32), dtype=torch.uint8)
    on_device = to_model_input(clips, device).cpu()
    reference = to_model_input(clips, torch.device("cpu"))
    difference = (on_device - reference).abs().max().item()
    row("uint8 normalisation on the device", difference <= 1e-5, f"max abs diff to the CPU {difference:.1e}")


#: the package each strategy needs beyond the base install, and the extra that installs it
NEEDS = {"zero2": ("deepspeed", "deepspeed"), "zero3": ("deepspeed", "deepspeed")}

STRATEGIES = {
    "single": ["distributed.strategy=single"],
    "fsdp": ["distributed.strategy=fsdp"],
    "zero2": ["distributed.strategy=deepspeed", f"distributed.deepspeed.config={REPO / 'ds_configs/zero2.json'}"],
    "zero3": ["distributed.strategy=deepspeed", f"distributed.deepspeed.config={REPO / 'ds_configs/zero3.json'}"],
    # hybrid sharding, on a 1 x 1 mesh that time_step builds (one process: see the module docstring)
    "hsdp": ["distributed.strategy=fsdp", "distributed.fsdp.shard_group_size=1"],
    "hsdp_offload": ["distributed.strategy=fsdp", "distributed.fsdp.shard_group_size=1",
                     "distributed.fsdp.cpu_offload=true"],
}  # fmt: skip
HYBRID = ("hsdp", "hsdp_offload")
STEP_SECONDS: dict[str, float] = {}  #: median step time by variant name (``fsdp +ckpt``), for the HSDP rows


def step_config(args, strategy: str, checkpointing: bool, compiled: bool):
    from harness.config import load_config

    size = ["model.model_name=vit_tiny", "model.depth=2", "data.crop_size=32", "data.dataset_fpcs=[4]",
            "data.batch_size=2"] if args.dry_run else [
            "model.model_name=vit_large", "data.crop_size=224", "data.dataset_fpcs=[16]",
            f"data.batch_size={args.batch}"]  # fmt: skip
    return load_config(None, [*size, *STRATEGIES[strategy], "data.frame_step=4", "meta.finetune_encoder=true",
                              f"meta.device={args.device}", f"meta.dtype={'float32' if args.dry_run else 'bfloat16'}",
                              f"model.use_activation_checkpointing={str(checkpointing).lower()}",
                              f"model.compile_model={str(compiled).lower()}"])  # fmt: skip


def time_step(args, strategy_name: str, checkpointing: bool, compiled: bool) -> None:
    from harness.parallel.build import build_strategy
    from harness.parallel.registry import STRATEGY_SPECS
    from harness.training.assemble import prepare_model
    from harness.training.optim import build_optimizer
    from harness.training.tracking.observability import flops_per_clip, peak_flops

    config = step_config(args, strategy_name, checkpointing, compiled)
    dist = config.distributed
    spec = STRATEGY_SPECS[dist.strategy]
    strategy = build_strategy(dist.strategy, config.meta.device, config.meta.dtype, dist.backend,
                              spec.options(dist, config.data, config.optimization))  # fmt: skip
    if strategy_name in HYBRID:  # a world of 1 is plain FSDP to the harness: the 2-D mesh by hand
        from torch.distributed.device_mesh import init_device_mesh

        strategy.mesh = init_device_mesh(strategy.device.type, (1, 1), mesh_dim_names=("replicate", "shard"))
    started = time.perf_counter()
    torch.manual_seed(0)
    model, optimizer = prepare_model(config, strategy, 400,
                                     lambda m: build_optimizer(config.optimization, m, strategy.device))  # fmt: skip
    deepspeed = dist.strategy == "deepspeed"
    data = config.data
    clips = torch.randn(data.batch_size, 1, 3, data.dataset_fpcs[0], data.crop_size, data.crop_size,
                        device=strategy.device)  # fmt: skip
    labels = torch.randint(0, 400, (data.batch_size,), device=strategy.device)

    def step() -> None:
        with strategy.precision.autocast():
            loss = F.cross_entropy(model(clips), labels)
        if deepspeed:
            model.backward(loss)
            model.step()
        else:
            loss.backward()
            strategy.optimizer_step(model, optimizer, 1.0)
            optimizer.zero_grad(set_to_none=True)

    def synchronise() -> None:
        if strategy.device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    synchronise()
    warm = time.perf_counter() - started
    times = []
    for _ in range(5):
        start = time.perf_counter()
        step()
        synchronise()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    encoder = strategy.unwrap(model).encoder
    flops = flops_per_clip(encoder, config, True) * data.batch_size
    mfu = flops / seconds / peak_flops(strategy.device, torch.bfloat16 if not args.dry_run else torch.float32)
    suffix = f"{' +ckpt' if checkpointing else ''}{' +compile' if compiled else ''}"
    variant = f"{strategy_name}{suffix}"
    STEP_SECONDS[variant] = seconds
    memory = torch.cuda.max_memory_allocated() / 2**30 if strategy.device.type == "cuda" else 0.0
    detail = f"{seconds * 1000:.0f} ms/step, MFU {100 * mfu:.1f}%, build+warm-up {warm:.0f} s" + (
        f", peak {memory:.1f} GiB" if memory else ""
    )
    ok = seconds > 0
    if strategy_name in HYBRID:
        meshes = {tuple(p.device_mesh.mesh_dim_names or ()) for p in model.parameters() if isinstance(p, DTensor)}
        ok = ok and meshes == {("replicate", "shard")}
        plain = STEP_SECONDS.get(f"fsdp{suffix}")
        detail += f", mesh {' x '.join(map(str, strategy.mesh.shape))} {sorted(meshes)}" + (
            f", x{seconds / plain:.2f} of fsdp{suffix}'s step" if plain else ""
        )
    row(f"step {variant}", ok, detail)
    if variant in (args.profile or []):
        profile_steps(step, synchronise, variant)
    if strategy.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def profile_steps(step, synchronise, variant: str) -> None:
    """Where a step's time goes (``--profile VARIANT``): torch.profiler over 2 steps, the top
    operators by host time and by device time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as profiler:
        for _ in range(2):
            step()
        synchronise()
    averages = profiler.key_averages()
    print(f"\n#### profile of step {variant} (2 steps)\n")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
    if torch.cuda.is_available():
        print(averages.table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60))


def missing_package(strategy: str) -> str | None:
    """Why ``strategy`` cannot be checked here (its package is not installed), or None."""
    package, extra = NEEDS.get(strategy, (None, None))
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return f"{package} is not installed: pip install 'harness[{extra}]' to check this strategy"


def check_steps(args, variants: list[tuple[bool, bool]]) -> None:
    """The step table: every strategy in each (checkpointing, compiled) variant; one
    :data:`NOT_INSTALLED` row for a strategy whose package is missing."""
    for strategy in STRATEGIES:
        missing = missing_package(strategy)
        if missing:
            row(f"step {strategy}", NOT_INSTALLED, missing)
            continue
        for checkpointing, compiled in variants:
            if compiled and args.dry_run and strategy != "single":
                continue  # (compile under every strategy is in the test suite's feature matrix)
            # HSDP compiles the same blocks as fsdp; offload: one row
            if (compiled and strategy in HYBRID) or (checkpointing and strategy == "hsdp_offload"):
                continue
            label = f"step {strategy}" + (" +ckpt" if checkpointing else "") + (" +compile" if compiled else "")
            guarded(label, time_step, args, strategy, checkpointing, compiled)


def exit_status() -> int:
    """1 when a check failed, else 0 (a package that is not installed is no failure)."""
    return 0 if all(result in ("ok", NOT_INSTALLED) for _, result, _ in ROWS) else 1


def check_frozen(args, device: torch.device, comparison: str) -> None:
    from bench.bench_frozen import build, compare

    frames, size, name = (4, 32, "vit_tiny") if args.dry_run else (16, 224, "vit_large")
    model = build(name, 1, frames, size, 400).to(device)
    shape = (args.batch, 1, 3, frames, size, size)
    micro_batches = [(torch.randint(0, 256, shape, dtype=torch.uint8, device=device),
                      torch.randint(0, 400, (args.batch,), device=device)) for _ in range(2)]  # fmt: skip
    before, after = compare(model, comparison, True, micro_batches, 2 if args.dry_run else 5)
    row(f"frozen probe {comparison}", after > 0, f"{before * 1000:.0f} -> {after * 1000:.0f} ms/step "
        f"(2 micro-batches of {args.batch}), {before / after:.2f}x")  # fmt: skip


def check_demo(args) -> None:
    folder = Path(tempfile.mkdtemp(prefix="gpu_check_demo_"))
    toy = ["optimization.epochs=1", "optimization.ipe=2", "data.dataset_fpcs=[4]", "data.val_dataset_fpcs=[4]",
           "data.crop_size=32", "model.depth=2", "optimization.warmup=0", "optimization.anneal=0"]  # fmt: skip
    extra = toy if args.dry_run else ["optimization.epochs=2", "optimization.warmup=0.5", "optimization.anneal=1"]
    command = [sys.executable, "-m", "harness.train", "--config", str(REPO / "configs/demo.yaml"),
               f"folder={folder / 'run'}", f"data.datasets=[{folder / 'data/train.csv'}]",
               f"data.val_datasets=[{folder / 'data/val.csv'}]", f"data.class_names={folder / 'data/classes.txt'}",
               f"meta.device={args.device}", "logging.progress_bar=false", *extra]  # fmt: skip
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE", "GROUP_RANK")
    env = {k: v for k, v in os.environ.items() if k not in launcher}  # the demo is its own single process
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    summary = folder / "run" / "summary.json"
    detail = f"{time.perf_counter() - started:.0f} s" + (f"; {done.stderr.strip().splitlines()[-1][:120]}"
                                                        if done.returncode and done.stderr.strip() else "")  # fmt: skip
    row("demo end to end", done.returncode == 0 and summary.is_file(), detail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (the test suite runs this)")
    parser.add_argument("--quick", action="store_true", help="skip the torch.compile step variants")
    parser.add_argument("--batch", type=int, default=4, help="clips per step for ViT-L (GPU)")
    parser.add_argument("--profile", nargs="*", metavar="VARIANT",
                        help="print where the step time goes for these variants (e.g. fsdp 'zero3 +ckpt')")  # fmt: skip
    args = parser.parse_args()
    args.device = "cpu" if args.dry_run else "cuda"
    if "RANK" not in os.environ:  # one process under torchrun: real process groups for fsdp / DeepSpeed
        env = {**os.environ, **({"DS_ACCELERATOR": "cpu"} if args.dry_run else {})}
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", __file__, *sys.argv[1:]]
        return subprocess.run(command, env=env).returncode
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run to check the script itself", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    started = time.perf_counter()
    guarded("sdpa kernels", check_attention, device, args.dry_run)
    guarded("bf16 autocast", check_autocast, device)
    guarded("uint8 normalisation", check_normalisation, device)
    guarded("Meta's fixtures on the device", check_metas_fixtures, device)
    variants = [(c, False) for c in (False, True)]
    if not args.quick:
        variants += [(c, True) for c in (False, True)] if not args.dry_run else [(False, True)]
    check_steps(args, variants)
    for comparison in ("held", "grouped", "all"):
        guarded(f"frozen probe {comparison}", check_frozen, args, device, comparison)
    guarded("demo end to end", check_demo, args)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (dry run)"
    print(f"\n### GPU check: {name}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s\n")
    print("| check | result | detail |\n|---|---|---|")
    for check, result, detail in ROWS:
        print(f"| {check} | {result} | {detail} |")
    return exit_status()


if __name__ == "__main__":
    sys.exit(main())
