"""Per-class precision, recall and F1 from the validation confusion matrix."""

import pytest
import torch

from harness.training.metrics import EvalAccumulator, per_class_scores


def test_per_class_precision_recall_f1_by_hand():
    # rows true, columns predicted: class 0: 3 right, 1 called 1; class 1: 2 right; class 2: no videos,
    # predicted once (for a class-1 video)
    confusion = torch.tensor([[3, 1, 0], [0, 2, 1], [0, 0, 0]])
    scores = per_class_scores(confusion)
    assert scores["support"].tolist() == [4, 3, 0]
    assert scores["precision"].tolist() == pytest.approx([1.0, 2 / 3, 0.0])
    assert scores["recall"].tolist() == pytest.approx([0.75, 2 / 3, 0.0])
    assert scores["f1"].tolist() == pytest.approx([2 * 0.75 / 1.75, 2 / 3, 0.0])
    result = EvalAccumulator(3, torch.device("cpu"))
    result.confusion += confusion
    result.sums += torch.tensor([0.0, 7.0, 7.0], dtype=torch.float64)
    macro = result.result(lambda tensor: tensor)
    assert macro.macro_f1 == pytest.approx((2 * 0.75 / 1.75 + 2 / 3) / 2)  # over the classes with videos
    assert macro.macro_recall == pytest.approx(macro.mean_class_accuracy)
