"""Everything resumable about a run, as parts with ``state_dict`` / ``load_state_dict``.

The strategy saves the model and the optimizer (its formats differ); everything else a resume
needs is a part: the train state (epoch, step, position, best, W&B run id), the precision's loss
scaler, the running sums of the log rows and of the epoch (saved once, with the strategy's
state), and per rank the loader's stream position and this rank's piece of the EMA (saved in the
rank's own file). Saving and resuming (:mod:`harness.training.state.resume`) receive a
:class:`RunContext`, never the trainer: they take the parts they need.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

from harness.config import Config
from harness.parallel.strategy import Strategy
from harness.training.state.checkpoint import CheckpointManager
from harness.training.state.ema import ModelEMA

if TYPE_CHECKING:
    from harness.training.label_sets import LabelSets


class Stateful(Protocol):
    """A resumable part."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


@dataclasses.dataclass
class TrainState:
    """Where the run is; with the RNG and the model/optimizer state, all a resume needs."""

    epoch: int = 0  #: epoch in progress (0-based)
    step: int = 0  #: optimizer steps done
    batch_in_epoch: int = 0  #: micro-batches of this rank consumed in ``epoch``
    best_top1: float = -1.0
    best_epoch: int = -1
    last_eval: dict | None = None  #: metrics of the latest evaluation
    skipped_steps: int = 0  #: steps dropped for a NaN/Inf loss
    nonfinite_streak: int = 0  #: such steps in a row
    wandb_run_id: str | None = None  #: continued by a resumed job
    best_head: int | None = None  #: multi-head runs: the head of the best evaluation (used for export)

    def state_dict(self) -> dict[str, Any]:
        """Plain values."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore in place (whoever holds this object sees the resumed values)."""
        for field in dataclasses.fields(self):
            if field.name in state:
                setattr(self, field.name, state[field.name])


@dataclasses.dataclass
class RunContext:
    """What saving and resuming a run touch.

    Attributes:
        parts: saved once with the strategy's state (``train_state``, ``precision``, ``window``,
            ``epoch_sums``...), restored by key.
        loader: this rank's training loader (its stream position goes to the rank file).
        ema: the moving average of the weights, if the run keeps one (this rank's piece).
    """

    config: Config
    folder: Path
    strategy: Strategy
    model: nn.Module
    optimizer: Any
    checkpoints: CheckpointManager
    state: TrainState
    parts: dict[str, Stateful]
    loader: Stateful
    ema: ModelEMA | None
    num_classes: int
    class_names: list[str]
    steps_per_epoch: int
    label_sets: LabelSets | None = None  #: label-set runs: the sets' names and classes (saved in ``meta.json``)
