import numpy as np
import pytest
import torch

from harness.training.metrics import EvalAccumulator, topk_correct
from harness.training.mixup import Mixup, smooth_one_hot, soft_cross_entropy
from harness.training.state.ema import ModelEMA


def test_topk_counts():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 1])
    top1, top2 = topk_correct(logits, labels, (1, 2))
    assert int(top1) == 1 and int(top2) == 2
    (top5,) = topk_correct(logits, labels, (5,))
    assert int(top5) == 3, "k larger than the number of classes counts every sample"


def test_accumulator_metrics_and_rank_sum():
    acc = EvalAccumulator(3, torch.device("cpu"))
    acc.add(torch.tensor([[5.0, 0, 0], [5.0, 0, 0], [0, 5.0, 0]]), torch.tensor([0, 0, 2]), ["a", "b", "c"])
    acc.add(torch.tensor([[0, 0, 5.0]]), torch.tensor([2]), ["d"])
    result = acc.result(lambda t: t.mul_(2))  # stands for two identical ranks summed
    assert result.count == 8 and result.top1 == pytest.approx(0.75)
    assert result.mean_class_accuracy == pytest.approx((1.0 + 0.5) / 2), "classes without samples are left out"
    assert result.confusion.tolist() == [[4, 0, 0], [0, 0, 0], [0, 2, 2]]
    assert [row[0] for row in acc.rows] == ["a", "b", "c", "d"] and acc.rows[0][2][0] == 0


def test_mixup_targets_are_convex_and_sum_to_one():
    clips = torch.randn(4, 2, 3, 4, 8, 8)
    labels = torch.tensor([0, 1, 2, 3])
    mixup = Mixup(mixup_alpha=0.8)
    mixed, targets = mixup(clips, smooth_one_hot(labels, 4, 0.1), np.random.default_rng(0))
    torch.testing.assert_close(targets.sum(-1), torch.ones(4))
    lam = (targets[0, 0] - 0.025) / 0.9
    torch.testing.assert_close(mixed[0], clips[0] * lam + clips[3] * (1 - lam))


def test_cutmix_lambda_is_the_pasted_area():
    clips = torch.zeros(2, 1, 3, 2, 10, 10)
    clips[1] = 1.0
    one_hot = smooth_one_hot(torch.tensor([0, 1]), 2, 0.0)
    mixed, targets = Mixup(cutmix_alpha=1.0)(clips, one_hot, np.random.default_rng(3))
    pasted = mixed[0].mean().item()  # sample 0 is zeros, sample 1's box is ones
    assert targets[0, 1].item() == pytest.approx(pasted)
    assert torch.equal(mixed[0, 0, :, 0], mixed[0, 0, :, 1]), "the same box in every frame"


def test_soft_cross_entropy_equals_hard_for_one_hot():
    logits = torch.randn(5, 7)
    labels = torch.randint(7, (5,))
    hard = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.2)
    torch.testing.assert_close(soft_cross_entropy(logits, smooth_one_hot(labels, 7, 0.2)), hard)


def test_ema_average_and_swap():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    ema.update(model)
    assert torch.allclose(ema.state_dict()["weight"], torch.full((1, 2), 0.75))
    with ema.applied(model):
        assert torch.allclose(model.weight, torch.full((1, 2), 0.75))
    assert torch.allclose(model.weight, torch.ones(1, 2)), "trained weights come back"
