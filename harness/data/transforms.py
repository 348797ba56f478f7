"""Per-clip video transforms: training augmentation and deterministic evaluation crops.

Input is what a decoder returns, ``uint8 [T, H, W, 3]``; output is ``float32 [C, T, H, W]``
normalised by channel mean/std. Every random choice is made once per clip, so all frames of a
clip get the same crop, flip and augmentation. Cropping and resizing run on ``uint8`` frames in
channels-last memory (torchvision's fast path) and the float conversion happens last, on the
small cropped clip: converting whole frames to float first is what makes other pipelines slow.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as F
from torchvision.transforms import RandomResizedCrop

from harness.core.crop import CropSize, crop_hw

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Box = tuple[int, int, int, int]  # top, left, height, width in source pixels


def to_channels_first(frames: torch.Tensor) -> torch.Tensor:
    """``[T, H, W, C]`` -> ``[T, C, H, W]`` as a view (channels-last memory, no copy)."""
    return frames.permute(0, 3, 1, 2)


def normalize_clips(
    clips: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Normalise ``uint8 [..., C, T, H, W]`` clips on whatever device they are (on-device mode).

    With ``TrainTransform(normalize=False)`` the loader ships ``uint8`` clips (4x less memory
    traffic through worker IPC, pinned memory and host-to-device copies) and the trainer calls
    this after moving the batch to the accelerator. Returns a contiguous ``dtype`` tensor.
    """
    mean_t, inv_std = _channel_constants(clips.device, tuple(mean), tuple(std))
    out = (clips.float() - mean_t) * inv_std
    return out.to(dtype).contiguous()


