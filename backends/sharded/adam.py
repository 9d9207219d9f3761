"""ShardedAdam: Adam with its state split across data-parallel ranks (ZeRO stage 1).

Params live in one flat buffer, zero-padded to a multiple of the number of ranks and cut
into one contiguous shard per rank. A step reduce-scatters the gradients (each rank gets
the mean over ranks of its shard), steps its shard with an ordinary backend, and
all-gathers the updated shards, so every rank ends with the same params while holding
only 1/N of m and v. Any backend steps the shard; GPU backends get host-staged copies of
the shard (the collectives move host buffers).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from ..base import Backend
from ..config import AdamConfig, checked_lr
from ..files import atomic_write
from ..int8_codec import SCALE_NAMES
from ..memory import first_of_contiguous, split_views
from ..optimizer import Adam
from ..registry import get_backend
from ..state import AdamState, to_host
from ..validation import FLOAT_DTYPES, as_list

__all__ = ["ShardedAdam", "save_adam", "load_adam", "read_manifest", "MANIFEST"]

MANIFEST = "manifest.json"
_NOT_RESHARDED = ("int8 state (state_dtype='int8') is encoded per 256-element block of "
                  "each rank's shard and cannot be re-sharded")
_FORMAT = "adam-backends-sharded/1"
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


class ShardedAdam:
    """``ShardedAdam(params, backend="numba", comm=None, **config)``; ``step(grads)``.

    ``params``: host arrays of one float dtype (NumPy, or anything ``np.asarray`` views
    without a copy, such as CPU torch tensors), updated in place on every rank by every
    step, as ``Adam`` updates them (``opt.params`` are these arrays). When they lie back
    to back in one buffer of exactly ``size`` equal shards (``backend.flatten`` makes
    them; a total divisible by the number of ranks) that buffer is the flat buffer the
    collectives move: no copy. Otherwise they are copied into a padded flat buffer, each
    step copies this rank's shard in from them and the gathered params back out
    (``seconds["copy"]``). ``grads``: this rank's full local gradients (any arrays of the params'
    shapes, or ``opt.grads``, views of the flat gradient buffer, which saves one copy;
    the step overwrites that buffer). ``comm``: a ``backends.sharded.comm.Communicator``; None
    means ``MPIComm()`` over ``MPI.COMM_WORLD``. ``seconds`` holds the last step's
    reduce_scatter / update / all_gather times.
    """

    def __init__(self, params, backend: str | Backend = "numba", comm=None, **config):
        self.config = AdamConfig(**config)
        self.backend = backend if isinstance(backend, Backend) else get_backend(backend)
        if comm is None:
            from .comm import MPIComm

            comm = MPIComm()
        self.comm = comm
        params = [np.asarray(to_host(p)) for p in as_list(params, "params")]
        for i, p in enumerate(params):
            if not p.flags.writeable:
                raise ValueError(f"params[{i}] is read-only; ShardedAdam updates it in place")
        if not params:
            raise ValueError("params is empty; ShardedAdam needs at least one tensor")
        dtypes = {p.dtype for p in params}
        if len(dtypes) > 1 or next(iter(dtypes)) not in FLOAT_DTYPES:
            raise TypeError(f"params must share one dtype, float32 or float64; got "
                            f"{sorted(map(str, dtypes))}")
        self.dtype = params[0].dtype
        self.shapes = [tuple(p.shape) for p in params]
        self.total = sum(int(p.size) for p in params)
        self.shard_len = -(-self.total // comm.size)
        padded = self.shard_len * comm.size
        span = _span(params, self.total) if padded == self.total else None
        self.zero_copy = span is not None
        self.flat_params = span if self.zero_copy else comm.alloc(padded, self.dtype)
        self.flat_grads = comm.alloc(padded, self.dtype)
        self.params = params
        self.grads = split_views(self.flat_grads, self.shapes)
        self._flat_views = split_views(self.flat_params, self.shapes)
        if not self.zero_copy:
            for view, p in zip(self._flat_views, params):
                view[...] = p
        self.start = comm.rank * self.shard_len
        self._shard_pieces = _pieces(self.shapes, self.start, self.start + self.shard_len)
        self._param_shard = comm.chunk(self.flat_params, comm.rank)
        self._grad_shard = (self.flat_grads if comm.size == 1  # one rank: nothing to reduce
                            else np.zeros(self.shard_len, self.dtype))
        self._staged = self.backend.device != "cpu"
        self._device_params = [self.backend.asarray(self._param_shard) if self._staged
                               else self._param_shard]
        self.state: AdamState = self.backend.init_state(self._device_params, self.config)
        self.seconds = {"reduce_scatter": 0.0, "update": 0.0, "all_gather": 0.0, "copy": 0.0}
        #: The lr of the last ``step(grads, lr=...)``, saved by ``save`` (None: config's).
        self.lr: float | None = None

    @property
    def state_bytes(self) -> int:
        """Bytes of optimizer state this rank holds: its arrays of m, v and amsgrad's max
        (with int8 state their codes and scales)."""
        arrays = [getattr(self.state, name) or () for name in _MOMENTS + SCALE_NAMES]
        return sum(int(a.nbytes) for column in arrays for a in column if a is not None)

    def step(self, grads, lr=None) -> None:
        """One sharded Adam step; every rank must call it with its local gradients.
        ``lr`` is this step's learning rate (a schedule; None: the last one given, else
        the config's), checked before anything changes."""
        lr = self.lr if lr is None else checked_lr(lr)
        grads = as_list(grads, "grads")
        if not (len(grads) == len(self.grads) and all(map(_is, grads, self.grads))):
            self._check_grads(grads)
            for view, g in zip(self.grads, grads):
                view[...] = g
        t0 = time.perf_counter()
        if not self.zero_copy:  # the caller's values of this rank's shard, as they are now
            for i, a, b in self._shard_pieces:
                self._flat_views[i].reshape(-1)[a:b] = self.params[i].reshape(-1)[a:b]
        copy_in = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.comm.reduce_scatter(self.flat_grads, self._grad_shard)
        t1 = time.perf_counter()
        if self._staged:
            device_grads = [self.backend.asarray(self._grad_shard)]
            self.backend.step(self._device_params, device_grads, self.state, self.config, lr)
            self._param_shard[:] = self.backend.to_numpy(self._device_params[0])
        else:
            self.backend.step(self._device_params, [self._grad_shard], self.state, self.config,
                              lr)
        t2 = time.perf_counter()
        self.comm.all_gather(self.flat_params)
        t3 = time.perf_counter()
        if not self.zero_copy:
            for p, view in zip(self.params, self._flat_views):
                p[...] = view
        t4 = time.perf_counter()
        self.lr = lr
        self.seconds = {"reduce_scatter": t1 - t0, "update": t2 - t1, "all_gather": t3 - t2,
                        "copy": copy_in + t4 - t3}

    def _check_grads(self, grads) -> None:
        if len(grads) != len(self.shapes):
            raise ValueError(f"grads holds {len(grads)} tensors but params has "
                             f"{len(self.shapes)}")
        for i, (g, shape) in enumerate(zip(grads, self.shapes)):
            g = to_host(g)
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{i}] is {type(g).__name__}; expected an array")
            if g.dtype != self.dtype:
                raise TypeError(f"grads[{i}] has dtype {g.dtype} but params has {self.dtype}")
            if tuple(g.shape) != shape:
                raise ValueError(f"grads[{i}] has shape {tuple(g.shape)} but params[{i}] "
                                 f"has {shape}")

    # --- checkpoints --------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write this rank's shard of the state, then (rank 0, once every shard is on
        disk) the manifest: a checkpoint is complete, or ``load`` finds none. Every rank
        must call it; returns the manifest's path."""
        directory = Path(directory)
        host = self.state.to_dict()
        moments = {name: host[name][0] for name in _MOMENTS + SCALE_NAMES
                   if host.get(name) is not None and host[name][0] is not None}
        config = self.config if self.lr is None else dataclasses.replace(self.config, lr=self.lr)
        manifest = _manifest(config, self.backend.name, self.dtype, self.shapes,
                             host["step"], self.comm.size, self.shard_len)
        ok = True
        try:
            _write_shard(directory, manifest, self.comm.rank, moments)
        except OSError:
            ok = False
        if not self.comm.all_ok(ok):
            raise OSError(f"checkpoint {directory} not written: a rank failed to write its "
                          "shard (the previous checkpoint, if any, is intact)")
        if self.comm.rank == 0:
            _write_manifest(directory, manifest)
        if not self.comm.all_ok(True):
            raise OSError(f"checkpoint {directory}: the manifest was not confirmed")
        return directory / MANIFEST

    @classmethod
    def load(cls, directory, params, backend: str | Backend | None = None, comm=None,
             **overrides) -> "ShardedAdam":
        """A ShardedAdam resumed from ``directory``, re-sharded to this run's ranks."""
        manifest = read_manifest(directory)
        _check_params(manifest, params)
        config = {**manifest["config"], **overrides}
        opt = cls(params, backend=backend or manifest["backend"], comm=comm, **config)
        if opt.config.state_dtype != manifest["config"].get("state_dtype"):
            raise ValueError(f"{directory}: saved with state_dtype="
                             f"{manifest['config'].get('state_dtype')!r}; it resumes so only")
        if opt.config.state_dtype is not None:
            state = opt.backend.state_from_dict(_read_own_int8_shard(
                Path(directory), manifest, opt.comm))
        else:
            lo = opt.start
            hi = min(lo + opt.shard_len, opt.total)
            moments = _read_range(Path(directory), manifest, lo, max(hi, lo), opt.shard_len)
            state = opt.backend.state_from_dict({"step": manifest["step"], **{
                name: [moments[name]] if name in moments else None for name in _MOMENTS}})
        opt.backend.check_state(opt._device_params, state, opt.config)
        opt.state = state
        return opt


