"""Adam state files (.npz): written atomically, read with every field checked against
the params before an array is allocated from the file."""
from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

from .blockwise import SCALE_NAMES, is_quantized, n_blocks
from .config import AdamConfig
from .files import atomic_write
from .state import checked_step
from .validation import FLOAT_DTYPES

__all__ = ["FORMAT", "write_checkpoint", "read_checkpoint"]

FORMAT = "adam-backends/1"
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_CONFIG_FIELDS = [f.name for f in dataclasses.fields(AdamConfig)]


def write_checkpoint(path: str | os.PathLike, state_dict: dict) -> None:
    """``Adam.state_dict()`` output as an .npz file, atomically (see files.atomic_write)."""
    state = state_dict["state"]
    arrays = {"format": np.array(FORMAT), "step": np.array(checked_step(state["step"]),
                                                           dtype=np.int64),
              "backend": np.array(state_dict["backend"]),
              "n_tensors": np.array(len(state["exp_avg"]), dtype=np.int64)}
    arrays.update({f"config.{k}": np.array(v) for k, v in state_dict["config"].items()
                   if v is not None})  # state_dtype None: absent, its default
    for name in _MOMENTS + SCALE_NAMES:
        for i, a in enumerate(state.get(name) or []):
            if a is not None:
                arrays[f"{name}.{i}"] = a
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_checkpoint(path: str | os.PathLike, params: list) -> dict:
    """{"config", "backend", "state"} from a file written by ``write_checkpoint``, for
    ``params`` (host or device arrays: only their shapes and dtypes are read). Anything
    else (not an .npz, truncated, another program's, state for other tensors, a float or
    negative step) raises ValueError naming the file."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ValueError(f"{path} is not an Adam state file ({FORMAT}): not an .npz "
                         f"archive ({exc})") from None
    with archive:
        try:
            return _read(archive, path, params)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, TypeError) as exc:
            if str(exc).startswith(str(path)):
                raise
            raise ValueError(f"{path}: {exc}") from None


def _read(archive: zipfile.ZipFile, path, params) -> dict:
    members = set(archive.namelist())
    if "format.npy" not in members or str(_scalar(archive, "format", "U")) != FORMAT:
        raise ValueError(f"{path} is not an Adam state file ({FORMAT})")
    n = int(_scalar(archive, "n_tensors", "iu"))
    if n != len(params):
        raise ValueError(f"{path}: holds state for {n} tensors but params has {len(params)}")
    step = checked_step(_scalar(archive, "step", "iu"), "step")
    backend = str(_scalar(archive, "backend", "U"))
    config = {}
    for key in sorted(m[:-4] for m in members if m.startswith("config.")):
        field = key.split(".", 1)[1]
        if field not in _CONFIG_FIELDS:
            raise ValueError(f"{path}: unknown config field {field!r}")
        config[field] = _scalar(archive, key, "U" if field == "state_dtype" else "fiub").item()
    quantized = [AdamConfig(**config).state_dtype == "int8" and is_quantized(p)
                 for p in params]
    state = {"step": step}
    for name in _MOMENTS:
        keys = [f"{name}.{i}.npy" for i in range(n)]
        present = [k in members for k in keys]
        if name == "max_exp_avg_sq" and not any(present):
            state[name] = None
            continue
        if not all(present):
            raise ValueError(f"{path}: lacks {name} for tensor {present.index(False)}")
        state[name] = [_array(archive, k, tuple(p.shape),
                              np.dtype(np.uint8 if q else p.dtype))
                       for k, p, q in zip(keys, params, quantized)]
        if any(quantized):
            state[f"{name}_scale"] = [
                _array(archive, f"{name}_scale.{i}.npy", (n_blocks(p.size),),
                       np.dtype(np.float32)) if q else None
                for i, (p, q) in enumerate(zip(params, quantized))]
    return {"config": config, "backend": backend, "state": state}


def _header(archive, member):
    """(shape, dtype) from a member's .npy header, checking that its data is all there."""
    info = archive.getinfo(member)
    with archive.open(member) as f:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"{member} has an unknown .npy version {version}")
        shape, fortran, dtype = read(f)
        header_bytes = f.tell()
    if dtype.hasobject or fortran:
        raise ValueError(f"{member} holds {'objects' if dtype.hasobject else 'Fortran order'}")
    count = int(np.prod(shape, dtype=object))
    if info.file_size < header_bytes + count * dtype.itemsize:
        raise ValueError(f"{member} is truncated")
    return tuple(shape), dtype


def _read_member(archive, member):
    with archive.open(member) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _scalar(archive, key, kinds):
    member = f"{key}.npy"
    if member not in archive.namelist():
        raise ValueError(f"lacks {key!r}")
    shape, dtype = _header(archive, member)
    if shape != () or dtype.kind not in kinds:
        raise ValueError(f"{key} must be a scalar of kind {kinds!r}, got shape {shape} "
                         f"dtype {dtype}")
    return _read_member(archive, member)[()]


def _array(archive, member, shape, dtype) -> np.ndarray:
    found_shape, found_dtype = _header(archive, member)
    if found_dtype not in FLOAT_DTYPES + (np.dtype(np.uint8),) or found_dtype != dtype or found_shape != shape:
        raise ValueError(f"{member[:-4]} is {found_dtype} {found_shape}; params need "
                         f"{dtype} {shape}")
    return _read_member(archive, member)
