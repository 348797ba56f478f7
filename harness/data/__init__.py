"""Video data: listings, clip sampling, decoding, transforms, datasets and loaders.

This package takes plain arguments and knows nothing of the config tree or of training.
"""

import importlib

# name -> submodule: imported on first use, so that ``harness.data.sampling`` (pure Python) is
# available to the config without importing torch, torchvision and the decoders (fast --help).
_EXPORTS = {
    "ClipBatch": "loader",
    "ClipItem": "files",
    "ClipLoader": "loader",
    "ClipSpec": "sampling",
    "ClipSpecError": "sampling",
    "DecodeError": "decode",
    "EvalTransform": "transforms",
    "Listing": "listing",
    "ListingError": "listing",
    "TooManyDecodeFailures": "files",
    "TrainTransform": "transforms",
    "VideoClipDataset": "files",
    "VideoRecord": "listing",
    "build_loader": "loader",
    "collate_clips": "loader",
    "load_clips": "files",
    "open_video": "decode",
    "read_clip_frames": "decode",
    "read_listing": "listing",
    "resolve_backend": "decode",
    "sample_clip_indices": "sampling",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"harness.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'harness.data' has no attribute {name!r}")


__all__ = [
    "ClipBatch",
    "ClipItem",
    "ClipLoader",
    "ClipSpec",
    "ClipSpecError",
    "DecodeError",
    "EvalTransform",
    "Listing",
    "ListingError",
    "TooManyDecodeFailures",
    "TrainTransform",
    "VideoClipDataset",
    "VideoRecord",
    "build_loader",
    "collate_clips",
    "load_clips",
    "open_video",
    "read_clip_frames",
    "read_listing",
    "resolve_backend",
    "sample_clip_indices",
]
