"""harness: fine-tune ViT video encoders (V-JEPA 2 style) into video classifiers, from a laptop to SLURM clusters."""

__version__ = "0.1.0"
