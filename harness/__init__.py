"""harness: fine-tune ViT video encoders (V-JEPA 2 style) into video classifiers, from a laptop to SLURM clusters."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``harness.load_classifier`` / ``harness.Preprocessing`` without importing torch at ``import harness``."""
    if name in ("load_classifier", "Preprocessing"):
        from harness.export import model_io

        return getattr(model_io, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
