"""Training: the loop (:class:`Trainer`), optimizer and schedules, metrics, checkpoints.

Named ``training`` (not ``train``) so that ``harness/train.py`` can be the entry point that
``python -m harness.train`` and ``deepspeed harness/train.py`` both run.
"""

from harness.training.trainer import Trainer, TrainState

__all__ = ["TrainState", "Trainer"]
