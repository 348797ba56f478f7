"""Real image files for the tests, written by encoders other than the one that reads them (the
harness decodes with Pillow): PNG and JPEG by torchvision's libpng / libjpeg, WebP (lossless) and
BMP by FFmpeg's encoders through PyAV."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from harness.data.listing import VideoRecord, write_listing
from harness.data.synthetic import moving_square_frames, write_class_names

FORMATS = ("png", "jpg", "webp", "bmp")


def smooth_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """``uint8 [H, W, 3]``: gradients and a few flat blocks (what JPEG keeps close to the source)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    frame = np.stack([rows, cols, (rows + cols) / 2], axis=-1) * 200 + 20
    for _ in range(3):
        top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
        frame[top : top + height // 4, left : left + width // 4] = rng.integers(0, 256, size=3)
    return frame.astype(np.uint8)


def _ffmpeg_encode(frame: np.ndarray, codec: str, pixel_format: str, options: dict | None = None) -> bytes:
    import av

    context = av.CodecContext.create(codec, "w")
    context.height, context.width, context.pix_fmt = frame.shape[0], frame.shape[1], pixel_format
    context.options = options or {}
    picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format=pixel_format)
    return b"".join(bytes(packet) for packet in [*context.encode(picture), *context.encode(None)])


def encode_image(frame: np.ndarray, extension: str) -> bytes:
    """The bytes of an image file of ``uint8 [H, W, 3]`` RGB ``frame`` in the format of ``extension``
    (lossless but for JPEG, quality 95)."""
    import torchvision.io

    chw = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).contiguous()
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs
        warnings.simplefilter("ignore", DeprecationWarning)
        if extension.lower() == "png":
            return torchvision.io.encode_png(chw).numpy().tobytes()
        if extension.lower() in ("jpg", "jpeg"):
            return torchvision.io.encode_jpeg(chw, quality=95).numpy().tobytes()
    if extension.lower() == "webp":
        return _ffmpeg_encode(frame, "libwebp", "bgra", {"lossless": "1"})
    if extension.lower() == "bmp":
        return _ffmpeg_encode(frame, "bmp", "bgr24")
    raise ValueError(f"no encoder for .{extension}")


def make_image_dataset(root: Path, num_classes: int = 4, train_per_class: int = 3, val_per_class: int = 1,
                       size: tuple[int, int] = (48, 64)) -> Path:  # fmt: skip
    """``root/train.csv`` and ``root/val.csv`` listing images (the first frame of the demo's
    moving squares; every format in turn) and ``root/classes.txt``, as the demo dataset lays out."""
    rng = np.random.default_rng(0)
    count = 0
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        (root / split).mkdir(parents=True, exist_ok=True)
        records = []
        for label in range(num_classes):
            for index in range(per_class):
                frame = moving_square_frames(label, 1, *size, rng)[0]
                relative = f"{split}/{label}_{index}.{FORMATS[count % len(FORMATS)]}"
                (root / relative).write_bytes(encode_image(frame, FORMATS[count % len(FORMATS)]))
                records.append(VideoRecord(relative, label))
                count += 1
        write_listing(records, root / f"{split}.csv")
    write_class_names(root, num_classes)
    return root


#: a V-JEPA 2.1 size for seconds-long CPU runs, registered by the tests that use it (at ViT-B's width
#: even four blocks take 1.6 s to initialise); four blocks: the four hierarchical levels
TINY_VJEPA21 = ("vjepa2_1_vit_tiny_test", {"embed_dim": 64, "depth": 4, "num_heads": 2, "mlp_ratio": 4.0})


def tiny_vjepa21_sizes() -> tuple[dict, str, dict]:
    """``(the vjepa2.1 family's sizes, the tiny size's name, its size)``: what a test adds to the
    registry for the duration of a run (``monkeypatch.setitem(*tiny_vjepa21_sizes())``)."""
    from harness.models import FAMILIES

    return FAMILIES["vjepa2.1"].sizes, *TINY_VJEPA21


def probe_overrides(root: Path, folder: Path, frames: int, *extra: str) -> list[str]:
    """A frozen tiny V-JEPA 2.1 encoder and an attentive probe trained for 2 steps on ``root``'s
    listings, clips of ``frames`` frames (1: images through the encoder's image path)."""
    from tests.conftest import tiny_overrides

    return tiny_overrides(root, folder, f"model.model_name={TINY_VJEPA21[0]}", "model.depth=4",
                          f"data.dataset_fpcs=[{frames}]", f"data.val_dataset_fpcs=[{frames}]",
                          "meta.finetune_encoder=false", "optimization.epochs=1", "optimization.ipe=2",
                          *extra)  # fmt: skip


def fit_counting_paths(trainer) -> dict:
    """Fit ``trainer`` (a V-JEPA 2.1 probe); returns how often each patch embedding of its encoder
    ran (``patch_embed``: videos, ``patch_embed_img``: images) and whether the probe's weights changed."""
    encoder = trainer.strategy.unwrap(trainer.model).encoder
    calls = {"patch_embed": 0, "patch_embed_img": 0}

    def count(name):
        return lambda *_: calls.__setitem__(name, calls[name] + 1)

    handles = [getattr(encoder, name).register_forward_hook(count(name)) for name in calls]
    state = trainer.strategy.full_model_state(trainer.model)  # (on one CPU process: the live tensors)
    before = {k: v.clone() for k, v in state.items() if k.startswith("classifier.")}
    trainer.fit()
    after = trainer.strategy.full_model_state(trainer.model)
    for handle in handles:
        handle.remove()
    return {"calls": calls, "probe_changed": any(not torch.equal(v, after[k]) for k, v in before.items())}
