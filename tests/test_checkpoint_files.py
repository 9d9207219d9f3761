"""Checkpoint and result files: atomic, unique temporaries, normal modes, hostile files."""
import io
import os
import stat
import threading
import zipfile

import numpy as np
import pytest

from backends import Adam
from harness.core.results_io import atomic_write_text

PARAMS = [np.ones((2, 3), np.float32), np.ones(4, np.float32)]


def saved_opt(tmp_path, **config):
    opt = Adam([p.copy() for p in PARAMS], backend="numpy", **config)
    opt.step([np.full(p.shape, 0.5, np.float32) for p in PARAMS])
    path = tmp_path / "adam.npz"
    opt.save(path)
    return opt, path


def members(path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def write_npz(path, arrays):
    np.savez(path, **arrays)


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    opt, path = saved_opt(tmp_path)
    old = path.read_bytes()

    def disk_full(file, **arrays):
        file.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match=f"cannot write {path}: No space left on device"):
        opt.save(path)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["adam.npz"]


def test_concurrent_saves_to_one_path_all_succeed(tmp_path):
    opt, path = saved_opt(tmp_path)
    errors = []

    def save():
        try:
            opt.save(path)
        except Exception as exc:  # collected: the test asserts there are none
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert os.listdir(tmp_path) == ["adam.npz"]
    assert Adam.load(path, [p.copy() for p in PARAMS]).state.step == 1


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "empty", "npy"])
def test_damaged_files_raise_a_value_error_naming_the_file(tmp_path, damage):
    _, path = saved_opt(tmp_path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "corrupted":
        path.write_bytes(data[:100] + bytes(200) + data[300:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path = tmp_path / "adam.npy"
        np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match=str(path)):
        Adam.load(path, [p.copy() for p in PARAMS])


@pytest.mark.parametrize("field, value, match", [
    ("n_tensors", np.array(10**15), r"holds state for 1000000000000000 tensors but params has 2"),
    ("step", np.array(2.7), r"step must be a scalar of kind 'iu'"),
    ("step", np.array(-3), r"step must be an int in 0\.\.2\*\*63-2"),
    ("exp_avg_sq.1", -np.ones(4, np.float32), r"exp_avg_sq\[1\] holds negative values"),
    ("exp_avg.0", np.ones(7, np.float32), r"exp_avg.0 is float32 \(7,\); params need float32 "
                                          r"\(2, 3\)"),
    ("config.lr", np.array("fast"), r"config.lr must be a scalar of kind 'fiub'"),
])
def test_crafted_fields_are_refused_before_use(tmp_path, field, value, match):
    _, path = saved_opt(tmp_path)
    arrays = members(path)
    arrays[field] = value
    write_npz(path, arrays)
    with pytest.raises(ValueError, match=match) as info:
        Adam.load(path, [p.copy() for p in PARAMS])
    assert str(path) in str(info.value)


def test_a_huge_array_header_is_refused_before_allocating(tmp_path):
    """An .npy header may claim any shape; its bytes must be in the archive first."""
    _, path = saved_opt(tmp_path)
    arrays = members(path)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (2, 3)})
    with zipfile.ZipFile(path, "w") as z:
        for k, a in arrays.items():
            if k == "exp_avg.0":
                z.writestr(k + ".npy", header.getvalue() + b"\0" * 8)  # 6 floats claimed
            else:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, a)
                z.writestr(k + ".npy", buffer.getvalue())
    with pytest.raises(ValueError, match=rf"{path}: exp_avg.0.npy is truncated"):
        Adam.load(path, [p.copy() for p in PARAMS])


def test_load_state_dict_of_an_empty_dict():
    opt = Adam([p.copy() for p in PARAMS], backend="numpy")
    with pytest.raises(ValueError, match=r"a state dict needs 'config' and 'state'"):
        opt.load_state_dict({})


def test_a_step_beyond_int64_is_never_saved(tmp_path):
    opt, path = saved_opt(tmp_path)
    old = path.read_bytes()
    opt.state.step = 2**63
    with pytest.raises(ValueError, match=r"state.step must be an int in 0\.\.2\*\*63-2"):
        opt.save(path)
    assert path.read_bytes() == old


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_get_the_mode_of_a_normal_file(tmp_path, umask_022):
    _, path = saved_opt(tmp_path)
    atomic_write_text(tmp_path / "table.csv", "a,b\n")
    for written in (path, tmp_path / "table.csv"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o644
