"""core/errors.py's bare_error: an error kept to be raised later holds no frame."""

from __future__ import annotations

import errno

import pytest

from stemdeck.core.errors import AudioFileError, bare_error


def _raised(exc: BaseException) -> BaseException:
    """``exc`` as caught: with a traceback, and the error it was raised while handling."""
    try:
        try:
            raise KeyError("inner")
        except KeyError:
            raise exc from None
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    "exc",
    [
        AudioFileError("'song.wav': 1 samples are NaN or infinite; re-export the file"),
        OSError(errno.ENOSPC, "No space left on device", "/cache/x"),
        MemoryError(),
    ],
)
def test_a_bare_error_is_a_copy_with_no_frame(exc: BaseException) -> None:
    caught = _raised(exc)
    assert caught.__traceback__ is not None and caught.__context__ is not None
    bare = bare_error(caught)
    assert bare is not caught
    assert (type(bare), bare.args, str(bare)) == (type(exc), exc.args, str(exc))
    assert (bare.__traceback__, bare.__context__, bare.__cause__) == (None, None, None)
    assert (caught.__traceback__, caught.__context__) == (None, None)  # stripped itself


class _Unrebuildable(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")  # args no longer fit __init__: copy cannot rebuild it


def test_an_error_that_cannot_be_copied_is_stripped_itself() -> None:
    caught = _raised(_Unrebuildable(1, 2))
    bare = bare_error(caught)
    assert bare is caught
    assert (bare.__traceback__, bare.__context__, bare.__cause__) == (None, None, None)
    assert str(bare) == "1-2"
