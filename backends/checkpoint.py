"""Adam state files (.npz): written atomically, read with every field checked against
the params before an array is allocated from the file."""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile

import numpy as np

from .config import AdamConfig
from .files import atomic_write
from .formats import BFLOAT16, LOW_PRECISION_DTYPES, bits_view, uses_low_precision
from .int8_codec import SCALE_NAMES, has_int8_state, n_blocks
from .state import checked_step
from .validation import FLOAT_DTYPES

__all__ = ["FORMAT", "write_checkpoint", "read_checkpoint"]

FORMAT = "adam-backends/1"
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_LOW_PRECISION = ("master_params", "compensation")
_CONFIG_FIELDS = [f.name for f in dataclasses.fields(AdamConfig)]
_TEXT_FIELDS = ("state_dtype", "rounding")


def write_checkpoint(path: str | os.PathLike, state_dict: dict) -> None:
    """``Adam.state_dict()`` output as an .npz file, atomically (see files.atomic_write).
    Every group's moments are numbered by their tensor's place in ``Adam.params``; the
    groups (hyperparameters, tensor indices, step) are one JSON member, so a file of one
    group is the format from before groups plus that member."""
    states = state_dict["state"] if isinstance(state_dict["state"], list) else \
        [state_dict["state"]]
    arrays = {"format": np.array(FORMAT), "step": np.array(checked_step(states[0]["step"]),
                                                           dtype=np.int64),
              "backend": np.array(state_dict["backend"]),
              "n_tensors": np.array(sum(len(s["exp_avg"]) for s in states), dtype=np.int64)}
    arrays.update({f"config.{k}": np.array(v) for k, v in state_dict["config"].items()
                   if v is not None})  # state_dtype None: absent, its default
    groups = state_dict.get("param_groups")
    if groups is not None:
        arrays["param_groups"] = np.array(json.dumps(
            [{**g, "step": checked_step(s["step"])} for g, s in zip(groups, states)]))
    first = 0
    for state in states:
        for name in _MOMENTS + SCALE_NAMES + _LOW_PRECISION:
            for i, a in enumerate(state.get(name) or []):
                if a is not None:  # bfloat16 as its uint16 bits: .npy has no bfloat16
                    arrays[f"{name}.{first + i}"] = bits_view(a) if a.dtype == BFLOAT16 else a
        first += len(state["exp_avg"])
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_checkpoint(path: str | os.PathLike, params: list) -> dict:
    """{"config", "backend", "param_groups", "state"} from a file written by
    ``write_checkpoint`` (``state``: a dict for one group, a list for several), for
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
        config[field] = _scalar(archive, key, "U" if field in _TEXT_FIELDS else "fiub").item()
    groups = _groups(archive, members, config, step, n)
    states = [_group_state(archive, members, path, params, g) for g in groups]
    return {"config": config, "backend": backend, "param_groups": groups,
            "state": states[0] if len(states) == 1 else states}


def _groups(archive, members, config, step, n) -> list[dict]:
    """The saved param groups, each with its hyperparameters, tensor indices and step
    (a file from before groups: one group of every tensor, with the file's config)."""
    if "param_groups.npy" not in members:
        return [{**AdamConfig(**config).to_dict(), "params": list(range(n)), "step": step}]
    groups = json.loads(str(_scalar(archive, "param_groups", "U")))
    first = 0
    for i, g in enumerate(groups if isinstance(groups, list) else [None]):
        if not isinstance(g, dict) or not isinstance(g.get("params"), list) or any(
                type(k) is not int for k in g["params"]) or g["params"] != list(
                range(first, first + len(g["params"]))):
            raise ValueError(f"param_groups[{i}] is not a group of the next tensors in order")
        g["step"] = checked_step(g.get("step"), f"param_groups[{i}] step")
        AdamConfig(**{k: v for k, v in g.items() if k not in ("params", "step")})
        first += len(g["params"])
    if first != n:
        raise ValueError(f"its param groups hold {first} tensors but it has state for {n}")
    return groups


def _group_state(archive, members, path, params, group) -> dict:
    """One group's state dict, its arrays checked against its params."""
    indices = group["params"]
    cfg = AdamConfig(**{k: v for k, v in group.items() if k not in ("params", "step")})
    if uses_low_precision(cfg, [params[i] for i in indices], None):
        return _read_low_precision(archive, members, path, params, group, cfg)
    int8 = group.get("state_dtype") == "int8"
    encoded = [int8 and has_int8_state(params[i]) for i in indices]
    state = {"step": group["step"]}
    for name in _MOMENTS:
        keys = [f"{name}.{i}.npy" for i in indices]
        present = [k in members for k in keys]
        if name == "max_exp_avg_sq" and not any(present):
            state[name] = None
            continue
        if not all(present):
            raise ValueError(f"{path}: lacks {name} for tensor {indices[present.index(False)]}")
        state[name] = [_array(archive, k, tuple(params[i].shape),
                              np.dtype(np.uint8 if q else params[i].dtype))
                       for k, i, q in zip(keys, indices, encoded)]
        if int8:  # a scale per int8 tensor, None for the others
            state[f"{name}_scale"] = [
                _array(archive, f"{name}_scale.{i}.npy", (n_blocks(params[i].size),),
                       np.dtype(np.float32)) if q else None
                for i, q in zip(indices, encoded)]
    return state


def _read_low_precision(archive, members, path, params, group, cfg) -> dict:
    """One group's state of low-precision params: every field ``tensor_layout`` gives
    them, of its dtype (bfloat16 stored as uint16 bits), amsgrad's maximum only if
    present."""
    from .low_precision_step import tensor_layout

    indices = group["params"]
    state = {"step": group["step"]}
    wanted = set(tensor_layout(BFLOAT16, cfg))  # the same fields for every dtype
    for name in _MOMENTS + _LOW_PRECISION:
        keys = [f"{name}.{i}.npy" for i in indices]
        present = [k in members for k in keys]
        if not any(present) and (name == "max_exp_avg_sq" or name not in wanted):
            state[name] = None
            continue
        if name not in wanted:
            raise ValueError(f"holds {name}, which the config does not use")
        if not all(present):
            raise ValueError(f"{path}: lacks {name} for tensor "
                             f"{indices[present.index(False)]}")
        state[name] = [_array(archive, k, tuple(params[i].shape),
                              tensor_layout(params[i].dtype, cfg)[name])
                       for k, i in zip(keys, indices)]
    return state


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
    stored = np.dtype(np.uint16) if dtype == BFLOAT16 else dtype
    allowed = FLOAT_DTYPES + LOW_PRECISION_DTYPES + (np.dtype(np.uint8), np.dtype(np.uint16))
    if found_dtype not in allowed or found_dtype != stored or found_shape != shape:
        raise ValueError(f"{member[:-4]} is {found_dtype} {found_shape}; params need "
                         f"{stored} {shape}")
    array = _read_member(archive, member)
    return array.view(BFLOAT16) if dtype == BFLOAT16 else array