def denormalize_clips(
    clips: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """The inverse of :func:`normalize_clips`: ``uint8 [..., C, T, H, W]`` (``uint8`` clips are
    returned as they are), to draw what the model saw."""
    if clips.dtype == torch.uint8:
        return clips
    scale = torch.tensor(std, dtype=torch.float32, device=clips.device).view(-1, 1, 1, 1) * 255.0
    offset = torch.tensor(mean, dtype=torch.float32, device=clips.device).view(-1, 1, 1, 1) * 255.0
    return (clips.float() * scale + offset).round().clamp(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=16)
def _channel_constants(
    device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached per device: building them every step would be a blocking host-to-device copy,
    # which stalls the host until the GPU has drained its queue and kills loader overlap.
    shape = (len(mean), 1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(shape) * 255.0
    inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32).view(shape) * 255.0)
    return mean_t.to(device), inv_std.to(device)


class Normalize:
    """``uint8 [T, C, H, W]`` -> ``float32 [C, T, H, W]`` with ``(x / 255 - mean) / std``."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = [255.0 * m for m in mean]
        self.inv_std = [1.0 / (255.0 * s) for s in std]

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        # Make the uint8 clip planar first (1 byte per element is the cheapest thing to move),
        # then convert and normalise each channel plane with scalar ops on contiguous memory.
        planar = frames.permute(1, 0, 2, 3).contiguous()
        out = torch.empty(planar.shape, dtype=torch.float32)
        for channel, (mean, inv_std) in enumerate(zip(self.mean, self.inv_std)):
            out[channel].copy_(planar[channel]).sub_(mean).mul_(inv_std)
        return out


def crop_resize(frames: torch.Tensor, box: Box, size: CropSize) -> torch.Tensor:
    """Crop ``box`` from every frame of ``uint8 [T, C, H, W]`` and resize to ``size`` (one side:
    a square; or ``(height, width)``)."""
    top, left, height, width = box
    return F.resized_crop(frames, top, left, height, width, list(crop_hw(size)), antialias=True)


def motion_crop_resize(frames: torch.Tensor, start: Box, end: Box, size: CropSize) -> torch.Tensor:
    """Crop a box that moves linearly from ``start`` to ``end`` over the clip (motion shift)."""
    steps = frames.shape[0]
    out = []
    for t in range(steps):
        alpha = t / max(steps - 1, 1)
        top = round(start[0] + alpha * (end[0] - start[0]))
        left = round(start[1] + alpha * (end[1] - start[1]))
        out.append(crop_resize(frames[t : t + 1], (top, left, start[2], start[3]), size))
    return torch.cat(out)


class TrainTransform:
    """Training augmentation for one clip.

    Args:
        crop_size: output size in pixels: one side (square) or ``(height, width)``.
        random_resize_scale: range of the crop area as a fraction of the frame area.
        random_resize_aspect_ratio: range of the crop box's width/height ratio, relative to the
            output's ``width / height`` (the same thing for a square output): 1 cuts a box of the
            output's shape, so a non-square output is stretched no more than a square one.
        horizontal_flip: flip the whole clip with probability 0.5.
        motion_shift: let the crop box drift linearly across the clip (same size, new place).
        auto_augment: apply RandAugment (same ops and magnitudes to every frame of a clip).
        reprob: probability of random erasing one box (in all frames) after normalisation.
        mean, std: channel statistics in ``[0, 1]`` units.
        normalize: return normalised ``float32`` (default). ``False`` returns the ``uint8``
            clip (a ``[C, T, H, W]`` view of channels-last memory) for :func:`normalize_clips`
            on the accelerator; random erasing then needs ``normalize=True``.

    Call with ``uint8 [T, H, W, 3]``; returns ``[C, T, height, width]`` of ``crop_size``.
    Randomness comes from torch's global generator (seed it per sample for reproducibility).
    """

    def __init__(
        self,
        crop_size: CropSize = 224,
        random_resize_scale: Sequence[float] = (0.3, 1.0),
        random_resize_aspect_ratio: Sequence[float] = (0.75, 1.35),
        horizontal_flip: bool = True,
        motion_shift: bool = False,
        auto_augment: bool = False,
        reprob: float = 0.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        normalize: bool = True,
    ) -> None:
        if reprob > 0 and not normalize:
            raise ValueError("reprob > 0 (random erasing) needs normalize=True")
        self.crop_size = crop_size
        self.crop_hw = crop_hw(crop_size)
        self.scale = tuple(random_resize_scale)
        self.ratio = tuple(random_resize_aspect_ratio)
        # The boxes' width/height range in source pixels: the configured range around the output's
        # own aspect (x 1.0 for a square output: the same floats, so the same boxes as ever).
        aspect = self.crop_hw[1] / self.crop_hw[0]
        self.box_ratio = (self.ratio[0] * aspect, self.ratio[1] * aspect)
        self.horizontal_flip = horizontal_flip
        self.motion_shift = motion_shift
        self.auto_augment = v2.RandAugment(num_ops=2, magnitude=9) if auto_augment else None
        self.normalize = Normalize(mean, std) if normalize else None
        self.erase = v2.RandomErasing(p=reprob, value=0) if reprob > 0 else None

    def needed_short_side(self, height: int, width: int) -> int:
        """The smallest short side a ``height x width`` source can be decoded at without any
        crop box being upsampled: the smallest boxes (the least area; the lowest width/height
        ratio for the narrowest, the highest for the shortest) must still be at least the output's
        width and height. (A box is placed in relative terms, so decoding smaller keeps the crops'
        framing; only their pixel count changes, by integer rounding of the box at the smaller size.)"""
        out_height, out_width = self.crop_hw
        area = self.scale[0] * height * width
        narrowest = math.sqrt(area * self.box_ratio[0])
        shortest = math.sqrt(area * (1 / self.box_ratio[1]))
        short = min(height, width)
        # (for a square output this is side * short / min(narrowest, shortest): the same bits as
        # one square root of the smaller ratio, since sqrt and division keep the order of floats)
        return math.ceil(max(out_width * short / narrowest, out_height * short / shortest))

    def sample_box(self, frames: torch.Tensor) -> Box:
        """A random-resized-crop box for ``[T, C, H, W]`` frames."""
        return tuple(RandomResizedCrop.get_params(frames, list(self.scale), list(self.box_ratio)))

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        clip = to_channels_first(frames)
        box = self.sample_box(clip)
        if self.motion_shift:
            height, width = clip.shape[-2:]
            end = (
                int(torch.randint(0, height - box[2] + 1, ()).item()),
                int(torch.randint(0, width - box[3] + 1, ()).item()),
                box[2],
                box[3],
            )
            clip = motion_crop_resize(clip, box, end, self.crop_hw)
        else:
            clip = crop_resize(clip, box, self.crop_hw)
        if self.horizontal_flip and torch.rand(()) < 0.5:
            clip = clip.flip(-1)
        if self.auto_augment is not None:
            clip = self.auto_augment(clip)
        if self.normalize is None:
            return clip.permute(1, 0, 2, 3)
        out = self.normalize(clip)
        if self.erase is not None:
            out = self.erase(out)  # [C, T, H, W]: the same box is erased in every frame
        return out


class DecodeScale:
    """The size to decode a source at (``data.decode_max_short_side``): ``"auto"`` = the short
    side the ``transform`` needs (:meth:`TrainTransform.needed_short_side`), an integer = at most
    that short side, ``0`` = full size. The aspect ratio is kept; sizes are even (what video
    scalers produce); a source no larger than asked is decoded as it is (None)."""

    def __init__(self, transform, setting: int | str = "auto") -> None:
        self.transform, self.setting = transform, setting

    def __call__(self, height: int, width: int) -> tuple[int, int] | None:
        if self.setting == 0:
            return None
        wanted = self.transform.needed_short_side(height, width) if self.setting == "auto" else int(self.setting)
        short = min(height, width)
        if wanted >= short:
            return None
        ratio = wanted / short
        return 2 * math.ceil(height * ratio / 2), 2 * math.ceil(width * ratio / 2)


def eval_boxes(height: int, width: int, crop_size: CropSize, cover: CropSize, num_views: int) -> list[Box]:
    """Source-pixel boxes equal to "resize the frame, keeping its aspect ratio, to the smallest
    size that covers ``cover`` (height, width; one int: a square), then crop ``crop_size``".

    For a square crop and cover that is "resize the short side to ``cover``". ``num_views`` crops
    are spread along the side with room to spare after the resize (the long side for a square
    cover; 1: centre; 3: start/centre/end) and centred on the other. Cropping in source pixels
    and resizing once gives the same view as resizing whole frames first, at a fraction of the cost.
    """
    crop_h, crop_w = crop_hw(crop_size)
    cover_h, cover_w = crop_hw(cover)
    # The side that binds the resize: compared in integers (cover_h / height >= cover_w / width);
    # for a square cover it is the frame's short side, and the scale the same division as ever.
    by_height = cover_h * width >= cover_w * height
    scale = cover_h / height if by_height else cover_w / width
    side_h = min(height, math.ceil(crop_h / scale))
    side_w = min(width, math.ceil(crop_w / scale))
    boxes = []
    for view in range(num_views):
        fraction = 0.5 if num_views == 1 else view / (num_views - 1)
        if by_height:
            top, left = (height - side_h) // 2, round(fraction * (width - side_w))
        else:
            top, left = round(fraction * (height - side_h)), (width - side_w) // 2
        boxes.append((top, left, side_h, side_w))
    return boxes


class EvalTransform:
    """Deterministic evaluation views of one clip.

    Resize the frame (aspect kept) to the smallest size that covers the crop enlarged by
    ``short_side_ratio`` (256/224 by default, as V-JEPA 2 does): for a square crop of side ``S``
    that is the short side resized to ``S x 256/224``; a ``(height, width)`` crop needs a frame
    of at least ``(height, width) x 256/224``, whichever side that binds. Then take ``num_views``
    crops of ``crop_size`` along the side with room to spare (the long side for a square crop).

    Call with ``uint8 [T, H, W, 3]``; returns a list of ``num_views`` tensors ``[C, T, height,
    width]`` (``float32``, or ``uint8`` with ``normalize=False``, see :class:`TrainTransform`).
    """

    def __init__(
        self,
        crop_size: CropSize = 224,
        num_views: int = 1,
        short_side_ratio: float = 256 / 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        normalize: bool = True,
    ) -> None:
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.crop_size = crop_size
        self.crop_hw = crop_hw(crop_size)
        self.num_views = num_views
        #: the (height, width) the resized frame covers: the crop x short_side_ratio, rounded
        self.cover = tuple(round(side * short_side_ratio) for side in self.crop_hw)
        self.normalize = Normalize(mean, std) if normalize else (lambda clip: clip.permute(1, 0, 2, 3))

    def needed_short_side(self, height: int, width: int) -> int:
        """The short side evaluation resizes a ``height x width`` source to anyway: decoding at it
        loses nothing (for a square crop: ``crop_size x short_side_ratio`` whatever the source)."""
        cover_h, cover_w = self.cover
        short = min(height, width)
        if cover_h * width >= cover_w * height:  # (as eval_boxes: the height binds the resize)
            return -(-short * cover_h // height)  # integer ceil: exactly the cover for a square crop
        return -(-short * cover_w // width)

    def __call__(self, frames: torch.Tensor) -> list[torch.Tensor]:
        clip = to_channels_first(frames)
        boxes = eval_boxes(clip.shape[-2], clip.shape[-1], self.crop_hw, self.cover, self.num_views)
        return [self.normalize(crop_resize(clip, box, self.crop_hw)) for box in boxes]
