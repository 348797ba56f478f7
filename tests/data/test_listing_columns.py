"""Listings as columns: the vectorised parser means what the line parser means, line for line,
and a listing costs a process a few arrays, not an object per line."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from harness.data.listing import Listing, ListingError, VideoRecord, name_labels, read_listing
from harness.data.listing_parse import from_parsed, parse_lines, parse_text

LINE_PARSER = parse_lines  # the reference, whatever a test patches

PATHS = ["a.mp4", "/abs/b.mp4", "dir/c d.mp4", "x/e,f.mp4", "../up/g.mp4", "h", "s3://bucket/i.mp4", "caf\u00e9.mp4",
         "videos/clip_3", "j.mp4", "k.mp4"]  # fmt: skip
IDS = ["0", "3", "17", "007", "123456789", "1234567890", "3,17"]
NAMES = ["walk", "push_up", "air drumming", "run,walk"]
WRONG = ["-1", "1.5", "3,-1", "x.y"]


def random_line(rng: random.Random, named: bool, wrong: bool) -> str:
    path = rng.choice(PATHS)
    label = rng.choice((NAMES if named else IDS) + (WRONG if wrong else []))
    shape = rng.randrange(12 if wrong else 7)
    if shape == 1 and not wrong and ("," in path or "," in label):
        shape = 0  # path,3,17 is a wrong line
    if shape == 0:
        return f'"{path}",{label}' if "," not in label else f'"{path}","{label}"'
    if shape == 1:
        return f"{path},{label}"
    if shape == 2:
        return f"{path}\t{label}"
    if shape == 3:
        return f"  {path} {label}  "
    if shape == 4:
        return f"{path}  {label}"
    if shape == 5:
        return rng.choice(["", "# a comment", "   ", "#x 3"])
    if shape == 6:
        return f"{path} , {label}"
    if shape == 7:
        return path  # no label: malformed
    return f"{path} {label}"


def reference(raw: bytes, source: str):
    """The line parser alone: (records, error)."""
    base = os.path.abspath(os.path.dirname(source))
    text = raw.decode("utf-8").removeprefix("\ufeff")
    try:
        return list(from_parsed(LINE_PARSER(text, source), source, base)), None
    except ListingError as error:
        return None, str(error)


def vectorised(raw: bytes, source: str):
    try:
        return list(parse_text(raw, source)), None
    except ListingError as error:
        return None, str(error)


def test_vectorised_parser_means_what_the_line_parser_means(tmp_path, monkeypatch):
    import harness.data.listing_parse as parse

    whole_file = []
    line_parser = parse.parse_lines
    monkeypatch.setattr(parse, "parse_lines", lambda text, source, numbers=None: whole_file.append(numbers is None)
                        or line_parser(text, source, numbers))  # fmt: skip
    right = 0
    for seed in range(300):  # 300 random files of every line shape, a quarter with wrong lines
        whole_file.clear()
        if check_one_file(tmp_path, seed):
            right += 1
            assert not any(whole_file), f"a right file (seed {seed}) was read line by line"
    assert right > 150


def check_one_file(tmp_path, seed: int) -> bool:
    """Whether the file was right (both parsers agree either way)."""
    rng = random.Random(seed)
    named = seed % 3 == 0
    lines = [random_line(rng, named, wrong=seed % 4 == 0) for _ in range(rng.randrange(1, 40))]
    if seed % 4 == 1:
        lines.insert(0, rng.choice(["path,label", "video label", "Path Label"]))
    ending = "\r\n" if seed % 5 == 2 else "\n"
    raw = (("\ufeff" if seed % 7 == 3 else "") + ending.join(lines) + rng.choice(["", ending])).encode("utf-8")
    source = str(tmp_path / "list.csv")
    expected, expected_error = reference(raw, source)
    got, error = vectorised(raw, source)
    assert error == expected_error, (seed, raw)
    if expected is not None:
        assert [(r.path, r.label, r.name, r.where) for r in got] == [(r.path, r.label, r.name, r.where)
                                                                    for r in expected], (seed, raw)  # fmt: skip
    return expected is not None


def test_plain_lines_never_reach_the_line_parser(tmp_path, monkeypatch):
    import harness.data.listing_parse as parse

    calls = []
    monkeypatch.setattr(parse, "parse_line", lambda *a: calls.append(a) or ("", (0,), None))
    listing = tmp_path / "big.csv"
    listing.write_text("".join(f"train/c{i % 7}/v{i}.mp4 {i % 7}\n" for i in range(5000)) + "x/a b.mp4,3\n")
    columns = read_listing(listing)
    assert len(columns) == 5001 and len(calls) == 1, "only the odd line went through the line parser"
    assert columns.path(3) == str(tmp_path / "train" / "c3" / "v3.mp4") and columns.label(4999) == 4999 % 7


def test_columns_cost_the_path_text_and_a_few_bytes_per_line(tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_text("".join(f"train/class_{i % 400:03d}/{i:011d}.mp4 {i % 400}\n" for i in range(100_000)))
    columns = read_listing(listing)
    per_line = listing.stat().st_size / len(columns) + 8 + 4 + 4 + 4  # the file's bytes, start, length, label, line
    assert columns.nbytes() / len(columns) == pytest.approx(per_line, abs=0.01)
    assert all(
        isinstance(getattr(columns, name), np.ndarray) for name in ("text", "starts", "lengths", "labels", "lines")
    )


def test_relative_paths_are_joined_as_text_without_touching_the_file_system(tmp_path, monkeypatch):
    listing = tmp_path / "sub" / "l.txt"
    listing.parent.mkdir()
    listing.write_text("../videos/a.mp4 1\n./b.mp4 2\n")
    columns = read_listing(listing)
    monkeypatch.setattr(os, "stat", lambda *a, **k: pytest.fail("a file-system call per path"))
    assert columns.path(0) == str(tmp_path / "videos" / "a.mp4")
    assert columns.path(1) == str(tmp_path / "sub" / "b.mp4")


def test_names_become_ids_as_columns_and_records_made_in_code_work_too(tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_text("a.mp4 walk\nb.mp4 run\nc.mp4 walk,run\n")
    named = read_listing(listing)
    assert named.named and sorted(named.names) == ["run", "walk"]
    labelled = name_labels(named, ["run", "sit", "walk"], "classes.txt")
    assert [labelled.label(i) for i in range(3)] == [2, 0, (2, 0)]
    assert labelled.all_ids().tolist() == [2, 0, 2, 0] and labelled.lines_per_label().tolist() == [0, 1, 2, 2]
    made = Listing.from_records([VideoRecord("/x/a.mp4", 1), VideoRecord("/x/b.mp4", (0, 3))])
    assert [(r.path, r.label) for r in made] == [("/x/a.mp4", 1), ("/x/b.mp4", (0, 3))]
    assert made.where(1) == "/x/b.mp4", "records made in code are named by their path"


def test_npy_listings_are_columns_too(tmp_path):
    np.save(tmp_path / "pairs.npy", np.array([["/a.mp4", "4"], ["rel/b.mp4", "5"]]))
    columns = read_listing(tmp_path / "pairs.npy")
    assert [columns.label(i) for i in range(2)] == [4, 5] and columns.path(1) == str(tmp_path / "rel" / "b.mp4")
    np.save(tmp_path / "bad.npy", np.array([["/a.mp4", "4"], ["/b.mp4", "x"]]))
    with pytest.raises(ListingError, match=r"bad.npy:row 1: label 'x'"):
        read_listing(tmp_path / "bad.npy")


def test_records_made_in_code_keep_their_paths_as_they_are():
    made = Listing.from_records([VideoRecord("rel/a.mp4", 0), VideoRecord("/abs/b.mp4", 1)])
    assert list(made.paths()) == ["rel/a.mp4", "/abs/b.mp4"], "no folder is joined to a path made in code"
