"""bench.io.write_atomic, the one atomic writer: whole or nothing, the mode open() gives, nothing left behind."""

from __future__ import annotations

import os
import stat

import pytest

from bench.errors import BenchError
from bench.io import write_atomic, write_output


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_bytes_text_and_a_writer_function(tmp_path):
    write_atomic(tmp_path / "a.bin", b"\x00\x01")
    write_atomic(tmp_path / "b.txt", "Δ A−B\r\n")  # UTF-8, newlines untranslated
    write_atomic(tmp_path / "c.bin", lambda handle: handle.write(b"streamed"))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_bytes() == "Δ A−B\r\n".encode()
    assert (tmp_path / "c.bin").read_bytes() == b"streamed"
    write_atomic(tmp_path / "a.bin", b"new")  # replaces
    assert (tmp_path / "a.bin").read_bytes() == b"new"
    write_atomic(tmp_path / "deep" / "er" / "d.txt", "x")  # the folder is made
    assert (tmp_path / "deep" / "er" / "d.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.bin", "deep"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_the_file_gets_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "atomic", b"x")
        with open(tmp_path / "plain", "wb"):
            pass
    finally:
        os.umask(old)
    assert mode(tmp_path / "atomic") == mode(tmp_path / "plain") == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    target.write_text("old")

    def broken(handle):
        handle.write(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_atomic(target, broken)
    real_replace = os.replace

    def no_space(src, dst):
        if str(dst) == str(target):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b"new")
    with pytest.raises(BenchError) as info:
        write_output(target, "new")
    assert str(info.value) == f"cannot write {target}: No space left on device"
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_write_output_names_the_path_in_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BenchError) as info:
        write_output(blocker / "sub" / "x.md", "text")
    assert str(info.value) == f"cannot write {blocker / 'sub' / 'x.md'}: Not a directory"