def save_adam(adam: Adam, directory: str | os.PathLike) -> Path:
    """Write a plain ``Adam``'s state as a one-shard checkpoint that ``ShardedAdam.load``
    re-shards to any number of ranks."""
    params = adam.params
    dtypes = {p.dtype for p in params}
    if len(dtypes) != 1:
        raise TypeError("save_adam needs params of one dtype")
    if adam.config.state_dtype is not None:
        raise ValueError(_NOT_RESHARDED + "; save a plain Adam with Adam.save")
    host = adam.state.to_dict()
    shapes = [tuple(p.shape) for p in params]
    total = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
    manifest = _manifest(adam.config, adam.backend.name, params[0].dtype, shapes,
                         host["step"], 1, total)
    moments = {name: np.concatenate([a.reshape(-1) for a in host[name]])
               for name in _MOMENTS if host[name] is not None}
    _write_shard(Path(directory), manifest, 0, moments)
    _write_manifest(Path(directory), manifest)
    return Path(directory) / MANIFEST


def load_adam(directory, params, backend: str | Backend | None = None) -> Adam:
    """A plain ``Adam`` over ``params`` resumed from a checkpoint of any number of ranks."""
    manifest = read_manifest(directory)
    _check_params(manifest, params)
    if manifest["config"].get("state_dtype") is not None:
        raise ValueError(f"{directory}: {_NOT_RESHARDED}; resume it with ShardedAdam.load "
                         f"on {manifest['world_size']} ranks")
    total = manifest["total"]
    moments = _read_range(Path(directory), manifest, 0, total, total)
    shapes = [tuple(s) for s in manifest["shapes"]]
    state = {"step": manifest["step"], **{
        name: [v.reshape(s) for v, s in zip(split_views(moments[name], shapes), shapes)]
        if name in moments else None for name in _MOMENTS}}
    opt = Adam(params, backend=backend or manifest["backend"], **manifest["config"])
    opt.load_state_dict({"config": manifest["config"], "state": state})
    return opt


