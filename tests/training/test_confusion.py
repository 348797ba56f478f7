"""The confusion matrix a person reads: names on both axes, the most confused classes when many."""

import numpy as np
from PIL import Image

from harness.training.confusion import MAX_PLOTTED, most_confused, plot_confusion, read_confusion, write_confusion


def test_many_classes_show_the_most_confused_ones(tmp_path):
    classes = 50
    confusion = np.diag(np.full(classes, 10.0))
    confusion[7, 41] = confusion[41, 7] = 6  # the two most confused classes
    confusion[3, 12] = 2
    shown = most_confused(confusion, MAX_PLOTTED)
    assert len(shown) == MAX_PLOTTED and {3, 7, 12, 41} <= set(shown.tolist()) and list(shown) == sorted(shown)
    plot_confusion(confusion, [f"class {i}" for i in range(classes)], tmp_path / "c.png")
    assert Image.open(tmp_path / "c.png").size[0] >= 1000


def test_csv_round_trip_keeps_names(tmp_path):
    import torch

    confusion = torch.tensor([[3, 1], [0, 4]])
    write_confusion(confusion, tmp_path / "c.csv", tmp_path / "c.png", ["cat", "dog"])
    matrix, names = read_confusion(tmp_path / "c.csv")
    assert names == ["cat", "dog"] and matrix.tolist() == [[3, 1], [0, 4]]
    assert (tmp_path / "c.png").stat().st_size > 5000
