"""atomic.py: a file appears whole or not at all; a folder swap keeps the old one on failure."""
from __future__ import annotations

import os

import pytest

from segdistill_cli.atomic import atomic_open, replace_dir, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w", encoding="utf-8") as fh:
            fh.write("half of the new")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]  # the temporary file is gone
    write_text_atomic(target, "new")  # control: a write that ends normally replaces it
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.json"]


def test_replace_dir_swaps_in_the_new_folder_and_removes_the_old(tmp_path):
    final, new = tmp_path / "model", tmp_path / "staged"
    final.mkdir(), new.mkdir()
    (final / "a").write_text("old")
    (new / "a").write_text("new")
    replace_dir(new, final)
    assert (final / "a").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_replace_dir_puts_the_old_folder_back_when_the_swap_fails(tmp_path):
    final, missing = tmp_path / "model", tmp_path / "never-built"
    final.mkdir()
    (final / "a").write_text("old")
    with pytest.raises(FileNotFoundError):
        replace_dir(missing, final)
    assert (final / "a").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["model"]
