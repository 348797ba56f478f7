"""Single-device models: encoder families (``vit``, ``vjepa2.1``, ``videomae``), classifier heads, checkpoint loading.

Importing this package registers the built-in model families (:mod:`harness.models.family`).
"""

from harness.models import videomae, vit_family, vjepa21_family  # noqa: F401  (registers the families)
from harness.models.checkpoint_io import CheckpointError, LoadReport, load_classifier, load_encoder
from harness.models.family import (
    FAMILIES,
    EncoderSettings,
    ModelFamily,
    family_of,
    family_of_module,
    materialize,
    materialize_stem,
)
from harness.models.heads import LinearClassifier
from harness.models.pooler import AttentiveClassifier, AttentivePooler, MultiHeadClassifier, VideoClassifier
from harness.models.registry import create_encoder, encoder_names
from harness.models.vit import VisionTransformer

__all__ = [
    "FAMILIES",
    "AttentiveClassifier",
    "AttentivePooler",
    "CheckpointError",
    "EncoderSettings",
    "LinearClassifier",
    "LoadReport",
    "ModelFamily",
    "MultiHeadClassifier",
    "VideoClassifier",
    "VisionTransformer",
    "create_encoder",
    "encoder_names",
    "family_of",
    "family_of_module",
    "load_classifier",
    "load_encoder",
    "materialize",
    "materialize_stem",
]
