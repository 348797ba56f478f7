"""Video data: listings, clip sampling, decoding, transforms, datasets and loaders.

This package takes plain arguments and knows nothing of the config tree or of training.
"""

from harness.data.decode import DecodeError, open_video, read_clip_frames, resolve_backend
from harness.data.files import ClipItem, TooManyDecodeFailures, VideoClipDataset, load_clips
from harness.data.listing import ListingError, VideoRecord, read_listing
from harness.data.loader import ClipBatch, ClipLoader, build_loader, collate_clips
from harness.data.sampling import ClipSpec, ClipSpecError, sample_clip_indices
from harness.data.transforms import EvalTransform, TrainTransform

__all__ = [
    "ClipBatch",
    "ClipItem",
    "ClipLoader",
    "ClipSpec",
    "ClipSpecError",
    "DecodeError",
    "EvalTransform",
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
