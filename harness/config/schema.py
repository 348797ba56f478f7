"""The configuration schema: one dataclass per section, each key with a ``#:`` comment (its
documentation in docs/configuration.md's table), plus the allowed values of the choice keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.core.errors import UserError
from harness.parallel.registry import STRATEGY_CHOICES

CLUSTER_KEYS = ("nodes", "tasks_per_node", "cpus_per_task", "mem_per_gpu", "app")
CHOICES = {
    "data.sampling_rule": ("auto", "harness", "vjepa2"),
    "model.clip_aggregation": ("auto", "average_logits", "concat_tokens"),
    "optimization.lr_schedule": ("wsd", "cosine"),
    "optimization.protocol": ("harness", "vjepa2"),
    "meta.dtype": ("float32", "bfloat16", "float16"),
    "meta.device": ("auto", "cpu", "cuda"),
    "model.pooler_order": ("tokens_first", "queries"),
    "model.classifier": ("auto", "attentive", "linear"),
    "logging.level": ("debug", "info", "warning"),
    "logging.wandb.mode": ("auto", "online", "offline", "disabled"),
    "distributed.strategy": STRATEGY_CHOICES,
    "distributed.backend": ("auto", "nccl", "gloo"),
    "distributed.fsdp_reduce_dtype": ("float32", "bfloat16"),
}

_INTERVALS = (
    ("(0, inf)", "optimization.eps optimization.clip_grad data_aug.random_resize_aspect_ratio model.pooler_norm_eps"),
    ("[0, inf)", "optimization.lr optimization.heads[].lr optimization.start_lr optimization.final_lr "
                 "optimization.warmup optimization.anneal "
                 "optimization.weight_decay optimization.final_weight_decay optimization.enc_lr_scale "
                 "optimization.mixup optimization.cutmix optimization.heads[].start_lr optimization.heads[].final_lr "
                 "optimization.heads[].warmup optimization.heads[].weight_decay "
                 "optimization.heads[].final_weight_decay "
                 "data.num_workers data.val_num_workers data.min_frames data.datasets_weights data.shards_weights "
                 "data.val_datasets_weights meta.num_classes meta.save_every_freq meta.classifier_index "
                 "checkpointing.every_steps logging.wandb.thumbnails data.encoder_batch_size"),
    ("[1, inf)", "data.batch_size data.val_batch_size data.num_clips data.val_num_clips data.num_views "
                 "data.repeated_aug data.crop_size data.patch_size data.tubelet_size data.dataset_fpcs "
                 "data.val_dataset_fpcs optimization.epochs optimization.ipe optimization.accumulation_steps "
                 "optimization.max_nonfinite_steps logging.log_every model.activation_checkpointing_every "
                 "model.attn_pooler_depth model.attn_pooler_heads model.depth model.max_frames shards.interleave "
                 "shards.max_open_files shards.samples_per_epoch"),
    ("[0, 1)", "optimization.betas optimization.label_smoothing optimization.ema_decay model.drop_path_rate"),
    ("(0, 1]", "optimization.layer_decay data_aug.random_resize_scale"),
    ("[0, 1]", "optimization.mixup_prob optimization.mixup_switch_prob data.max_failure_fraction data_aug.reprob "
               "logging.stall_threshold data.class_balanced_sampling"),
)  # fmt: skip
# Allowed interval of each numeric key ("[" / "]" include the bound, "(" / ")" exclude it); each
# entry of a list key is checked, null is allowed where the key is optional, NaN never.
RANGES = {key: interval for interval, keys in _INTERVALS for key in keys.split()}


class ConfigError(UserError, ValueError):
    """A config problem; the message names the key (``section.key``) and suggests a fix."""

    prefix = "config error"


@dataclass
class DataConfig:
    """Datasets and clip sampling (V-JEPA 2 ``data`` section)."""

    datasets: list[str] = field(default_factory=list)  #: training listings (CSV/NPY)
    datasets_weights: list[float] | None = None  #: per-listing sampling weights (mixing)
    dataset_fpcs: list[int] = field(default_factory=lambda: [16])  #: frames per clip, per listing
    val_datasets: list[str] = field(default_factory=list)  #: validation listings
    val_dataset_fpcs: list[int] = field(default_factory=lambda: [16])  #: frames per clip, per val listing
    batch_size: int = 8  #: videos per rank per micro-batch (global batch = batch_size x ranks x accumulation)
    val_batch_size: int | None = None  #: default: batch_size
    encoder_batch_size: int = 0  #: harness: frozen encoder: clips per encoder pass over micro-batches (0: batch_size)
    crop_size: int = 224  #: output side in pixels
    patch_size: int = 16  #: spatial patch size of the encoder
    tubelet_size: int = 2  #: temporal patch size of the encoder
    frame_step: int | None = 4  #: take every k-th frame (of frame_step/fps/duration, fps wins, then duration)
    fps: float | None = None  #: target sampling rate in frames per second
    duration: float | None = None  #: seconds a clip spans
    val_frame_step: int | None = None  #: validation frame step (default: the training's sampling)
    val_fps: float | None = None  #: validation sampling rate (default: the training's sampling)
    val_duration: float | None = None  #: validation clip duration (default: the training's sampling)
    sampling_rule: str = "auto"  #: harness: frame indices: harness or vjepa2 (exact); auto: vjepa2 for V-JEPA 2 files
    num_clips: int = 1  #: temporal clips per training video
    val_num_clips: int = 1  #: temporal clips per validation video
    num_views: int = 1  #: spatial crops per validation clip
    num_workers: int = 8  #: decoding processes per rank
    val_num_workers: int | None = None  #: validation decoding processes per rank (default: num_workers)
    persistent_workers: bool = True  #: keep training loader processes alive between epochs
    val_persistent_workers: bool | None = None  #: same for validation (default: persistent_workers)
    pin_mem: bool = True  #: pin host memory (only where a GPU exists)
    decoder: str = "auto"  #: auto, torchcodec, decord or pyav
    decode_max_short_side: int | str = 0  #: harness: decode frames smaller: auto (as the crops need), N px, 0 full size
    allow_clip_overlap: bool = False  #: spread clips over the video when they do not fit a segment
    random_clip_sampling: bool = True  #: random clip position when training
    val_random_clip_sampling: bool = False  #: random clip position in validation too (seed key)
    val_datasets_weights: list[float] | None = None  #: seed key; evaluation visits every video once, so only checked
    max_failure_fraction: float = 0.01  #: stop past this share of unusable videos in an epoch (over all ranks)
    min_frames: int = 0  #: skip videos with fewer frames
    class_names: str | None = None  #: harness: class names: a text file (one per line) or JSON list / id->name map
    shards: list[str] = field(default_factory=list)  #: harness: training shard sources (manifest, pattern, pipe:)
    shards_weights: list[float] | None = None  #: harness: per-source sampling weights for data.shards
    val_shards: list[str] = field(default_factory=list)  #: harness: validation shard sources
    repeated_aug: int = 1  #: harness: augmented copies of each drawn video per batch (repeated augmentation)
    class_balanced_sampling: float = 0.0  #: harness: draw videos with weight (class count)^-p: 0 off, 1 balanced, 0.5
    generate_demo_data: bool = False  #: harness: write the synthetic demo videos when the listings are missing
    dataset_type: str = "VideoDataset"  #: accepted for V-JEPA 2 files; only videos are supported


@dataclass
class DataAugConfig:
    """Training augmentation (V-JEPA 2 ``data_aug`` section)."""

    auto_augment: bool = False  #: RandAugment per clip
    horizontal_flip: bool = True  #: flip a clip with probability 0.5
    motion_shift: bool = False  #: crop box drifts across the clip
    random_resize_aspect_ratio: list[float] = field(default_factory=lambda: [0.75, 1.35])  #: crop w/h range
    random_resize_scale: list[float] = field(default_factory=lambda: [0.3, 1.0])  #: crop area range
    reprob: float = 0.0  #: random erasing probability


@dataclass
class MetaConfig:
    """Run-level switches (V-JEPA 2 ``meta`` section)."""

    dtype: str = "bfloat16"  #: float32, bfloat16 or float16
    load_checkpoint: bool = True  #: resume from the run folder's latest checkpoint when present
    read_checkpoint: str | None = None  #: explicit checkpoint to resume from
    load_encoder: bool = True  #: load pretrain_checkpoint into the encoder
    pretrain_checkpoint: str | None = None  #: V-JEPA 2 (or harness) encoder weights
    finetune_encoder: bool = False  #: False freezes the encoder (attentive probe)
    num_classes: int = 0  #: classes; 0 = infer from the training listing
    save_every_freq: int = 0  #: keep a copy every N epochs (0: never)
    seed: int = 0  #: global seed
    use_sdpa: bool = True  #: fused attention
    eval_only: bool = False  #: evaluate and stop
    classifier_checkpoint: str | None = None  #: probe weights: V-JEPA 2 eval .pt (classifiers) or HF directory
    classifier_index: int = 0  #: which head of a multi-head V-JEPA 2 probe file to load
    checkpoint_key: str | None = None  #: key of the encoder in pretrain_checkpoint (default: target_encoder, encoder)
    skip_batches: int = -1  #: seed key; the harness resumes mid-epoch exactly, so it is reported and not applied
    sync_gc: bool = False  #: disable automatic garbage collection; collect every 50 steps instead (seed key)
    device: str = "auto"  #: harness: auto (the rank's GPU if any, else CPU), cpu or cuda
    multi_label: bool = False  #: harness: several labels per video (listing `path 3,17,42`): sigmoid/BCE, mAP


@dataclass
class ModelConfig:
    """Encoder and classifier (V-JEPA 2 ``model`` section)."""

    model_name: str = "vit_large"  #: registered encoder name (families: vit, videomae)
    family: str = "auto"  #: harness: model family; auto: the family that registered model_name
    options: dict = field(default_factory=dict)  #: harness: the family's own options (docs/models.md: model families)
    classifier: str = "auto"  #: harness: attentive (V-JEPA 2 probe), linear (mean pool + Linear); auto: the family's
    depth: int | None = None  #: harness: override the registered number of blocks (small experiments)
    compile_model: bool = False  #: torch.compile the encoder
    use_activation_checkpointing: bool = False  #: recompute blocks in backward
    activation_checkpointing_every: int = 1  #: harness: checkpoint every k-th block (1: all)
    uniform_power: bool = False  #: vit family: sin-cos channel split
    use_rope: bool = False  #: vit family: rotary positions
    use_silu: bool = False  #: vit family: SwiGLU MLP
    wide_silu: bool = True  #: vit family: SwiGLU width rounding as V-JEPA 2
    attn_pooler_depth: int = 1  #: cross-attention block + (depth - 1) self-attention blocks
    attn_pooler_heads: int | None = None  #: default: the encoder's heads
    drop_path_rate: float = 0.0  #: harness: stochastic depth rate of the last encoder block
    pooler_order: str = "tokens_first"  #: harness: tokens_first (V-JEPA 2 probes) or queries
    pooler_output_projection: bool = False  #: harness: a Linear after the probe's cross-attention (V-JEPA 2 has none)
    pooler_norm_eps: float = 1e-5  #: harness: probe LayerNorm epsilon (V-JEPA 2's 1e-5; 1e-6 makes HF exports exact)
    clip_aggregation: str = "auto"  #: harness: average_logits (seed), concat_tokens (V-JEPA 2 eval); auto picks by file
    temporal_pos_embed: bool = False  #: concat_tokens: add a 1D sin-cos table by frame index (wrapper use_pos_embed)
    max_frames: int = 128  #: length in frames of that table (wrapper max_frames)
    out_layers: list[int] | None = None  #: multi-level features: tokens of these blocks (0-based), concatenated


@dataclass
class HeadConfig:
    """One probe head's schedule (an entry of V-JEPA 2's ``multihead_kwargs``), epoch units."""

    lr: float = 1e-4  #: peak learning rate of this head
    start_lr: float = 0.0  #: learning rate at step 0
    final_lr: float = 0.0  #: learning rate at the end
    warmup: float = 0.0  #: warmup epochs
    weight_decay: float = 0.05  #: initial weight decay
    final_weight_decay: float = 0.05  #: final weight decay


@dataclass
class OptimizationConfig:
    """Optimizer and schedules (V-JEPA 2 ``optimization`` section). Epoch units unless noted."""

    epochs: int = 20  #: training epochs
    ipe: int | None = None  #: iterations per epoch (default: loader length)
    lr: float = 1e-4  #: peak learning rate
    start_lr: float = 0.0  #: learning rate at step 0 (linear warmup from here)
    final_lr: float = 0.0  #: learning rate at the end of the decay
    warmup: float = 0.0  #: warmup epochs
    lr_schedule: str = "wsd"  #: harness: wsd (warmup-stable-decay) or cosine (V-JEPA 2 eval: warmup, cosine)
    anneal: float = 0.0  #: decay epochs at the end (warmup-stable-decay)
    weight_decay: float = 0.05  #: initial weight decay
    final_weight_decay: float = 0.05  #: weight decay at the end (cosine schedule)
    enc_lr_scale: float = 1.0  #: encoder learning-rate multiplier
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  #: AdamW betas
    eps: float = 1e-8  #: AdamW epsilon
    clip_grad: float | None = 1.0  #: harness: gradient-norm clipping, each probe head on its own norm (None: off)
    label_smoothing: float = 0.0  #: harness: cross-entropy label smoothing
    class_weights: list[float] | str | None = None  #: harness: loss weight per class; auto: N / (classes x count)
    accumulation_steps: int = 1  #: harness: micro-batches per optimizer step
    layer_decay: float | None = None  #: harness: layer-wise lr decay over encoder depth (e.g. 0.75)
    ema_decay: float = 0.0  #: harness: EMA of the weights, used for evaluation (0: off)
    mixup: float = 0.0  #: harness: mixup Beta(alpha, alpha) (0: off)
    cutmix: float = 0.0  #: harness: cutmix Beta(alpha, alpha) (0: off)
    mixup_prob: float = 1.0  #: harness: probability that a batch is mixed
    mixup_switch_prob: float = 0.5  #: harness: probability of cutmix when both are on
    max_nonfinite_steps: int = 5  #: harness: stop after this many NaN/Inf-loss steps in a row (each is skipped)
    heads: list[HeadConfig] = field(default_factory=list)  #: probe heads (lr x wd grid) on one encoder pass
    protocol: str = "harness"  #: harness: conventions: harness, or vjepa2 (V-JEPA 2's probe eval step for step)


@dataclass
class WandbConfig:
    """Weights & Biases (harness); rank 0 logs. Without an API key or network it runs offline."""

    enabled: bool = False  #: log to W&B
    project: str = "harness"  #: W&B project
    entity: str | None = None  #: W&B team or user (default: yours)
    name: str | None = None  #: run name (default: the run folder's name)
    group: str | None = None  #: run group
    tags: list[str] = field(default_factory=list)  #: run tags
    mode: str = "auto"  #: auto (online with an API key, else offline), online, offline, disabled
    thumbnails: int = 8  #: validation predictions logged with a video thumbnail per epoch
    log_model: bool = False  #: at the end, consolidate checkpoints/best into <folder>/best_model and upload it


@dataclass
class LoggingConfig:
    """Console, CSV, W&B, TensorBoard and progress output (harness)."""

    log_every: int = 10  #: steps per CSV row / console line (losses are averaged over them)
    progress_bar: bool = True  #: progress on the main process: a bar on a terminal, a line every 30 s in a log file
    level: str = "info"  #: console log level: debug, info, warning
    stall_threshold: float = 0.3  #: warn when more than this share of step time waits for data
    tensorboard: bool = False  #: TensorBoard event files in <folder>/tensorboard (scalars, confusion images, hparams)
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class CheckpointingConfig:
    """What is saved when (harness). ``latest`` is written every epoch in any case."""

    every_steps: int = 0  #: also write ``latest`` every N optimizer steps (0: only per epoch)
    save_best: bool = True  #: keep the checkpoint with the best validation top-1 as ``best``
    save_on_signal: bool = True  #: on SIGTERM/SIGUSR1 (SLURM's warning): save ``latest`` and exit cleanly


@dataclass
class ShardsConfig:
    """How shards stream into ranks (harness); the sources are ``data.shards`` / ``data.val_shards``."""

    interleave: int = 4  #: shards each worker reads at once (samples drawn among them at random)
    resample: bool = False  #: draw shards with replacement (allows fewer shards than ranks x workers)
    max_open_files: int = 64  #: shard files a worker keeps open at most (more are parked: closed, reopened later)
    samples_per_epoch: int | None = None  #: epoch length when the sources have no manifest counts


@dataclass
class DistributedConfig:
    """How the job is spread over processes (harness)."""

    strategy: str = "auto"  #: auto (ddp if several processes, else single), single, ddp, fsdp, deepspeed
    backend: str = "auto"  #: process-group backend: auto (nccl on GPU, gloo on CPU), nccl, gloo
    fsdp_reshard_after_forward: bool = True  #: FSDP2: free gathered weights after forward (less memory)
    fsdp_cpu_offload: bool = False  #: FSDP2: keep sharded weights, grads and optimizer state in host memory
    fsdp_reduce_dtype: str = "float32"  #: FSDP2: gradient reduction dtype (float32 or bfloat16)
    deepspeed_config: str | None = None  #: DeepSpeed JSON (e.g. ds_configs/zero3.json); null: ZeRO-2 defaults


@dataclass
class Config:
    """The whole run. ``folder`` is the run directory (checkpoints, logs, resolved config)."""

    folder: str = "runs/default"  #: run directory: checkpoints, logs, resolved config, predictions
    data: DataConfig = field(default_factory=DataConfig)
    data_aug: DataAugConfig = field(default_factory=DataAugConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpointing: CheckpointingConfig = field(default_factory=CheckpointingConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    ignored: list[str] = field(default_factory=list, metadata={"internal": True})
    notes: list[str] = field(default_factory=list, metadata={"internal": True})  #: what loading translated or chose
