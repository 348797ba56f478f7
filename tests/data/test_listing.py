import numpy as np
import pytest

from harness.data.listing import ListingError, read_listing


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
        ("/a.mp4 1\n/b.mp4 x\n", 2, "not an integer"),
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
