"""Single-device models: the video ViT encoder family, attentive classifier, checkpoint loading."""

from harness.models.checkpoint_io import CheckpointError, LoadReport, load_classifier, load_encoder
from harness.models.pooler import AttentiveClassifier, AttentivePooler, MultiHeadClassifier, VideoClassifier
from harness.models.registry import create_encoder, encoder_names
from harness.models.vit import VisionTransformer

__all__ = [
    "AttentiveClassifier",
    "AttentivePooler",
    "CheckpointError",
    "LoadReport",
    "MultiHeadClassifier",
    "VideoClassifier",
    "VisionTransformer",
    "create_encoder",
    "encoder_names",
    "load_classifier",
    "load_encoder",
]
