"""The one atomic writer: the target appears whole or not at all, no temporary file is ever left behind, and a
failed write leaves the previous file exactly as it was."""

import pytest

from hffm_opt._io import atomic_path, atomic_write


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("data", ["héllo, wörld\nsecond line\n", b"\x00\x01binary\xff"])
def test_atomic_write_writes_exactly_the_data_and_leaves_only_the_target(tmp_path, data):
    target = tmp_path / "out.dat"
    returned = atomic_write(target, data)
    assert returned == target
    got = target.read_bytes()
    assert got == (data if isinstance(data, bytes) else data.encode("utf-8"))
    assert _listing(tmp_path) == ["out.dat"]


def test_atomic_write_accepts_a_string_path_and_replaces_an_existing_file(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old contents that are longer than the new ones\n")
    atomic_write(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert _listing(tmp_path) == ["table.csv"]


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("precious")
    with pytest.raises(TypeError):
        atomic_write(target, 12345)  # neither str nor bytes: write_text raises after the temporary path exists
    assert target.read_text() == "precious"
    assert _listing(tmp_path) == ["keep.txt"]


def test_atomic_path_yields_a_hidden_sibling_with_the_suffix_and_renames_it_on_success(tmp_path):
    target = tmp_path / "figure.png"
    with atomic_path(target, ".png") as tmp:
        assert tmp.parent == target.parent  # same folder: os.replace is a rename, never a copy across devices
        assert tmp.name.startswith(".") and tmp.name.endswith(".png") and tmp != target
        tmp.write_bytes(b"PNG")
        assert not target.exists()  # nobody sees the target before the writer is done
    assert target.read_bytes() == b"PNG"
    assert _listing(tmp_path) == ["figure.png"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_exception_inside_atomic_path_removes_the_temporary_and_keeps_the_old_file(tmp_path, error):
    target = tmp_path / "result.json"
    target.write_text("{}")
    with pytest.raises(error), atomic_path(target) as tmp:
        tmp.write_text('{"half": ')
        raise error("interrupted")
    assert target.read_text() == "{}"
    assert _listing(tmp_path) == ["result.json"]


def test_an_exception_before_anything_is_written_leaves_nothing(tmp_path):
    target = tmp_path / "never.txt"
    with pytest.raises(ValueError), atomic_path(target):
        raise ValueError("nothing written")
    assert _listing(tmp_path) == []


def test_a_failed_rename_removes_the_temporary(tmp_path):
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "inside.txt").write_text("x")  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError):
        atomic_write(target, "data")
    assert _listing(tmp_path) == ["occupied"]
    assert _listing(target) == ["inside.txt"]

