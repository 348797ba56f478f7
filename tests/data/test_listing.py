import numpy as np
import pytest

from harness.data.listing import ListingError, name_labels, read_listing, write_listing


def test_space_separated_relative_paths_resolve_against_listing_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    listing = tmp_path / "sub" / "train.csv"
    listing.write_text("videos/a.mp4 3\n/abs/b.mp4 0\n\n# comment\nmy dir/c d.mp4 7\n")
    records = read_listing(listing)
    assert [r.label for r in records] == [3, 0, 7]
    assert records[0].path == str(tmp_path / "sub" / "videos" / "a.mp4")
    assert records[1].path == "/abs/b.mp4"
    assert records[2].path.endswith("my dir/c d.mp4")


def test_comma_separated_with_header(tmp_path):
    listing = tmp_path / "l.csv"
    listing.write_text("path,label\n/x/a.mp4,1\n/x/b.mp4, 2\n")
    records = read_listing(listing)
    assert [(r.path, r.label) for r in records] == [("/x/a.mp4", 1), ("/x/b.mp4", 2)]


@pytest.mark.parametrize(
    "content, line, message",
    [
        ("/a.mp4 1\n/b.mp4 x\n", 2, "mixes class ids and class names"),
        ("/a.mp4 1\n/b.mp4\n", 2, "expected 'path label'"),
        ("/a.mp4 1\n\n/b.mp4 -1\n", 3, "negative"),
        ("/a.mp4,1,2\n", 1, "expected 'path label'"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, content, line, message):
    listing = tmp_path / "bad.csv"
    listing.write_text(content)
    with pytest.raises(ListingError, match=rf"bad.csv:{line}: .*{message}"):
        read_listing(listing)


def test_missing_and_empty_listing(tmp_path):
    with pytest.raises(ListingError, match="not found"):
        read_listing(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("\n")
    with pytest.raises(ListingError, match="no videos"):
        read_listing(tmp_path / "empty.csv")


def test_npy_listings(tmp_path):
    np.save(tmp_path / "paths.npy", np.array(["a.mp4", "/b.mp4"]))
    records = read_listing(tmp_path / "paths.npy")
    assert [r.label for r in records] == [0, 0]
    assert records[0].path == str(tmp_path / "a.mp4")
    np.save(tmp_path / "pairs.npy", np.array([["/a.mp4", "4"], ["/b.mp4", "5"]]))
    assert [r.label for r in read_listing(tmp_path / "pairs.npy")] == [4, 5]
    np.save(tmp_path / "bad.npy", np.zeros((2, 3)))
    with pytest.raises(ListingError, match="shape"):
        read_listing(tmp_path / "bad.npy")


@pytest.mark.parametrize("first, message", [
    ("/x/a.mp4 cat", "l.csv:2: label '2': the listing mixes class ids and class names"),
    ("/x/a.mp4,cat", "l.csv:2: label '2': the listing mixes class ids and class names"),
    ("/x/a.mp4 1.0", "l.csv:1: label '1.0' is neither a class id nor a class name"),
])  # fmt: skip
def test_a_first_line_with_another_label_is_never_taken_for_a_header(tmp_path, first, message):
    listing = tmp_path / "l.csv"
    listing.write_text(f"{first}\n/x/b.mp4 2\n")
    with pytest.raises(ListingError, match=message):
        read_listing(listing)


def test_class_names_as_labels(tmp_path):
    listing = tmp_path / "l.csv"
    listing.write_text('/x/a.mp4 push_up\n"/x/b.mp4","air drumming"\n/x/c.mp4 push_up\n')
    records = read_listing(listing)
    assert [(r.label, r.name) for r in records] == [(-1, "push_up"), (-1, "air drumming"), (-1, "push_up")]
    named = name_labels(records, ["air drumming", "push_up"], "the run")
    assert [r.label for r in named] == [1, 0, 1]
    with pytest.raises(ListingError, match=r"l.csv:2: class 'air drumming' is not one of the 1 classes"):
        name_labels(records, ["push_up"], "the run")


@pytest.mark.parametrize("header", ["path,label", "video label", "filename,class_id", "Path Label"])
def test_header_rows_made_of_header_words_are_skipped(tmp_path, header):
    listing = tmp_path / "l.csv"
    listing.write_text(f"{header}\n/x/a.mp4 1\n")
    assert [r.label for r in read_listing(listing)] == [1]


def test_byte_order_mark_is_dropped_and_non_utf8_named(tmp_path):
    listing = tmp_path / "bom.csv"
    listing.write_bytes("\ufeff/x/a.mp4 1\n/x/b.mp4 2\n".encode("utf-8"))
    assert [(r.path, r.label) for r in read_listing(listing)] == [("/x/a.mp4", 1), ("/x/b.mp4", 2)]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("/x/a.mp4 1\n/x/caf\u00e9.mp4 2\n".encode("latin-1"))
    with pytest.raises(ListingError, match=r"latin.csv:2: not UTF-8 text"):
        read_listing(latin)


def test_commas_inside_paths(tmp_path):
    listing = tmp_path / "l.csv"
    listing.write_text('/x/a,b.mp4 1\n"/x/c,d.mp4",2\n/x/e f,g.mp4 3\n')
    records = read_listing(listing)
    assert [(r.path, r.label) for r in records] == [("/x/a,b.mp4", 1), ("/x/c,d.mp4", 2), ("/x/e f,g.mp4", 3)]
    assert records[1].where == f"{listing}:2"


def test_multi_label_lines_ids_names_and_quoted_csv(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("a b.mp4 3,17,42\nc.mp4 5\nd.mp4 0,2\n")
    records = read_listing(ids)
    assert [r.label for r in records] == [(3, 17, 42), 5, (0, 2)]
    assert records[0].path == str(tmp_path / "a b.mp4"), "the path keeps its space"
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('path,label\nx.mp4,"1,4"\ny.mp4,2\n')
    assert [r.label for r in read_listing(quoted)] == [(1, 4), 2]
    named = tmp_path / "named.txt"
    named.write_text("v1.mp4 walk,run\nv2.mp4 run\n")
    records = name_labels(read_listing(named), ["run", "sit", "walk"], "classes.txt")
    assert [r.label for r in records] == [(2, 0), 0]
    with pytest.raises(ListingError, match=r"named.txt:1: class 'walk' is not one of the 2 classes"):
        name_labels(read_listing(named), ["run", "sit"], "classes.txt")
    out = tmp_path / "out.txt"
    write_listing(read_listing(ids), out)
    assert [r.label for r in read_listing(out)] == [(3, 17, 42), 5, (0, 2)], "written back as 3,17,42"
    bad = tmp_path / "bad.txt"
    bad.write_text("v.mp4 3,-1\n")
    with pytest.raises(ListingError, match=r"bad.txt:1: label -1 is negative"):
        read_listing(bad)