def read_manifest(directory) -> dict:
    """The manifest of the complete checkpoint in ``directory``; FileNotFoundError when
    there is none (no save finished there)."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{directory} holds no complete sharded checkpoint "
                                f"(no {MANIFEST}: no save finished there)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a sharded Adam manifest ({_FORMAT})")
    return manifest


# --- files ------------------------------------------------------------------------------
def _manifest(config: AdamConfig, backend: str, dtype, shapes, step: int, world: int,
              shard_len: int) -> dict:
    total = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
    return {"format": _FORMAT, "step": int(step), "config": config.to_dict(),
            "backend": backend, "dtype": str(np.dtype(dtype)), "shapes": [list(s) for s in shapes],
            "total": total, "world_size": world, "shard_len": shard_len,
            "moments": [m for m in _MOMENTS if m != "max_exp_avg_sq" or config.amsgrad],
            "shards": [_shard_name(step, r, world) for r in range(world)]}


def _shard_name(step: int, rank: int, world: int) -> str:
    return f"shard-step{step:012d}-rank{rank:05d}-of-{world:05d}.npz"


def _write_shard(directory: Path, manifest: dict, rank: int, moments: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"step": manifest["step"], "rank": rank, "world_size": manifest["world_size"]}
    atomic_write(directory / manifest["shards"][rank],
                 lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **moments))


def _write_manifest(directory: Path, manifest: dict) -> None:
    atomic_write(directory / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    keep = set(manifest["shards"]) | {MANIFEST}
    for stale in directory.glob("shard-step*.npz"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)


def _read_range(directory: Path, manifest: dict, lo: int, hi: int, length: int) -> dict:
    """Elements [lo, hi) of every saved moment, zero-padded to ``length``, read from the
    shards that overlap the range (each checked against the manifest)."""
    n, dtype = manifest["shard_len"], np.dtype(manifest["dtype"])
    out = {name: np.zeros(length, dtype) for name in manifest["moments"]}
    for rank, name in enumerate(manifest["shards"]):
        s_lo, s_hi = rank * n, min((rank + 1) * n, manifest["total"])
        a, b = max(lo, s_lo), min(hi, s_hi)
        if a >= b:
            continue
        path = directory / name
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            if (meta["step"], meta["rank"], meta["world_size"]) != (
                    manifest["step"], rank, manifest["world_size"]):
                raise ValueError(f"{path} does not belong to the manifest's checkpoint")
            for moment in manifest["moments"]:
                out[moment][a - lo:b - lo] = f[moment][a - s_lo:b - s_lo]
    return out


def _read_own_int8_shard(directory: Path, manifest: dict, comm) -> dict:
    """This rank's int8 state, codes and scales as saved (a state dict): they are
    encoded per block of the shard, so only the world size that saved them can use
    them."""
    if manifest["world_size"] != comm.size:
        raise ValueError(f"{directory}: {_NOT_RESHARDED}: this checkpoint was saved by "
                         f"{manifest['world_size']} ranks and resumes on {manifest['world_size']}"
                         f" only, not {comm.size}")
    path = directory / manifest["shards"][comm.rank]
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        if (meta["step"], meta["rank"], meta["world_size"]) != (
                manifest["step"], comm.rank, manifest["world_size"]):
            raise ValueError(f"{path} does not belong to the manifest's checkpoint")
        state = {"step": manifest["step"]}
        for name, scale in zip(_MOMENTS, SCALE_NAMES):
            if name in manifest["moments"]:
                state[name] = [f[name]]
                state[scale] = [f[scale] if scale in f.files else None]
        return state


def _check_params(manifest: dict, params) -> None:
    shapes = [list(np.shape(to_host(p))) for p in as_list(params, "params")]
    if shapes != manifest["shapes"]:
        raise ValueError(f"params have shapes {shapes} but the checkpoint was saved for "
                         f"{manifest['shapes']}")


def _is(a, b) -> bool:
    return a is b


def _span(params, total: int):
    """A 1-D view over all of ``params`` when they lie back to back in one C-contiguous
    buffer (as ``Backend.flatten`` lays them out), else None."""
    if not all(p.flags.c_contiguous for p in params):
        return None
    starts = [p.__array_interface__["data"][0] for p in params]
    first = first_of_contiguous(starts, [p.size for p in params], params[0].itemsize)
    if first is None:
        return None
    return np.lib.stride_tricks.as_strided(params[first].reshape(-1), shape=(total,),
                                           strides=(params[0].itemsize,))


def _pieces(shapes, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """(tensor, start, stop): the flat ranges of each tensor inside elements [lo, hi)."""
    pieces, offset = [], 0
    for i, shape in enumerate(shapes):
        n = int(np.prod(shape, dtype=np.int64))
        a, b = max(lo, offset), min(hi, offset + n)
        if a < b:
            pieces.append((i, a - offset, b - offset))
        offset += n
    return pieces
