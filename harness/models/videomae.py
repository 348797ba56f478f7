"""VideoMAE (v1 and v2) as a model family: encoder, sizes, options and foreign layouts, in one file.

The encoder keeps the parameter names of VideoMAE's fine-tuning code (MCG-NJU/VideoMAE and
OpenGVLab/VideoMAEv2, ``modeling_finetune.py``): ``patch_embed.proj``, ``blocks.i.norm1``,
``blocks.i.attn.qkv`` (no bias) with separate ``q_bias``/``v_bias`` (the key has none),
``blocks.i.attn.proj``, ``blocks.i.norm2``, ``blocks.i.mlp.fc1``/``fc2``, optional layer scale
``blocks.i.gamma_1``/``gamma_2`` (``init_values > 0``), and ``norm`` (only without mean pooling).
Positions are a fixed 1D sin-cos table over the flattened token index (sin on even channels,
cos on odd ones), never saved. Its own head, mean pooling + ``fc_norm`` + ``head`` (a Linear), is
the harness's ``linear`` classifier (``model.classifier=linear``); the attentive probe works too.

v2 differs from v1 only in what the family registers: the ViT-g size (``videomae_giant``, patch 14
in its recipe: ``data.patch_size=14``) and layer scale being common in its checkpoints. Foreign
layouts read: VideoMAE's own ``.pth`` files (state under ``model`` or ``module``; pre-training
files with ``encoder.`` names and a decoder, which is left out) and Hugging Face ``VideoMAEModel``
/ ``VideoMAEForVideoClassification`` directories (``model_type: videomae``). Export goes to the
latter (:func:`to_transformers`, the family's export hook) for a linear head without layer scale.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.crop import CropSize, crop_hw
from harness.core.errors import UserError
from harness.models.checkpoint_io import is_state_dict, strip_prefixes
from harness.models.encoder import VideoEncoder
from harness.models.family import HFLayout, ModelFamily, register_family
from harness.models.heads import LinearClassifier
from harness.models.hf_transformers import (
    TOLERANCE,
    ClipFormat,
    encoder_and_classifier_state,
    logit_difference,
    transformers_module,
)
from harness.models.layers import MLP, DropPath, attention, init_linear_and_norms
from harness.models.state_names import rename, rename_rules, stack_parts
from harness.models.vit import PatchEmbed3D


def sinusoid_table(count: int, dim: int) -> torch.Tensor:
    """VideoMAE's ``[1, count, dim]`` table: channel ``j`` of position ``p`` is
    ``p / 10000^(2 * (j // 2) / dim)``, then ``sin`` on even ``j`` and ``cos`` on odd ``j``."""
    positions = torch.arange(count, dtype=torch.float64, device="cpu")[:, None]
    exponents = 2 * (torch.arange(dim, dtype=torch.float64, device="cpu") // 2) / dim
    angles = positions / torch.pow(10000.0, exponents)[None, :]
    angles[:, 0::2] = angles[:, 0::2].sin()
    angles[:, 1::2] = angles[:, 1::2].cos()
    return angles.float()[None]


class VideoMAEAttention(nn.Module):
    """Self-attention with VideoMAE's biases: queries and values have one, keys have none."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, use_sdpa: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.use_sdpa = num_heads, use_sdpa
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, self.use_sdpa)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class VideoMAEBlock(nn.Module):
    """Pre-norm block with optional layer scale (``gamma_1``/``gamma_2``, VideoMAE's ``init_values``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float,
                 use_sdpa: bool, norm_eps: float, init_values: float) -> None:  # fmt: skip
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = VideoMAEAttention(dim, num_heads, qkv_bias, use_sdpa)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.init_values = init_values
        if init_values > 0:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn, mlp = self.attn(self.norm1(x)), None
        if self.gamma_1 is not None:
            attn = self.gamma_1 * attn
        x = x + self.drop_path(attn)
        mlp = self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            mlp = self.gamma_2 * mlp
        return x + self.drop_path(mlp)


class VideoMAEEncoder(VideoEncoder):
    """VideoMAE's video ViT: ``[B, C, T, H, W]`` -> tokens ``[B, N, D]`` (see the module docstring).

    With ``use_mean_pooling`` (VideoMAE's default) the tokens leave without a final norm, which the
    ``linear`` head's ``fc_norm`` applies after pooling; without it they pass ``norm`` and a
    linear head takes the first token, as VideoMAE does.
    """

    family = "videomae"

    def __init__(
        self,
        img_size: CropSize = 224,
        num_frames: int = 16,
        patch_size: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_mean_pooling: bool = True,
        layer_norm_eps: float = 1e-6,
        init_values: float = 0.0,
        drop_path_rate: float = 0.0,
        use_sdpa: bool = True,
        init_std: float = 0.02,
        out_layers: list[int] | tuple[int, ...] | None = None,
        level_concat: str | None = None,
    ) -> None:
        super().__init__()
        self.out_layers = self.checked_out_layers(out_layers, depth)
        self.level_concat = self.checked_level_concat(level_concat)
        self.embed_dim, self.num_heads, self.depth, self.mlp_ratio = embed_dim, num_heads, depth, mlp_ratio
        self.patch_size, self.tubelet_size, self.init_std = patch_size, tubelet_size, init_std
        self.head_pooling = "mean" if use_mean_pooling else "first"
        self.patch_embed = PatchEmbed3D(patch_size, tubelet_size, in_chans, embed_dim)
        height, width = crop_hw(img_size)
        self.grid_size = (num_frames // tubelet_size, height // patch_size, width // patch_size)
        count = math.prod(self.grid_size)
        # Fixed and recomputable (VideoMAE never saves it either): a non-persistent buffer.
        self.register_buffer("pos_embed", sinusoid_table(count, embed_dim), persistent=False)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            VideoMAEBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, rate, use_sdpa, layer_norm_eps, init_values)
            for rate in rates
        )
        self.norm = nn.Identity() if use_mean_pooling else nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.init_weights()

    def init_stem(self) -> None:
        """Truncated-normal patch projection (VideoMAE keeps PyTorch's there; initialising it makes
        a meta-device build complete), unit norms, the position table recomputed."""
        init_linear_and_norms(self, self.init_std, skip=self.blocks)
        if not self.pos_embed.is_meta:
            self.pos_embed.copy_(sinusoid_table(self.pos_embed.shape[1], self.embed_dim))

    def init_block(self, index: int, block: nn.Module) -> None:
        """VideoMAE's: truncated-normal Linear weights, zero biases (``q_bias``/``v_bias`` too),
        unit norms, layer scale at ``init_values``."""
        init_linear_and_norms(block, self.init_std)
        for name in ("q_bias", "v_bias"):
            if getattr(block.attn, name) is not None:
                nn.init.zeros_(getattr(block.attn, name))
        for gamma in (block.gamma_1, block.gamma_2):
            if gamma is not None:
                nn.init.constant_(gamma, block.init_values)

    def position_table(self, count: int, device: torch.device) -> torch.Tensor:
        """The table for ``count`` tokens (another input size gets the table VideoMAE would build for it)."""
        if count == self.pos_embed.shape[1]:
            return self.pos_embed
        return sinusoid_table(count, self.embed_dim).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> tokens ``[B, N, D]`` (with ``L`` out_layers ``[B, L * N, D]``, or
        ``[B, N, L * D]`` joined along channels)."""
        self.patch_embed.grid(x.shape)  # checks divisibility
        tokens = self.patch_embed(x)
        tokens = tokens + self.position_table(tokens.shape[1], tokens.device).to(tokens.dtype)
        return self.run_blocks(tokens)


@dataclass
class VideoMAEOptions:
    """``model.options`` of the videomae family (VideoMAE's own argument names)."""

    use_mean_pooling: bool = True  #: mean-pool + fc_norm head; False: final norm and the first token
    layer_norm_eps: float = 1e-6  #: block LayerNorm epsilon (VideoMAE 1e-6; Hugging Face configs 1e-12)
    qkv_bias: bool = True  #: query and value biases
    init_values: float = 0.0  #: layer scale initial value (0: no layer scale)


SIZES = {
    "videomae_small": {"embed_dim": 384, "depth": 12, "num_heads": 6, "mlp_ratio": 4.0},
    "videomae_base": {"embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0},
    "videomae_large": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "mlp_ratio": 4.0},
    "videomae_huge": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "mlp_ratio": 4.0},
    "videomae_giant": {"embed_dim": 1408, "depth": 40, "num_heads": 16, "mlp_ratio": 48 / 11},  # v2's ViT-g
}


def native_states(checkpoint: dict[str, Any]) -> tuple[dict, dict] | None:
    """(encoder, head) states of a VideoMAE ``.pth`` (``model``/``module`` key or flat; a
    pre-training file's ``encoder.*`` names with the decoder left out; a harness model's
    ``encoder.*``/``classifier.*``)."""
    for key in ("model", "module"):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    if not is_state_dict(checkpoint):
        return None
    state = strip_prefixes(checkpoint)
    if any(key.startswith("encoder.") for key in state):
        encoder = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        head = {k.removeprefix("classifier."): v for k, v in state.items() if k.startswith("classifier.")}
        return encoder, head
    head = {k: v for k, v in state.items() if k.startswith(("fc_norm.", "head."))}
    return {k: v for k, v in state.items() if k not in head}, head


# Hugging Face transformers' names (after the ``videomae.`` prefix) against ours.
_HF_NAMES = (
    ("embeddings.patch_embeddings.projection.", "patch_embed.proj."),
    ("encoder.layer.{i}.layernorm_before.", "blocks.{i}.norm1."),
    ("encoder.layer.{i}.layernorm_after.", "blocks.{i}.norm2."),
    ("encoder.layer.{i}.attention.output.dense.", "blocks.{i}.attn.proj."),
    ("encoder.layer.{i}.attention.attention.q_bias", "blocks.{i}.attn.q_bias"),
    ("encoder.layer.{i}.attention.attention.v_bias", "blocks.{i}.attn.v_bias"),
    ("encoder.layer.{i}.intermediate.dense.", "blocks.{i}.mlp.fc1."),
    ("encoder.layer.{i}.output.dense.", "blocks.{i}.mlp.fc2."),
    ("layernorm.", "norm."),
)
_FROM_HF, _TO_HF = rename_rules(_HF_NAMES, to_hf=False), rename_rules(_HF_NAMES, to_hf=True)


def hf_encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our encoder state from a ``VideoMAEModel`` / ``VideoMAEForVideoClassification`` one."""
    state = {k.removeprefix("videomae."): v for k, v in state.items() if not k.startswith(("fc_norm.", "classifier."))}
    state = {k: v for k, v in state.items() if not k.startswith(("decoder.", "encoder_to_decoder", "mask_token"))}
    out: dict[str, torch.Tensor] = {}
    for layer in sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}):
        prefix = f"encoder.layer.{layer}.attention.attention."
        for part in ("query", "value"):  # transformers >= 5: the biases live in the Linear layers
            bias = state.pop(f"{prefix}{part}.bias", None)
            if bias is not None:
                out[f"blocks.{layer}.attn.{part[0]}_bias"] = bias
        stacked = stack_parts(state, prefix, ("query", "key", "value"))
        out[f"blocks.{layer}.attn.qkv.weight"] = stacked["weight"]
    out.update(rename(state, _FROM_HF))
    return out


def hf_state_from_ours(encoder: dict[str, torch.Tensor], head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``VideoMAEForVideoClassification`` state (transformers >= 5 names) from our encoder and
    linear head; the inverse of :func:`hf_encoder_state` and :func:`hf_classifier_state`."""
    encoder, out = dict(encoder), {}
    for layer in sorted({int(m.group(1)) for k in encoder if (m := re.match(r"blocks\.(\d+)\.attn\.qkv\.", k))}):
        prefix = f"encoder.layer.{layer}.attention.attention."
        pieces = encoder.pop(f"blocks.{layer}.attn.qkv.weight").chunk(3, dim=0)
        for part, piece in zip(("query", "key", "value"), pieces):
            out[f"{prefix}{part}.weight"] = piece.contiguous()
        for part in ("q", "v"):
            bias = encoder.pop(f"blocks.{layer}.attn.{part}_bias", None)
            if bias is not None:
                out[f"{prefix}{'query' if part == 'q' else 'value'}.bias"] = bias
    out.update(rename(encoder, _TO_HF))
    out = {f"videomae.{key}": value for key, value in out.items()}
    out.update({k.replace("head.", "classifier.", 1): v for k, v in head.items() if k.startswith("head.")})
    out.update({k: v for k, v in head.items() if k.startswith("fc_norm.")})
    return out


def hf_classifier_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our ``linear`` head's state from a ``VideoMAEForVideoClassification`` one."""
    out = {k.replace("classifier.", "head.", 1): v for k, v in state.items() if k.startswith("classifier.")}
    out.update({k: v for k, v in state.items() if k.startswith("fc_norm.")})
    return out


def hf_encoder_options(config: dict[str, Any]) -> dict[str, Any]:
    """Encoder sizes and options of a Hugging Face ``VideoMAEConfig``."""
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {config['hidden_act']!r} is not supported (only gelu)")
    return {
        "embed_dim": config["hidden_size"],
        "depth": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "mlp_ratio": config.get("intermediate_size", 4 * config["hidden_size"]) / config["hidden_size"],
        "patch_size": config.get("patch_size", 16),
        "tubelet_size": config.get("tubelet_size", 2),
        "in_chans": config.get("num_channels", 3),
        "qkv_bias": config.get("qv_bias", config.get("qkv_bias", True)),
        "use_mean_pooling": config.get("use_mean_pooling", True),
        "layer_norm_eps": config.get("layer_norm_eps", 1e-12),
    }


def hf_classifier_options(config: dict[str, Any]) -> dict[str, Any]:
    """The head of a ``VideoMAEForVideoClassification``: a linear classifier whose ``fc_norm``
    has PyTorch's default epsilon (1e-5) in ``transformers``."""
    return {"kind": "linear", "norm_eps": 1e-5}


def to_transformers(model: nn.Module, clip_format: ClipFormat, values: dict[str, Any]) -> tuple[nn.Module, Any]:
    """A videomae-family classifier with a linear head (built from config ``values``) as a
    ``VideoMAEForVideoClassification`` that gives its logits, and the ``VideoMAEImageProcessor``
    of ``clip_format``; a user error says why not."""
    transformers = transformers_module()
    encoder, head, names = model.encoder, model.classifier, clip_format.class_names
    settings = values.get("model", {})
    problems = [
        not isinstance(head, LinearClassifier) and "its classifier is not the linear head (model.classifier=linear)",
        any(block.gamma_1 is not None for block in encoder.blocks) and "it has layer scale (init_values > 0)",
        encoder.out_layers is not None and "it reads multi-level features (model.out_layers)",
        settings.get("clip_aggregation", "auto") not in ("auto", "average_logits")
        and "its clips are aggregated by concat_tokens",
    ]
    if reason := next((p for p in problems if p), None):
        raise UserError(f"cannot export as a Hugging Face VideoMAE classifier: {reason}")
    first = encoder.blocks[0]
    config = transformers.VideoMAEConfig(
        image_size=crop_hw(clip_format.crop_size)[0], patch_size=encoder.patch_size,
        num_frames=clip_format.frames_per_clip,
        tubelet_size=encoder.tubelet_size, hidden_size=encoder.embed_dim, num_hidden_layers=encoder.depth,
        num_attention_heads=encoder.num_heads, intermediate_size=first.mlp.fc1.out_features,
        qv_bias=first.attn.q_bias is not None, use_mean_pooling=head.pooling == "mean",
        layer_norm_eps=first.norm1.eps, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )  # fmt: skip
    theirs = transformers.VideoMAEForVideoClassification(config).eval()
    ours_encoder, ours_head = encoder_and_classifier_state(model)
    result = theirs.load_state_dict(hf_state_from_ours(ours_encoder, ours_head), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"cannot export as a Hugging Face VideoMAE classifier: its weights do not map (missing "
                        f"{result.missing_keys[:3]}, left over {result.unexpected_keys[:3]})")  # fmt: skip
    difference = logit_difference(model, theirs, clip_format, "pixel_values")
    if difference > TOLERANCE:
        raise UserError(f"cannot export as a Hugging Face VideoMAE classifier: transformers' model differs from ours "
                        f"by {difference:.2e} on test clips (its fc_norm epsilon is 1e-5: train with "
                        "model.pooler_norm_eps=1e-5)")  # fmt: skip
    side = crop_hw(clip_format.crop_size)[0]  # (square: harness.export.hf exports no other)
    processor = transformers.VideoMAEImageProcessor(
        size={"shortest_edge": round(side * 256 / 224)},
        crop_size={"height": side, "width": side},
        image_mean=list(clip_format.mean),
        image_std=list(clip_format.std),
    )
    return theirs, processor


VIDEOMAE = register_family(
    ModelFamily(
        name="videomae",
        sizes=SIZES,
        build=VideoMAEEncoder,
        options=VideoMAEOptions,
        encoder_states=lambda checkpoint, key=None: (states := native_states(checkpoint)) and states[0],
        classifier_states=lambda checkpoint, index: (states := native_states(checkpoint)) and states[1],
        hf=HFLayout(
            "videomae",
            hf_encoder_options,
            hf_encoder_state,
            hf_classifier_state,
            hf_classifier_options,
            clip_shape=lambda config: (config.get("num_frames", 16), config.get("image_size", 224)),
            model_name="videomae_base",
            to_transformers=to_transformers,
        ),  # fmt: skip
        default_classifier="linear",
    )
)
