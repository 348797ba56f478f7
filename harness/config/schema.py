"""The configuration schema: one dataclass per section, each key with a ``#:`` comment (its
documentation in docs/configuration.md's table) after it or on the line above, and its allowed
values (range or choices) declared on the field itself (:func:`~harness.config.fields.key`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from harness.config.fields import constraints, key
from harness.core.errors import UserError
from harness.parallel.registry import OPTIONS_SECTIONS, STRATEGY_CHOICES

CLUSTER_KEYS = ("nodes", "tasks_per_node", "cpus_per_task", "mem_per_gpu", "app")


class ConfigError(UserError, ValueError):
    """A config problem; the message names the key (``section.key``) and suggests a fix."""

    prefix = "config error"


@dataclass
class DataConfig:
    """Datasets and clip sampling (V-JEPA 2 ``data`` section)."""

    datasets: list[str] = field(default_factory=list)  #: training listings (CSV/NPY)
    datasets_weights: list[float] | None = key(None, ge=0)  #: per-listing sampling weights (mixing)
    #: frames per clip, per listing (1: images through a V-JEPA 2.1 image path)
    dataset_fpcs: list[int] = key(factory=lambda: [16], ge=1)
    val_datasets: list[str] = field(default_factory=list)  #: validation listings
    val_dataset_fpcs: list[int] = key(factory=lambda: [16], ge=1)  #: frames per clip, per val listing
    #: videos per rank per micro-batch (global batch = batch_size x ranks x accumulation)
    batch_size: int = key(8, ge=1)
    val_batch_size: int | None = key(None, ge=1)  #: default: batch_size
    #: harness: frozen encoder: clips per encoder pass over micro-batches (0: batch_size)
    encoder_batch_size: int = key(0, ge=0)
    crop_size: int | list[int] = key(224, ge=1)  #: output size in pixels: one side (square) or [height, width]
    patch_size: int = key(16, ge=1)  #: spatial patch size of the encoder
    tubelet_size: int = key(2, ge=1)  #: temporal patch size of the encoder
    frame_step: int | None = 4  #: take every k-th frame (of frame_step/fps/duration, fps wins, then duration)
    fps: float | None = None  #: target sampling rate in frames per second
    duration: float | None = None  #: seconds a clip spans
    val_frame_step: int | None = None  #: validation frame step (default: the training's sampling)
    val_fps: float | None = None  #: validation sampling rate (default: the training's sampling)
    val_duration: float | None = None  #: validation clip duration (default: the training's sampling)
    #: harness: frame rate of the listings' frame folders, per listing or one for all ([] or 0: unknown)
    frame_folder_fps: list[float] = key(factory=list, ge=0)
    #: harness: the same for data.val_datasets (default: data.frame_folder_fps)
    val_frame_folder_fps: list[float] | None = key(None, ge=0)
    #: harness: frame indices: harness or vjepa2 (exact); auto: vjepa2 for V-JEPA 2 files
    sampling_rule: str = key("auto", choices=("auto", "harness", "vjepa2"))
    num_clips: int = key(1, ge=1)  #: temporal clips per training video
    val_num_clips: int = key(1, ge=1)  #: temporal clips per validation video
    num_views: int = key(1, ge=1)  #: spatial crops per validation clip
    num_workers: int = key(8, ge=0)  #: decoding processes per rank
    val_num_workers: int | None = key(None, ge=0)  #: validation decoding processes per rank (default: num_workers)
    persistent_workers: bool = True  #: keep training loader processes alive between epochs
    val_persistent_workers: bool | None = None  #: same for validation (default: persistent_workers)
    pin_mem: bool = True  #: pin host memory (only where a GPU exists)
    decoder: str = "auto"  #: auto, torchcodec, decord or pyav
    decode_max_short_side: int | str = 0  #: harness: decode frames smaller: auto (as the crops need), N px, 0 full size
    allow_clip_overlap: bool = False  #: spread clips over the video when they do not fit a segment
    random_clip_sampling: bool = True  #: random clip position when training
    val_random_clip_sampling: bool = False  #: random clip position in validation too (seed key)
    #: seed key; evaluation visits every video once, so only checked
    val_datasets_weights: list[float] | None = key(None, ge=0)
    #: stop past this share of unusable videos in an epoch (over all ranks)
    max_failure_fraction: float = key(0.01, ge=0, le=1)
    min_frames: int = key(0, ge=0)  #: skip videos with fewer frames
    #: harness: class names: a text file (one per line) or JSON list / id->name map; with meta.label_sets, one
    #: such file per set ({verb: verbs.txt, noun: nouns.txt})
    class_names: str | dict | None = None
    shards: list[str] = field(default_factory=list)  #: harness: training shard sources (manifest, pattern, pipe:)
    shards_weights: list[float] | None = key(None, ge=0)  #: harness: per-source sampling weights for data.shards
    val_shards: list[str] = field(default_factory=list)  #: harness: validation shard sources
    repeated_aug: int = key(1, ge=1)  #: harness: augmented copies of each drawn video per batch (repeated augmentation)
    #: harness: draw videos with weight (class count)^-p: 0 off, 1 balanced, 0.5
    class_balanced_sampling: float = key(0.0, ge=0, le=1)
    generate_demo_data: bool = False  #: harness: write the synthetic demo videos when the listings are missing
    dataset_type: str = "VideoDataset"  #: accepted for V-JEPA 2 files; listings of videos and images are read


@dataclass
class DataAugConfig:
    """Training augmentation (V-JEPA 2 ``data_aug`` section)."""

    auto_augment: bool = False  #: RandAugment per clip
    horizontal_flip: bool = True  #: flip a clip with probability 0.5
    motion_shift: bool = False  #: crop box drifts across the clip
    #: crop w/h range, relative to the output's w/h (data.crop_size)
    random_resize_aspect_ratio: list[float] = key(factory=lambda: [0.75, 1.35], gt=0)
    random_resize_scale: list[float] = key(factory=lambda: [0.3, 1.0], gt=0, le=1)  #: crop area range
    reprob: float = key(0.0, ge=0, le=1)  #: random erasing probability


@dataclass
class MetaConfig:
    """Run-level switches (V-JEPA 2 ``meta`` section)."""

    dtype: str = key("bfloat16", choices=("float32", "bfloat16", "float16"))  #: float32, bfloat16 or float16
    load_checkpoint: bool = True  #: resume from the run folder's latest checkpoint when present
    read_checkpoint: str | None = None  #: explicit checkpoint to resume from
    load_encoder: bool = True  #: load pretrain_checkpoint into the encoder
    pretrain_checkpoint: str | None = None  #: V-JEPA 2 (or harness) encoder weights
    finetune_encoder: bool = False  #: False freezes the encoder (attentive probe)
    num_classes: int = key(0, ge=0)  #: classes; 0 = infer from the training listing
    save_every_freq: int = key(0, ge=0)  #: keep a copy every N epochs (0: never)
    seed: int = 0  #: global seed
    use_sdpa: bool = True  #: fused attention
    eval_only: bool = False  #: evaluate and stop
    classifier_checkpoint: str | None = None  #: probe weights: V-JEPA 2 eval .pt (classifiers) or HF directory
    classifier_index: int = key(0, ge=0)  #: which head of a multi-head V-JEPA 2 probe file to load
    checkpoint_key: str | None = None  #: key of the encoder in pretrain_checkpoint (default: target_encoder, encoder)
    skip_batches: int = -1  #: seed key; the harness resumes mid-epoch exactly, so it is reported and not applied
    sync_gc: bool = False  #: disable automatic garbage collection; collect every 50 steps instead (seed key)
    #: harness: auto (the rank's GPU if any, else CPU), cpu or cuda
    device: str = key("auto", choices=("auto", "cpu", "cuda"))
    multi_label: bool = False  #: harness: several labels per video (listing `path 3,17,42`): sigmoid/BCE, mAP
    #: harness: one class per set per video (EPIC-KITCHENS-100: [verb, noun, action]), one softmax each; a mapping
    #: {verb: 97, noun: 300} gives the sets' classes (0, or a list: 1 + the largest id in the training listings)
    label_sets: list[str] | dict = field(default_factory=list)
    label_set_metric: str = "mean"  #: harness: label sets: the top-1 that ranks epochs and heads: mean, or a set


@dataclass
class ModelConfig:
    """Encoder and classifier (V-JEPA 2 ``model`` section)."""

    model_name: str = "vit_large"  #: registered encoder name (families: vit, videomae)
    family: str = "auto"  #: harness: model family; auto: the family that registered model_name
    options: dict = field(default_factory=dict)  #: harness: the family's own options (docs/models.md: model families)
    #: harness: attentive (V-JEPA 2 probe), linear (mean pool + Linear); auto: the family's
    classifier: str = key("auto", choices=("auto", "attentive", "linear"))
    depth: int | None = key(None, ge=1)  #: harness: override the registered number of blocks (small experiments)
    compile_model: bool = False  #: torch.compile the encoder
    use_activation_checkpointing: bool = False  #: recompute blocks in backward
    activation_checkpointing_every: int = key(1, ge=1)  #: harness: checkpoint every k-th block (1: all)
    uniform_power: bool = False  #: vit family: sin-cos channel split
    use_rope: bool = False  #: vit family: rotary positions
    use_silu: bool = False  #: vit family: SwiGLU MLP
    wide_silu: bool = True  #: vit family: SwiGLU width rounding as V-JEPA 2
    use_area_attention: bool = False  #: vit family: V-JEPA 2's spatiotemporal area attention (RoPE only)
    area_attention_layers: list[int] | None = None  #: vit family: area blocks [start, end); null: [0, int(0.75 depth))
    area_spatial_splits: int = key(2, ge=1)  #: vit family: area bands of patch rows
    area_temporal_splits: int = key(2, ge=1)  #: vit family: area bands of time steps
    area_residual_scale: float = 1.0  #: vit family: multiplies an area block's attention output
    attn_pooler_depth: int = key(1, ge=1)  #: cross-attention block + (depth - 1) self-attention blocks
    attn_pooler_heads: int | None = key(None, ge=1)  #: default: the encoder's heads
    drop_path_rate: float = key(0.0, ge=0, lt=1)  #: harness: stochastic depth rate of the last encoder block
    #: harness: tokens_first (V-JEPA 2 probes) or queries
    pooler_order: str = key("tokens_first", choices=("tokens_first", "queries"))
    pooler_output_projection: bool = False  #: harness: a Linear after the probe's cross-attention (V-JEPA 2 has none)
    #: harness: probe LayerNorm epsilon (V-JEPA 2's 1e-5; 1e-6 makes HF exports exact)
    pooler_norm_eps: float = key(1e-5, gt=0)
    #: harness: average_logits (seed), concat_tokens (V-JEPA 2 eval); auto picks by file
    clip_aggregation: str = key("auto", choices=("auto", "average_logits", "concat_tokens"))
    temporal_pos_embed: bool = False  #: concat_tokens: add a 1D sin-cos table by frame index (wrapper use_pos_embed)
    max_frames: int = key(128, ge=1)  #: length in frames of that table (wrapper max_frames)
    out_layers: list[int] | None = None  #: multi-level features: tokens of these blocks (0-based), concatenated
    #: harness: join out_layers along tokens or channels; auto: the family's (vit/videomae tokens as V-JEPA 2's
    #: multi-level eval, vjepa2.1 channels as V-JEPA 2.1's hierarchical output)
    level_concat: str = key("auto", choices=("auto", "tokens", "channels"))


@dataclass
class HeadConfig:
    """One probe head's schedule (an entry of V-JEPA 2's ``multihead_kwargs``), epoch units."""

    lr: float = key(1e-4, ge=0)  #: peak learning rate of this head
    start_lr: float = key(0.0, ge=0)  #: learning rate at step 0
    final_lr: float = key(0.0, ge=0)  #: learning rate at the end
    warmup: float = key(0.0, ge=0)  #: warmup epochs
    weight_decay: float = key(0.05, ge=0)  #: initial weight decay
    final_weight_decay: float = key(0.05, ge=0)  #: final weight decay


@dataclass
class OptimizationConfig:
    """Optimizer and schedules (V-JEPA 2 ``optimization`` section). Epoch units unless noted."""

    epochs: int = key(20, ge=1)  #: training epochs
    ipe: int | None = key(None, ge=1)  #: iterations per epoch (default: loader length)
    lr: float = key(1e-4, ge=0)  #: peak learning rate
    start_lr: float = key(0.0, ge=0)  #: learning rate at step 0 (linear warmup from here)
    final_lr: float = key(0.0, ge=0)  #: learning rate at the end of the decay
    warmup: float = key(0.0, ge=0)  #: warmup epochs
    #: harness: wsd (warmup-stable-decay) or cosine (V-JEPA 2 eval: warmup, cosine)
    lr_schedule: str = key("wsd", choices=("wsd", "cosine"))
    anneal: float = key(0.0, ge=0)  #: decay epochs at the end (warmup-stable-decay)
    weight_decay: float = key(0.05, ge=0)  #: initial weight decay
    final_weight_decay: float = key(0.05, ge=0)  #: weight decay at the end (cosine schedule)
    enc_lr_scale: float = key(1.0, ge=0)  #: encoder learning-rate multiplier
    betas: list[float] = key(factory=lambda: [0.9, 0.999], ge=0, lt=1)  #: AdamW betas
    eps: float = key(1e-8, gt=0)  #: AdamW epsilon
    #: harness: gradient-norm clipping, each probe head on its own norm (None: off)
    clip_grad: float | None = key(1.0, gt=0)
    label_smoothing: float = key(0.0, ge=0, lt=1)  #: harness: cross-entropy label smoothing
    class_weights: list[float] | str | None = None  #: harness: loss weight per class; auto: N / (classes x count)
    accumulation_steps: int = key(1, ge=1)  #: harness: micro-batches per optimizer step
    layer_decay: float | None = key(None, gt=0, le=1)  #: harness: layer-wise lr decay over encoder depth (e.g. 0.75)
    ema_decay: float = key(0.0, ge=0, lt=1)  #: harness: EMA of the weights, used for evaluation (0: off)
    mixup: float = key(0.0, ge=0)  #: harness: mixup Beta(alpha, alpha) (0: off)
    cutmix: float = key(0.0, ge=0)  #: harness: cutmix Beta(alpha, alpha) (0: off)
    mixup_prob: float = key(1.0, ge=0, le=1)  #: harness: probability that a batch is mixed
    mixup_switch_prob: float = key(0.5, ge=0, le=1)  #: harness: probability of cutmix when both are on
    #: harness: stop after this many NaN/Inf-loss steps in a row (each is skipped)
    max_nonfinite_steps: int = key(5, ge=1)
    heads: list[HeadConfig] = field(default_factory=list)  #: probe heads (lr x wd grid) on one encoder pass
    #: harness: conventions: harness, or vjepa2 (V-JEPA 2's probe eval step for step)
    protocol: str = key("harness", choices=("harness", "vjepa2"))


@dataclass
class WandbConfig:
    """Weights & Biases (harness); rank 0 logs. Without an API key or network it runs offline."""

    enabled: bool = False  #: log to W&B
    project: str = "harness"  #: W&B project
    entity: str | None = None  #: W&B team or user (default: yours)
    name: str | None = None  #: run name (default: the run folder's name)
    group: str | None = None  #: run group
    tags: list[str] = field(default_factory=list)  #: run tags
    #: auto (online with an API key, else offline), online, offline, disabled
    mode: str = key("auto", choices=("auto", "online", "offline", "disabled"))
    thumbnails: int = key(8, ge=0)  #: validation predictions logged with a video thumbnail per epoch
    log_model: bool = False  #: at the end, consolidate checkpoints/best into <folder>/best_model and upload it


@dataclass
class LoggingConfig:
    """Console, CSV, W&B, TensorBoard and progress output (harness)."""

    log_every: int = key(10, ge=1)  #: steps per CSV row / console line (losses are averaged over them)
    progress_bar: bool = True  #: progress on the main process: a bar on a terminal, a line every 30 s in a log file
    level: str = key("info", choices=("debug", "info", "warning"))  #: console log level: debug, info, warning
    stall_threshold: float = key(0.3, ge=0, le=1)  #: warn when more than this share of step time waits for data
    tensorboard: bool = False  #: TensorBoard event files in <folder>/tensorboard (scalars, confusion images, hparams)
    #: validation videos drawn with the attention probe's attention per evaluation, to TensorBoard and W&B (0: off)
    explain_videos: int = key(0, ge=0)
    #: validation videos whose probe vectors go to TensorBoard's projector and a W&B embedding table, per
    #: evaluation (0: off)
    embedding_projector: int = key(0, ge=0)
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class CheckpointingConfig:
    """What is saved when (harness). ``latest`` is written every epoch in any case."""

    every_steps: int = key(0, ge=0)  #: also write ``latest`` every N optimizer steps (0: only per epoch)
    save_best: bool = True  #: keep the checkpoint with the best validation top-1 as ``best``
    save_on_signal: bool = True  #: on SIGTERM/SIGUSR1 (SLURM's warning): save ``latest`` and exit cleanly


@dataclass
class ShardsConfig:
    """How shards stream into ranks (harness); the sources are ``data.shards`` / ``data.val_shards``."""

    interleave: int = key(4, ge=1)  #: shards each worker reads at once (samples drawn among them at random)
    resample: bool = False  #: draw shards with replacement (allows fewer shards than ranks x workers)
    #: shard files a worker keeps open at most (more are parked: closed, reopened later)
    max_open_files: int = key(64, ge=1)
    samples_per_epoch: int | None = key(None, ge=1)  #: epoch length when the sources have no manifest counts


@dataclass
class DistributedKeys:
    """How the job is spread over processes (harness): the keys of every strategy."""

    #: auto (ddp if several processes, else single), single, ddp, fsdp, deepspeed
    strategy: str = key("auto", choices=STRATEGY_CHOICES)
    #: process-group backend: auto (nccl on GPU, gloo on CPU), nccl, gloo
    backend: str = key("auto", choices=("auto", "nccl", "gloo"))


# Each strategy's own options are a section of ``distributed`` named after it (``distributed.fsdp.
# cpu_offload``), declared with the strategy in harness.parallel.registry: a new strategy adds its
# options there and this file does not change.
DistributedConfig = dataclasses.make_dataclass(
    "DistributedConfig",
    [(name, section, field(default_factory=section)) for name, section in OPTIONS_SECTIONS.items()],
    bases=(DistributedKeys,),
    namespace={"__module__": __name__, "__doc__": "``distributed``: the shared keys, then one section per strategy."},
)


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


# ``section.key`` -> its allowed values / interval, as the fields declare them (what validation checks)
CHOICES: dict[str, tuple] = constraints(Config, "choices")
RANGES: dict[str, str] = constraints(Config, "range")
