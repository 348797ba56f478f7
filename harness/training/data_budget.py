"""One verdict on unusable videos for the whole run, the same on 1 rank and on 1024.

Each rank's data source only counts (``stats()``: ``attempts``, ``failed_attempts``, kept by its
workers in shared memory). Here the counts of one epoch are added up over all ranks and compared
with ``data.max_failure_fraction``:

- during the epoch, the run stops as soon as the unusable videos exceed the fraction of the
  samples the whole epoch needs (that budget is spent, whatever the rest of the epoch holds);
- at the end of the epoch, it stops when they exceed the fraction of the videos tried.

Every epoch is judged on its own, so an epoch's share of dead files does not pile up over epochs,
and a rank's share of the data shrinking with the world size changes nothing: with 0.5% missing
files and a fraction of 1%, a run on 1, 8 or 64 ranks trains on; with 5%, all stop in epoch 1
with the same one-line message. Validation is judged the same way after each evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.data.files import TooManyDecodeFailures


def failure_verdict(failed: int, attempts: int, planned: int, fraction: float, what: str, final: bool) -> str | None:
    """The message when ``failed`` of ``attempts`` videos (over all ranks, in one epoch or one
    evaluation) are too many, else None. ``planned``: the samples the epoch needs over all ranks
    (mid-epoch the verdict compares with it); ``final``: the epoch is over (compare with
    ``attempts``)."""
    allowed = fraction * (attempts if final else planned)
    if failed <= allowed:
        return None
    share = failed / max(attempts, 1)
    return (f"{what}: {failed} of {attempts} videos tried over all ranks could not be used ({100 * share:.1f}%), "
            f"more than data.max_failure_fraction={fraction} allows; check the listing and the files (each "
            "unusable one is named in the warnings and quarantine files)")  # fmt: skip


class FailureBudget:
    """Judges one data source's counts over all ranks (a resumable part of the run).

    Args:
        stats: the source's ``attempt_counts`` (this rank's cumulative ``(attempts, failed)``).
        reduce: sums a CPU tensor over all ranks.
        fraction: ``data.max_failure_fraction``.
        planned: samples one epoch needs over all ranks (0 for validation: judged when done).
        name: what the messages call the data (``training``, ``validation``).
    """

    def __init__(self, stats: Callable[[], tuple[int, int]], reduce: Callable[[torch.Tensor], torch.Tensor],
                 fraction: float, planned: int = 0, name: str = "training") -> None:  # fmt: skip
        self.stats, self.reduce, self.fraction, self.planned, self.name = stats, reduce, fraction, planned, name
        self.epoch: int | None = None
        self.baseline = self._local()
        self.carried = [0, 0]  #: [attempts, failed] of this epoch over all ranks before a resume
        self.last = [0, 0]  #: the epoch's counts over all ranks at the last check
        self.finished = [0, 0]  #: the counts of the finished epochs, over all ranks
        self.open = False  #: an epoch is being counted (its counts are not in ``finished`` yet)

    def _local(self) -> list[int]:
        attempts, failed = self.stats()
        return [int(attempts), int(failed)]

    def start_epoch(self, epoch: int, resumed: bool = False) -> None:
        """Count from here for ``epoch``; ``resumed``: continue the epoch a checkpoint was in."""
        if not (resumed and self.epoch == epoch):
            self.carried = [0, 0]
        self.epoch, self.baseline, self.last, self.open = epoch, self._local(), list(self.carried), True

    def counts(self) -> list[int]:
        """``[attempts, failed]`` of the current epoch over all ranks (a collective: every rank
        calls it at the same step)."""
        local = self._local()
        delta = torch.tensor([local[0] - self.baseline[0], local[1] - self.baseline[1]], dtype=torch.float64)
        summed = self.reduce(delta).tolist()
        return [int(summed[0]) + self.carried[0], int(summed[1]) + self.carried[1]]

    def check(self, final: bool = False) -> None:
        """Stop the run (:class:`TooManyDecodeFailures`, one line) when the epoch's counts over all
        ranks exceed the budget; ``final`` at the end of the epoch (or of an evaluation)."""
        self.last = self.counts()
        attempts, failed = self.last
        what = f"{self.name} epoch {self.epoch + 1}" if self.epoch is not None else self.name
        message = failure_verdict(failed, attempts, self.planned, self.fraction, what, final)
        if final and self.open:
            self.finished, self.open = [self.finished[0] + attempts, self.finished[1] + failed], False
        if message:
            raise TooManyDecodeFailures(message)

    def totals(self) -> dict[str, int]:
        """Videos tried and unusable over all ranks: finished epochs plus the one in progress."""
        current = self.last if self.open else [0, 0]
        return {"attempts": self.finished[0] + current[0], "failed_attempts": self.finished[1] + current[1]}

    def state_dict(self) -> dict:
        """The epoch and its counts over all ranks at the last check (plain values)."""
        return {"epoch": self.epoch, "counts": list(self.last), "finished": list(self.finished)}

    def load_state_dict(self, state: dict) -> None:
        """Continue the counts of the epoch a checkpoint was saved in."""
        self.epoch, self.carried, self.finished = state["epoch"], list(state["counts"]), list(state["finished"])


def build_budgets(strategy, train_set, val_set, fraction: float, samples_per_epoch: int) -> tuple:
    """The training and validation budgets of a run (the validation one None without data);
    ``samples_per_epoch``: what one training epoch takes over all ranks."""

    def reduce(tensor: torch.Tensor) -> torch.Tensor:
        return strategy.all_reduce_sum(tensor.to(strategy.device)).cpu()

    train = FailureBudget(train_set.attempt_counts, reduce, fraction, samples_per_epoch, "training")
    val = FailureBudget(val_set.attempt_counts, reduce, fraction, 0, "validation") if val_set is not None else None
    return train, val
