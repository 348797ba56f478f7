"""The retrieval example: nearest neighbours by cosine in a harness.embed folder (harness.embed.neighbours)."""

from pathlib import Path

import pytest

from harness.embed.cli import main as embed_main
from harness.embed.neighbours import main, names_of, search


def class_of(video: str) -> str:
    """The demo's class is in its file name: ``val/up_003.mp4`` -> ``up``."""
    return Path(video.split("@")[0]).stem.rsplit("_", 1)[0]


@pytest.fixture(scope="module")
def embedded(square_run, tmp_path_factory):
    """The trained demo's train and validation videos, pooled and probe vectors."""
    root, run = square_run
    out = tmp_path_factory.mktemp("neighbours") / "emb"
    code = embed_main([str(run), str(root / "train.csv"), str(root / "val.csv"), "--output", str(out), "--features",
                       "pooled,probe", "--rows-per-shard", "20", "--workers", "0", "--no-progress"])  # fmt: skip
    assert code == 0
    return root, out


@pytest.mark.parametrize("feature, least", [("probe", 0.5), ("pooled", 0.35)])  # chance: 0.25
def test_the_neighbours_of_a_validation_video_mostly_share_its_class(embedded, feature, least):
    root, out = embedded
    queries = [line.split()[0] for line in (root / "val.csv").read_text().splitlines()]
    found = search(out, queries, k=5, feature=feature)
    assert len(found) == len(queries) == 16
    named = names_of(out, found)
    shards = {shard for q in found for _, shard, _ in q.best}
    assert len(shards) > 1, "the neighbours come from several shards"
    hits = []
    for query in found:
        scores = [score for score, _, _ in query.best]
        assert scores == sorted(scores, reverse=True) and len(scores) == 5 and max(scores) <= 1 + 1e-6
        neighbours = [named[(shard, row)] for _, shard, row in query.best]
        assert query.video not in neighbours, "a query is not its own neighbour"
        hits += [class_of(n) == class_of(query.video) for n in neighbours]
    precision = sum(hits) / len(hits)
    print(f"{feature}: precision@5 {precision:.2f} (chance 0.25)")
    assert precision >= least, f"{feature}: precision@5 {precision:.2f}"


def test_the_command_prints_neighbours_and_refuses_what_it_cannot_find(embedded, tmp_path, capsys):
    _, out = embedded
    assert main([str(out), "val/up_000.mp4", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("val/up_000.mp4") and len(lines) == 4
    assert lines[1].split()[0] == "1" and float(lines[1].split()[1]) >= float(lines[3].split()[1])
    assert main([str(out), "up_000.mp4", "-k", "1"]) == 0  # the end of a path: train's and val's
    heads = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert [Path(head).parent.name + "/" + Path(head).name for head in heads] == ["train/up_000.mp4", "val/up_000.mp4"]
    for argv, message in (([str(out), "sideways_000.mp4"], "no embedded video matches sideways_000.mp4"),
                          ([str(out), "up_000.mp4", "-k", "0"], "-k must be >= 1"),
                          ([str(out), "up_000.mp4", "--feature", "levels"], "has no feature 'levels'"),
                          ([str(tmp_path), "up_000.mp4"], "a finished harness.embed output")):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
