"""Several label sets per video (``meta.label_sets``): the layout of the logits, the loss (the sum of
the sets' cross-entropies), per-set metrics against hand computations, config errors, labels
resolved from listings made in code, and the dataset's items and batches."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.config import ConfigError, load_config
from harness.data.listing import VideoRecord
from harness.training.label_sets import LabelSets, configured_sets, label_set_problem, resolve_label_sets
from harness.training.metrics import set_columns
from harness.training.objective import LabelSetObjective, best_metric
from harness.training.set_metrics import LabelSetAccumulator, class_recall_at_k

SETS = LabelSets(("verb", "noun", "action"), (3, 4, 6))


def batch(seed: int = 0, size: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(size, SETS.total, generator=generator)
    labels = torch.stack([torch.randint(0, c, (size,), generator=generator) for c in SETS.sizes], dim=1)
    return logits, labels


def test_the_layout_cuts_the_logits_set_by_set():
    assert SETS.total == 13 and SETS.offsets == (0, 3, 7)
    logits = torch.arange(13.0)[None]
    assert [part.tolist() for part in SETS.split(logits)] == [[[0, 1, 2]], [[3, 4, 5, 6]], [[7, 8, 9, 10, 11, 12]]]
    assert SETS.split_names([str(i) for i in range(13)])[1] == ["3", "4", "5", "6"]
    assert LabelSets.from_dict(SETS.as_dict()) == SETS and list(SETS.as_dict()) == ["verb", "noun", "action"]
    probabilities = SETS.probabilities(torch.randn(2, 13))
    assert [part.sum(-1).tolist() for part in SETS.split(probabilities)] == [pytest.approx([1.0, 1.0])] * 3
    tops = SETS.top(SETS.probabilities(torch.tensor([0, 5, 1, 9, 0, 0, 2, 0, 0, 0, 0, 7, 1.0])), 2)
    assert [[c for c, _ in top] for top in tops] == [[1, 2], [0, 3], [4, 5]], "ids within each set"


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_loss_is_the_sum_of_each_sets_cross_entropy(smoothing):
    logits, labels = batch()
    objective = LabelSetObjective(SETS, label_smoothing=smoothing)
    by_hand = (
        F.cross_entropy(logits[:, 0:3], labels[:, 0], label_smoothing=smoothing)
        + F.cross_entropy(logits[:, 3:7], labels[:, 1], label_smoothing=smoothing)
        + F.cross_entropy(logits[:, 7:13], labels[:, 2], label_smoothing=smoothing)
    )
    assert objective.loss(logits, labels).item() == pytest.approx(by_hand.item(), rel=1e-6)
    targets = objective.targets(labels)
    assert (
        targets.shape == (5, 13)
        and [part.sum(-1).tolist() for part in SETS.split(targets)] == [pytest.approx([1.0] * 5)] * 3
    ), "one smoothed one-hot per set"
    assert objective.loss(logits, labels, targets).item() == pytest.approx(by_hand.item(), rel=1e-6)
    mixed = 0.7 * targets + 0.3 * targets.flip(0)  # what mixup makes of them
    soft = sum(-(t * part.log_softmax(-1)).sum(-1).mean() for part, t in zip(SETS.split(logits), SETS.split(mixed)))
    assert objective.loss(logits, labels, mixed).item() == pytest.approx(soft.item(), rel=1e-6)


def test_training_hits_are_the_sets_mean_or_the_chosen_sets():
    labels = torch.tensor([[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    logits = torch.full((3, 13), -5.0)
    for row, (verb, noun, action) in enumerate([(0, 1, 5), (1, 0, 3), (0, 3, 0)]):  # verb 2/3, noun 2/3, action 1/3
        logits[row, verb], logits[row, 3 + noun], logits[row, 7 + action] = 5.0, 5.0, 5.0
    mean = LabelSetObjective(SETS).hits(logits, labels)
    assert [h.item() for h in mean] == pytest.approx([(2 + 2 + 1) / 3, 3.0]), "top-5 of 3 and 4 classes: all"
    chosen = LabelSetObjective(SETS, metric="action").hits(logits, labels)
    assert [h.item() for h in chosen] == pytest.approx([1.0, 3.0])


#: one video per row: its verb (7 classes; classes 2, 4, 5 and 6 have no video) and where the
#: logits rank the true verb (1 = first); its noun (2 classes) and whether the noun is right
VIDEOS = [(0, 1, 0, True), (0, 6, 1, True), (1, 2, 1, False), (1, 5, 0, True), (1, 7, 0, False), (3, 1, 1, True)]


def ranked_logits() -> tuple[torch.Tensor, torch.Tensor]:
    sets = LabelSets(("verb", "noun"), (7, 2))
    logits = torch.zeros(len(VIDEOS), sets.total)
    for row, (verb, rank, noun, right) in enumerate(VIDEOS):
        others = [c for c in range(7) if c != verb]
        order = others[: rank - 1] + [verb] + others[rank - 1 :]
        logits[row, order] = torch.arange(7, 0, -1, dtype=torch.float32)  # order[0] scores highest
        logits[row, 7 + (noun if right else 1 - noun)] = 3.0
    return logits, torch.tensor([[verb, noun] for verb, _, noun, _ in VIDEOS])


def test_per_set_metrics_and_mean_class_recall_at_5_by_hand():
    sets = LabelSets(("verb", "noun"), (7, 2))
    logits, labels = ranked_logits()
    accumulator = LabelSetAccumulator(sets, torch.device("cpu"), metric="verb")
    accumulator.add(logits[:4], labels[:4], [f"v{i}" for i in range(4)])
    accumulator.add(logits[4:], labels[4:], ["v4", "v5"])
    result = accumulator.result(lambda tensor: tensor)
    verb, noun = result.label_sets["verb"], result.label_sets["noun"]
    assert verb.top1 == pytest.approx(2 / 6), "ranked first: videos 0 and 5"
    assert verb.top5 == pytest.approx(4 / 6), "ranked 1, 2, 5, 1: videos 0, 2, 3, 5"
    # per class with videos: verb 0 (1 of 2 in the top 5), 1 (2 of 3), 3 (1 of 1); the classes without
    # a validation video are left out (with them as 0 the mean would be (0.5 + 2/3 + 1) / 7)
    assert verb.class_recall5 == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert verb.mean_class_accuracy == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert verb.per_class["support"].tolist() == [2, 3, 0, 1, 0, 0, 0]
    assert verb.per_class["recall5"] == pytest.approx([1 / 2, 2 / 3, 0, 1, 0, 0, 0])
    assert verb.per_class["precision"][0] == pytest.approx(1 / 4), "verb 0 predicted for videos 0, 2, 3, 4"
    assert noun.top1 == pytest.approx(4 / 6) and noun.top5 == 1.0 and noun.class_recall5 == 1.0
    hand_losses = [F.cross_entropy(part, labels[:, s]).item() for s, part in enumerate((logits[:, :7], logits[:, 7:]))]
    assert [verb.loss, noun.loss] == pytest.approx(hand_losses, rel=1e-6)
    assert result.loss == pytest.approx(sum(hand_losses), rel=1e-6), "the run's loss: the sets' sum, as trained"
    assert result.top1 == pytest.approx((2 / 6 + 4 / 6) / 2) and result.count == 6 and result.confusion is None
    assert result.score == pytest.approx(2 / 6), "label_set_metric=verb ranks by the verb top-1"
    values = result.as_dict()
    assert set(set_columns(["verb", "noun"])) <= set(values)
    assert values["val_recall5_verb"] == pytest.approx(verb.class_recall5)
    assert values["val_recall5"] == pytest.approx((verb.class_recall5 + 1.0) / 2)
    video, truth, tops, scores = accumulator.rows[1]
    assert (video, truth, len(tops[0]), len(tops[1])) == ("v1", [0, 1], 5, 2), "top 5, or every class of a set"
    assert scores[0] == sorted(scores[0], reverse=True)
    assert class_recall_at_k(np.array([0, 0]), np.array([0, 0])) == 0.0


def test_the_sets_metrics_rank_heads_by_the_chosen_top1():
    logits, labels = ranked_logits()
    sets = LabelSets(("verb", "noun"), (7, 2))
    mean = LabelSetAccumulator(sets, torch.device("cpu"))
    mean.add(logits, labels, ["v"] * 6)
    assert mean.result(lambda tensor: tensor).score == pytest.approx((2 / 6 + 4 / 6) / 2)
    assert "verb: top-1 33.33%, top-5 66.67%, recall@5 72.22%" in mean.result(lambda tensor: tensor).describe()


def sets_config(tmp_path, *extra: str):
    return load_config(None, [f"folder={tmp_path / 'run'}", "meta.label_sets=[verb, noun, action]", *extra])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["meta.multi_label=true"], "meta.multi_label is set together with meta.label_sets"),
        (["meta.num_classes=10"], r"meta.num_classes is set together with meta.label_sets: give each set's"),
        (["meta.label_sets=[verb, verb]"], r"names a set twice"),
        (["meta.label_sets=[verb, h1]"], r"'h1' is not a usable set name"),
        (["meta.label_sets=[verb-noun]"], r"'verb-noun' is not a usable set name"),
        (["meta.label_sets={verb: -2, noun: 3}"], r"as an integer >= 0"),
        (["data.class_names=classes.txt"], r"data.class_names: with meta.label_sets give one file per set"),
        (["data.class_names={verb: v.txt, object: o.txt}"], r"\['object'\] are not among meta.label_sets"),
        (["meta.label_set_metric=object"], r"'object' is neither 'mean' nor one of the label sets"),
        (["data.shards=[train/manifest.json]"], "data.shards is set together with meta.label_sets"),
        (["optimization.class_weights=auto"], "optimization.class_weights is set together"),
        (["data.class_balanced_sampling=0.5"], "data.class_balanced_sampling is set together"),
        (["logging.explain_videos=2"], "logging.explain_videos is set together"),
    ],
)
def test_config_errors_are_one_line_and_name_the_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        sets_config(tmp_path, *overrides)
    assert "\n" not in str(error.value)


def test_keys_without_label_sets_and_the_forms_of_the_sets(tmp_path):
    for extra, message in ((["data.class_names={verb: v.txt}"], "mapping .* but meta.label_sets is not set"),
                           (["meta.label_set_metric=verb"], "needs meta.label_sets")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            load_config(None, [f"folder={tmp_path / 'run'}", *extra])
    config = sets_config(tmp_path, "meta.label_sets={verb: 97, noun: 0, action: 3806}", "meta.label_set_metric=action")
    assert configured_sets(config) == {"verb": 97, "noun": 0, "action": 3806}
    assert best_metric(config) == "val_top1_action"
    assert configured_sets(sets_config(tmp_path)) == {"verb": 0, "noun": 0, "action": 0}
    assert best_metric(sets_config(tmp_path)) == "val_top1"


def dataset(labels, sources=1):
    from harness.data import ClipSpec, EvalTransform, VideoClipDataset

    per_source = np.array_split(np.arange(len(labels)), sources)
    records = [[VideoRecord(f"/videos/{i}.mp4", tuple(labels[i])) for i in part] for part in per_source]
    return VideoClipDataset([(r, ClipSpec(4, frame_step=1)) for r in records], EvalTransform(32), train=False)


def test_classes_and_names_come_from_the_config_the_name_files_or_the_training_listings(tmp_path):
    train = dataset([(0, 1, 2), (2, 0, 5), (1, 3, 0), (0, 0, 1)], sources=2)
    sets, names = resolve_label_sets(sets_config(tmp_path), train)
    assert sets == LabelSets(("verb", "noun", "action"), (3, 4, 6)), "1 + each set's largest id, over both listings"
    assert names == ["0", "1", "2", "0", "1", "2", "3", *map(str, range(6))]
    (tmp_path / "nouns.txt").write_text("cup\nknife\npan\nlid\nspoon\n")
    config = sets_config(tmp_path, f"data.class_names={{noun: {tmp_path / 'nouns.txt'}}}",
                         "meta.label_sets={verb: 5, noun: 0, action: 0}")  # fmt: skip
    sets, names = resolve_label_sets(config, train)
    assert sets.sizes == (5, 5, 6), "verb as given, noun as named, action from the listings"
    assert sets.split_names(names)[1] == ["cup", "knife", "pan", "lid", "spoon"]
    config = sets_config(tmp_path, f"data.class_names={{noun: {tmp_path / 'nouns.txt'}}}",
                         "meta.label_sets={verb: 0, noun: 7, action: 0}")  # fmt: skip
    with pytest.raises(ConfigError, match=r"data.class_names.noun: .*nouns.txt names 5 classes but the label set"):
        resolve_label_sets(config, train)
    with pytest.raises(ConfigError, match="the classes of verb, action are unknown without training listings"):
        resolve_label_sets(sets_config(tmp_path, "meta.label_sets={verb: 0, noun: 4, action: 0}"), None)


def test_labels_need_one_id_per_set_each_below_its_classes(tmp_path):
    from harness.training.checks import check_labels

    config = sets_config(tmp_path, "meta.label_sets={verb: 3, noun: 4, action: 6}")
    sets, _ = resolve_label_sets(config, dataset([(0, 1, 2)]))
    assert label_set_problem(dataset([(0, 1, 2), (2, 3, 5)]), sets) is None
    problem = label_set_problem(dataset([(0, 1, 2), (2, 4, 5)]), sets)
    assert problem == "/videos/1.mp4: noun 4 is not one of the 4 noun classes (ids 0..3)", "(records name their path)"
    with pytest.raises(ConfigError, match=r"data.datasets: /videos/1.mp4: 2 label\(s\) on the line, but the run has 3"):
        resolve_label_sets(sets_config(tmp_path), dataset([(0, 1, 2), (2, 3)]))
    with pytest.raises(ConfigError, match=r"data.val_datasets: /videos/0.mp4: action 6 is not one of the 6 action"):
        check_labels(config, sets.total, dataset([(0, 1, 2)]), dataset([(0, 1, 6)]), sets)


def test_a_listing_header_names_the_sets_and_the_run_picks_its_own_by_name(tmp_path, good_videos):
    # EK100's converter writes path,verb,noun,action,start,end: a run of [noun, verb] takes those
    # two columns, in its order, for the checks and for every item's label
    from harness.data import ClipSpec, EvalTransform, VideoClipDataset
    from harness.data.listing import read_listing
    from harness.training.checks import check_labels

    listing = tmp_path / "train.csv"
    listing.write_text(f"path,verb,noun,action,start,end\n{good_videos[0]},2,0,5,0,0.5\n{good_videos[1]},1,3,4,0,1\n")
    train = VideoClipDataset([(read_listing(listing), ClipSpec(4, frame_step=1))], EvalTransform(32), train=False)
    config = sets_config(tmp_path, "meta.label_sets=[noun, verb]")
    sets, _ = resolve_label_sets(config, train)
    assert sets == LabelSets(("noun", "verb"), (4, 3)), "1 + the largest id of each named column"
    check_labels(config, sets.total, train, None, sets)
    assert [train[0].label, train[1].label] == [(0, 2), (3, 1)], "noun first, as the run names them"
    fresh = VideoClipDataset([(read_listing(listing), ClipSpec(4, frame_step=1))], EvalTransform(32), train=False)
    with pytest.raises(ConfigError, match=r"train.csv: its header has the label sets verb, noun, action, not hand"):
        resolve_label_sets(sets_config(tmp_path, "meta.label_sets=[verb, hand]"), fresh)
    plain = load_config(None, [f"folder={tmp_path / 'run'}"])
    with pytest.raises(
        ConfigError,
        match=r"data.datasets: .*train.csv: its header names the label sets verb, noun, "
        r"action; train them with meta.label_sets=\[verb,noun,action\]",
    ):
        check_labels(plain, 6, fresh, None, None)


def test_an_item_carries_its_sets_ids_and_a_batch_stacks_them(good_videos):
    from harness.data import ClipSpec, EvalTransform, VideoClipDataset
    from harness.data.loader import collate_clips

    records = [VideoRecord(str(good_videos[0]), (2, 0, 5)), VideoRecord(str(good_videos[1]), (1, 1, 1))]
    data = VideoClipDataset([(records, ClipSpec(4, frame_step=1))], EvalTransform(32), train=False)
    assert data[0].label == (2, 0, 5)
    labels = collate_clips([data[0], data[1]]).labels
    assert labels.dtype == torch.int64 and labels.tolist() == [[2, 0, 5], [1, 1, 1]], "[B, S]: column s = set s"
    assert [column.tolist() for column in SETS.columns(labels)] == [[2, 1], [0, 1], [5, 1]]


def test_a_checkpoint_of_other_label_sets_is_refused(tmp_path):
    from harness.models.checkpoint_io import CheckpointError
    from harness.training.state.resume import check_same_label_sets

    check_same_label_sets(tmp_path, {"label_sets": SETS.as_dict()}, SETS)
    check_same_label_sets(tmp_path, {}, None)
    other = LabelSets(("verb", "noun", "action"), (4, 3, 6))  # the same 13 outputs, cut elsewhere
    with pytest.raises(CheckpointError, match=r"trained with label sets \{'verb': 3, 'noun': 4, 'action': 6\}"):
        check_same_label_sets(tmp_path, {"label_sets": SETS.as_dict()}, other)
    with pytest.raises(CheckpointError, match="label sets none, this run has"):
        check_same_label_sets(tmp_path, {"label_sets": None}, SETS)


def test_predictions_of_a_label_set_model_have_columns_per_set(tmp_path):
    from harness.predict.predictor import Row, write_rows

    sets = [("verb", [(2, "take", 0.7), (0, "put", 0.2)]), ("noun", [(1, "cup", 0.9), (0, "pan", 0.1)])]
    rows = [Row((0,), "a.mp4", sets=sets), Row((1,), "b.mp4", error="unreadable")]
    write_rows(rows, tmp_path / "p.csv", ["put", "wash", "take", "pan", "cup"], 2, windows=False)
    with open(tmp_path / "p.csv", newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0])[:4] == ["video", "verb_pred1", "verb_name1", "verb_prob1"]
    assert (read[0]["verb_name1"], read[0]["noun_name1"], read[0]["noun_prob2"]) == ("take", "cup", "0.100000")
    assert read[1]["error"] == "unreadable" and read[1]["verb_name1"] == ""
