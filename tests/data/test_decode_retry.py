"""A transient error opening a video gets one retry before the video counts as bad (torchcodec once
failed on a good 720p file with "the JSON object must be str, bytes or bytearray, not tuple")."""

import logging

import pytest

from harness.data import decode
from harness.data.decode import DecodeError, open_video

TRANSIENT = "the JSON object must be str, bytes or bytearray, not tuple"


def fake_reader(failures: int):
    """A reader class whose first ``failures`` openings fail the way torchcodec once did."""

    class FakeReader:
        opened = 0

        def __init__(self, source, threads, size) -> None:
            FakeReader.opened += 1
            if FakeReader.opened <= failures:
                raise TypeError(TRANSIENT)
            self.num_frames, self.fps = 10, 30.0

        def close(self) -> None:
            pass

    return FakeReader


@pytest.fixture
def install(monkeypatch):
    """Put a fake reader in place of PyAV's (the backend stays 'available')."""

    def put(reader) -> None:
        monkeypatch.setitem(decode._READERS, "pyav", reader)
        monkeypatch.setattr(decode, "resolve_backend", lambda backend: "pyav")

    return put


def test_an_error_opening_once_is_retried(install, caplog):
    reader = fake_reader(failures=1)
    install(reader)
    with caplog.at_level(logging.WARNING, logger="harness.data.decode"):
        opened = open_video("clip.mp4", "pyav")
    assert opened.num_frames == 10 and reader.opened == 2
    assert "clip.mp4 at try 2" in caplog.text and TRANSIENT in caplog.text


def test_an_error_opening_twice_marks_the_video_bad(install):
    reader = fake_reader(failures=2)
    install(reader)
    with pytest.raises(DecodeError, match=r"pyav cannot open video \(tried 2 times\): the JSON object"):
        open_video(b"not really a video", "pyav")
    assert reader.opened == 2, "one retry, not more"


def test_our_own_decode_errors_are_not_retried(install):
    class NoStream:
        opened = 0

        def __init__(self, *args) -> None:
            NoStream.opened += 1
            raise DecodeError("no video stream")

    install(NoStream)
    with pytest.raises(DecodeError, match="no video stream"):
        open_video("clip.mp4", "pyav")
    assert NoStream.opened == 1
