"""Memory planner: ``python -m harness.plan --config CFG --gpus 8 --nodes 2``.

Prints the expected per-GPU memory of a config under each strategy: model states (weights,
gradients, optimizer state, and the transiently gathered weights of sharded strategies) and
activations, from the parameter counts of the actual model (built on the meta device).

Formulas (``P`` all parameters, ``Q`` trainable ones, ``N`` ranks, ``w`` bytes per weight in the
strategy's storage dtype, ``U`` the largest FSDP/ZeRO-3 unit = one transformer block, ``G`` the
ranks of a shard group (hybrid sharding, hpZ: a node by default)):

============  ==================  ================  =========================  ======================
row           weights             gradients         optimizer (AdamW)          gathered (transient)
============  ==================  ================  =========================  ======================
ddp           4P                  4Q                8Q                         -
fsdp          4P'/N               4Q'/N             8Q'/N                      U' x (3w + r)
hsdp          4P'/G               4Q'/G             8Q'/G                      U' x (3w + r)
zero1         wP                  wQ/N (see below)  (8Q + 4Q master)/N         -
zero2         wP                  wQ/N              (8Q + 4Q master)/N         -
zero3         wP/N                wQ/N              (8Q + 4Q master)/N         2 x U x w
zero3+hpz     wP/N + wP/G         wQ/N              (8Q + 4Q master)/N         2 x U x w
============  ==================  ================  =========================  ======================

FSDP2 pads every parameter's first dimension up to a multiple of the ranks it shards over, so a
rank holds ``ceil(rows / N)`` rows of each (``P'/N``, ``Q'/N``); at 4096 ranks a 1408-row weight
is gathered as 4096 rows. What it gathers per unit is ``U'``, the padded block: two of them (the
one computing, the one prefetched) in ``w`` bytes, the all-gather's flat buffer (``w``) and the
reduce-scatter's (``r`` = 4 bytes, fp32 reduction; 2 with ``distributed.fsdp.reduce_dtype=bfloat16``).
hpZ keeps a second, node-wide partition of the low-precision weights so that backward gathers
inside the node.
Torch strategies keep fp32 weights under autocast (``4``); DeepSpeed stores bf16/fp16 weights
when the run is bf16/fp16 (``w = 2``) with an fp32 master partition (also in fp32 runs, where it
is a copy). DDP's gradients are views into its all-reduce buckets (``gradient_as_bucket_view``),
so they cost no second copy. DeepSpeed runs stage 1 with the same optimizer as stage 2, which
keeps only this rank's partition of the reduced gradients, so stage 1 measures like stage 2
(``bench/bench_parallel.py``); textbook ZeRO-1 would hold ``wQ``. DeepSpeed's communication
buckets (``reduce_bucket_size`` etc., elements) come on top: ZeRO-3 allocates a flat buffer of
``reduce_bucket_size`` gradients, 2 GB in fp32 at the usual 5e8. Offload moves the optimizer
(and for ZeRO-3 offload the weights) to host memory.

Activations per GPU for a micro-batch of ``b`` clips of ``s`` tokens of width ``h`` in ``a``-byte
activations, with SDPA (no attention matrix kept): each block keeps about ``(9 + 2 r) s h`` values
for backward (r = MLP ratio; 17 for r = 4, as Korthikanti et al. count without dropout), of which
the two LayerNorm outputs stay fp32 under autocast; with activation checkpointing only its input
``s h`` is kept, plus, in backward, the block being recomputed twice over (its activations and the
gradients through them). ``python -m harness.plan --simulate`` measures the same by running the
real step on fake tensors (:mod:`harness.plan.simulate`).
A frozen encoder keeps no activations (it runs under no_grad), only one block's transient values;
with ``data.encoder_batch_size`` its pass covers several micro-batches, whose clips and tokens count.
The pooler's ``depth - 1`` self-attention blocks count like encoder blocks (they run over all
tokens in V-JEPA 2's order); its cross-attention and the head are left out (small).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from harness.config import Config
from harness.core.crop import crop_hw
from harness.parallel.registry import PLAN_ROWS, Sizes

GIB = 1024**3


@dataclass(frozen=True)
class ModelCounts:
    """What the planner needs to know about a model."""

    total: int  #: all parameters
    trainable: int  #: parameters that train
    largest_unit: int  #: parameters of the largest sharding unit (a block)
    depth: int
    width: int
    mlp_ratio: float
    #: (first dimension, elements per row, trains) of every parameter: what FSDP2's padding needs
    shapes: tuple[tuple[int, int, bool], ...] = ()
    forward_flops: float = 0.0  #: the encoder's forward FLOPs of one clip of the config
    unit_shapes: tuple[tuple[int, int], ...] = ()  #: (first dimension, elements per row) of the largest unit's
    #: every FSDP unit (the encoder's and the pooler's blocks, then the root: the rest): its
    #: parameters' (first dimension, elements per row, trains); what the collectives are made of
    units: tuple[tuple[tuple[int, int, bool], ...], ...] = ()

    def unit_bytes(self, ranks: int, low: int, reduce: int) -> list[tuple[float, float, float]]:
        """Per unit, FSDP2's (gathered, reduce-scattered, shard of the reduced) bytes over
        ``ranks``: every parameter's rows padded to a multiple of ``ranks``; only trained ones reduced."""
        out = []
        for shapes in self.units:
            padded = [(-(-rows // ranks) * ranks * size, trains) for rows, size, trains in shapes]
            trained = sum(size for size, trains in padded if trains)
            out.append((sum(size for size, _ in padded) * low, trained * reduce, trained // ranks * reduce))
        return out

    def unit_padded(self, ranks: int) -> float:
        """The largest unit's parameters as FSDP2 gathers them over ``ranks``: each parameter's
        rows padded up to a multiple of ``ranks``."""
        if not self.unit_shapes:
            return float(self.largest_unit)
        return float(sum(-(-rows // ranks) * ranks * size for rows, size in self.unit_shapes))

    def shard(self, ranks: int) -> tuple[float, float]:
        """(all, trainable) parameters one rank holds when FSDP2 shards every parameter over
        ``ranks``: its first dimension padded up to a multiple of ``ranks`` (so a 1408-row bias
        costs every one of 4096 ranks a row); ``total / ranks`` when the shapes are unknown."""
        if not self.shapes:
            return self.total / ranks, self.trainable / ranks
        held = [(-(-rows // ranks)) * size for rows, size, _ in self.shapes]
        return float(sum(held)), float(sum(h for h, (_, _, trains) in zip(held, self.shapes) if trains))


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per GPU of one strategy."""

    strategy: str
    weights: float
    gradients: float
    optimizer: float
    gathered: float
    activations: float
    #: the gradients and the backward's activations are never held at once (see PlanRow.grads_freed)
    grads_apart: bool = False

    @property
    def model_states(self) -> float:
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> float:
        """The peak: at the start of backward (activations, gathered unit) or after it (gradients)."""
        if self.grads_apart:
            return self.weights + self.optimizer + max(self.gradients, self.gathered + self.activations)
        return self.model_states + self.gathered + self.activations


def value_bytes(dtype: str) -> int:
    """Bytes per value of a run's ``meta.dtype`` or ``distributed.fsdp.reduce_dtype``."""
    return 2 if dtype in ("bfloat16", "float16") else 4


def model_state_bytes(
    row: str, counts: ModelCounts, ranks: int, dtype: str, group: int | None = None, reduce_dtype: str = "float32"
) -> tuple[float, float, float, float]:
    """(weights, gradients, optimizer, gathered) bytes per rank of planner row ``row`` (``ddp``,
    ``fsdp+offload``, ``hsdp``, ``zero3``...: the strategies' rows, :data:`PLAN_ROWS`); see the
    module table. ``group``: the ranks a grouped row (``hsdp``) shards over (default: all)."""
    if row not in PLAN_ROWS:
        raise ValueError(f"unknown plan row {row!r}; rows: {', '.join(PLAN_ROWS)}")
    spec = PLAN_ROWS[row]
    over = group if spec.grouped and group else ranks
    p_shard, q_shard = counts.shard(over)
    sizes = Sizes(counts.total, counts.trainable, ranks, over, counts.largest_unit, value_bytes(dtype),
                  p_shard, q_shard, counts.unit_padded(over), value_bytes(reduce_dtype))  # fmt: skip
    return spec.formula(sizes, spec.offload)


def activation_bytes(config: Config, counts: ModelCounts) -> float:
    """Encoder activations kept for backward per GPU for one micro-batch (see module docs)."""
    from harness.models.flops import clip_tokens  # here: `harness.plan --help` imports this module, not torch

    data = config.data
    tokens = clip_tokens(max(data.dataset_fpcs), data.crop_size, data.patch_size, data.tubelet_size)
    clips = data.batch_size * data.num_clips
    values = tokens * counts.width * clips  # one [tokens, width] tensor per clip
    size = value_bytes(config.meta.dtype)
    # Autocast keeps the two LayerNorm outputs of a block in fp32 (4 bytes), the rest in ``size``.
    per_block = ((7 + 2 * counts.mlp_ratio) * size + 2 * 4) * values
    # The pooler's extra self-attention blocks run over all tokens in V-JEPA 2's order.
    pooler = (config.model.attn_pooler_depth - 1) * per_block if config.model.pooler_order == "tokens_first" else 0.0
    inputs = clips * 3 * max(data.dataset_fpcs) * math.prod(crop_hw(data.crop_size)) * 4  # the fp32 batch itself
    if not config.meta.finetune_encoder:
        group = max(1, data.encoder_batch_size // data.batch_size)
        if group > 1:
            # One encoder pass over the group (its clips, their joined copy, one block's transient
            # values), then the group's fp32 tokens stay while each micro-batch's heads train.
            return max(2 * group * inputs + group * per_block, group * values * 4 + inputs + pooler)
        # the frozen encoder's one transient block is gone before the pooler's kept activations peak
        return inputs + max(pooler, per_block)
    if config.model.use_activation_checkpointing:
        every = config.model.activation_checkpointing_every
        checkpointed = counts.depth // every
        kept = checkpointed * values * size + (counts.depth - checkpointed) * per_block
        # in backward, the block being recomputed: its activations and the gradients flowing through them
        return inputs + kept + 2 * per_block + pooler
    return inputs + counts.depth * per_block + pooler


def _rows(param) -> tuple[int, int]:
    """(first dimension, elements per row): how FSDP2 splits a parameter."""
    if not param.dim():
        return 1, 1
    return param.shape[0], param.numel() // max(1, param.shape[0])


def count_parameters(config: Config, num_classes: int) -> ModelCounts:
    """Parameter counts of the config's model, built on the meta device (no memory, no files)."""
    import torch

    from harness.training.assemble import build_model

    meta = dataclasses.replace(config.meta, pretrain_checkpoint=None, load_encoder=False)
    model_cfg = dataclasses.replace(config.model, compile_model=False, use_activation_checkpointing=False)
    meta_only = dataclasses.replace(config, meta=meta, model=model_cfg)
    with torch.device("meta"):
        model = build_model(meta_only, num_classes, device="meta")
    blocks = list(model.encoder.blocks)
    largest = max(blocks, key=lambda block: sum(p.numel() for p in block.parameters()))
    return ModelCounts(
        total=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        largest_unit=max(sum(p.numel() for p in block.parameters()) for block in blocks),
        depth=len(blocks),
        width=model.encoder.embed_dim,
        mlp_ratio=blocks[0].mlp.fc1.out_features / model.encoder.embed_dim if hasattr(blocks[0].mlp, "fc1") else 4.0,
        forward_flops=float(
            model.encoder.forward_flops(max(config.data.dataset_fpcs), *crop_hw(config.data.crop_size))
        ),
        shapes=tuple((*_rows(p), p.requires_grad) for p in model.parameters()),
        unit_shapes=tuple(_rows(p) for p in largest.parameters()),
        units=_units(model),
    )


def _units(model) -> tuple[tuple[tuple[int, int, bool], ...], ...]:
    """The FSDP units' parameter shapes, as :func:`harness.parallel.fsdp.fsdp_units` splits the
    model, the root (everything else) last."""
    from harness.parallel.fsdp import fsdp_units

    units = [tuple((*_rows(p), p.requires_grad) for p in unit.parameters()) for unit in fsdp_units(model)]
    inside = {id(p) for unit in fsdp_units(model) for p in unit.parameters()}
    root = tuple((*_rows(p), p.requires_grad) for p in model.parameters() if id(p) not in inside)
    return (*units, root)


def plan(
    config: Config, ranks: int, num_classes: int, counts: ModelCounts | None = None, group: int | None = None
) -> list[MemoryPlan]:
    """One :class:`MemoryPlan` per strategy (and the offload variants) for ``ranks`` GPUs
    (``counts``: the model's, when already counted); the grouped rows (``hsdp``) shard over
    ``group`` ranks and are left out without one (or when it is all ranks)."""
    counts = counts or count_parameters(config, num_classes)
    activations = activation_bytes(config, counts)
    return [
        row_plan(name, config, counts, ranks, group, activations)
        for name, row in PLAN_ROWS.items()
        if row.listed and (not row.grouped or (group and 1 <= group < ranks and ranks % group == 0))
    ]


def row_plan(
    name: str, config: Config, counts: ModelCounts, ranks: int, group: int | None, activations: float | None = None
) -> MemoryPlan:
    """The plan of one row (``activations``: the config's, when already computed)."""
    states = model_state_bytes(name, counts, ranks, config.meta.dtype, group, config.distributed.fsdp.reduce_dtype)
    apart = PLAN_ROWS[name].grads_freed and config.optimization.accumulation_steps == 1
    activations = activation_bytes(config, counts) if activations is None else activations
    return MemoryPlan(name, *states, activations, apart)
