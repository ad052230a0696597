from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from vfl_embed.atomic import FOLDER_MODE, private_folder, write_atomic


@pytest.fixture
def umask():
    """Run under a permissive umask, so only explicit modes explain the results."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_text_bytes_and_writer_functions_are_written_whole(tmp_path):
    assert write_atomic(tmp_path / "a.txt", "grüße\n").read_text() == "grüße\n"
    assert write_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    write_atomic(tmp_path / "c.npz", lambda f: np.savez(f, x=np.arange(3)))
    with np.load(tmp_path / "c.npz") as saved:
        assert saved["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.npz"]


def test_a_write_interrupted_midway_leaves_the_old_file_intact(tmp_path):
    path = write_atomic(tmp_path / "report.json", '{"status": "completed"}')

    def half_then_fail(file) -> None:
        file.write(b'{"status": "fai')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == '{"status": "completed"}'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left


@pytest.mark.usefixtures("umask")
def test_file_mode_is_exact_whatever_the_umask(tmp_path):
    assert _mode(write_atomic(tmp_path / "default", "x")) == 0o644
    assert _mode(write_atomic(tmp_path / "private", "x", mode=0o600)) == 0o600
    os.umask(0o077)
    assert _mode(write_atomic(tmp_path / "group", "x", mode=0o640)) == 0o640


def test_a_symlink_at_the_path_is_replaced_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "report.md").symlink_to(target)
    write_atomic(tmp_path / "report.md", "new")
    assert target.read_text() == "keep"
    assert not (tmp_path / "report.md").is_symlink()
    assert (tmp_path / "report.md").read_text() == "new"


@pytest.mark.usefixtures("umask")
def test_created_folders_get_the_private_mode_and_existing_ones_keep_theirs(tmp_path):
    (tmp_path / "mine").mkdir(mode=0o755)
    folder = private_folder(tmp_path / "mine" / "results" / "run1")
    assert FOLDER_MODE == 0o750
    assert _mode(folder) == 0o750
    assert _mode(folder.parent) == 0o750
    assert _mode(tmp_path / "mine") == 0o755
    assert private_folder(folder, mode=0o700) == folder
    assert _mode(folder) == 0o750  # it existed: left as it is
