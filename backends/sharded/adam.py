"""ShardedAdam: Adam with its state split across data-parallel ranks (ZeRO stage 1).

Params live in one flat buffer, zero-padded to a multiple of the number of ranks and cut
into one contiguous shard per rank. A step reduce-scatters the gradients (each rank gets
the mean over ranks of its shard), steps its shard with an ordinary backend, and
all-gathers the updated shards, so every rank ends with the same params while holding
only 1/N of m and v. Any backend steps the shard; GPU backends get host-staged copies of
the shard (the collectives move host buffers).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..base import Backend
from ..config import AdamConfig
from ..files import atomic_write
from ..int8_codec import SCALE_NAMES
from ..memory import first_of_contiguous, split_views
from ..optimizer import Adam
from ..param_groups import (GroupConfig, OneGroupAttributes, check_distinct, describe_groups,
                            make_groups, step_rates)
from ..registry import get_backend
from ..state import AdamState, to_host
from ..validation import FLOAT_DTYPES, as_list

__all__ = ["ShardedAdam", "save_adam", "load_adam", "read_manifest", "MANIFEST"]

MANIFEST = "manifest.json"
_NOT_RESHARDED = ("int8 state (state_dtype='int8') is encoded per 256-element block of "
                  "each rank's shard and cannot be re-sharded")
_FORMAT = "adam-backends-sharded/1"
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


class ShardedAdam(OneGroupAttributes):
    """``ShardedAdam(params, backend="numba", comm=None, **config)``; ``step(grads)``.

    ``params``: host arrays of one float dtype (NumPy arrays or CPU torch tensors,
    ``requires_grad`` or not), or param group dicts of them as ``Adam``
    takes them (``backends.param_groups``: each group its own hyperparameters; ``config``
    gives the values a group leaves out). They are updated in place on every rank by every
    step, as ``Adam`` updates them (``opt.params`` lists them, group by group). When they
    lie back to back in one buffer of exactly ``size`` equal shards (``backend.flatten``
    makes them; a total divisible by the number of ranks) that buffer is the flat buffer
    the collectives move: no copy. Otherwise they are copied into a padded flat buffer,
    each step copies this rank's shard in from them and the gathered params back out
    (``seconds["copy"]``). A rank's shard may hold pieces of several groups: each piece
    is stepped with its group's config and has its own state (``states[i]``: group i's
    piece on this rank, None where this rank holds none of it). ``grads``: this rank's
    full local gradients in the order of ``params`` (arrays or CPU tensors of the params'
    shapes, or ``opt.grads``, views of the flat gradient buffer, which saves one copy; the
    step overwrites that buffer). ``comm``: a ``backends.sharded.comm.Communicator``; None
    means ``MPIComm()`` over ``MPI.COMM_WORLD``. ``seconds`` holds the last step's
    reduce_scatter / update / all_gather / copy times.
    """

    def __init__(self, params, backend: str | Backend = "numba", comm=None, **config):
        self.defaults = AdamConfig(**config)
        groups = make_groups(params, self.defaults)
        seen: set = set()
        for i, group in enumerate(groups):
            check_distinct(group["params"], i, seen)
        self.param_groups = groups
        self._configs = [GroupConfig() for _ in groups]
        configs = [c.of(g, i) for i, (c, g) in enumerate(zip(self._configs, groups))]
        self.backend = backend if isinstance(backend, Backend) else get_backend(backend)
        if comm is None:
            from .comm import MPIComm

            comm = MPIComm()
        self.comm = comm
        self.params = [p for group in groups for p in group["params"]]
        host = [_host_view(p, f"params[{i}]") for i, p in enumerate(self.params)]
        for i, p in enumerate(host):
            if not p.flags.writeable:
                raise ValueError(f"params[{i}] is read-only; ShardedAdam updates it in place")
        if not host:
            raise ValueError("params is empty; ShardedAdam needs at least one tensor")
        dtypes = {p.dtype for p in host}
        if len(dtypes) > 1 or next(iter(dtypes)) not in FLOAT_DTYPES:
            raise TypeError(f"params must share one dtype, float32 or float64; got "
                            f"{sorted(map(str, dtypes))}")
        self.dtype = host[0].dtype
        self.shapes = [tuple(p.shape) for p in host]
        self.total = sum(int(p.size) for p in host)
        self.shard_len = -(-self.total // comm.size)
        padded = self.shard_len * comm.size
        span = _span(host, self.total) if padded == self.total else None
        self.zero_copy = span is not None
        self.flat_params = span if self.zero_copy else comm.alloc(padded, self.dtype)
        self.flat_grads = comm.alloc(padded, self.dtype)
        self._host = host
        self.grads = split_views(self.flat_grads, self.shapes)
        self._flat_views = split_views(self.flat_params, self.shapes)
        if not self.zero_copy:
            for view, p in zip(self._flat_views, host):
                view[...] = p
        self.start = comm.rank * self.shard_len
        end = self.start + self.shard_len
        self._shard_pieces = [(i, a - at, b - at) for i, a, b, at in
                              _overlaps([p.size for p in host], self.start, end)]
        bounds = np.cumsum([0] + [len(g["params"]) for g in groups])
        sizes = [sum(int(p.size) for p in host[a:b]) for a, b in zip(bounds, bounds[1:])]
        sizes[-1] += padded - self.total  # the padding steps with the last group (zeros stay 0)
        #: (group, start, stop) of each group's piece of this rank's shard (shard-relative).
        self._group_pieces = [(g, a - self.start, b - self.start)
                              for g, a, b, _ in _overlaps(sizes, self.start, end)]
        self._param_shard = comm.chunk(self.flat_params, comm.rank)
        self._grad_shard = (self.flat_grads if comm.size == 1  # one rank: nothing to reduce
                            else np.zeros(self.shard_len, self.dtype))
        self._staged = self.backend.device != "cpu"
        self._device_params = [self.backend.asarray(self._param_shard[a:b]) if self._staged
                               else self._param_shard[a:b] for _, a, b in self._group_pieces]
        #: Made once: the backends keep their checks by the arrays' identity.
        self._grad_pieces = [self._grad_shard[a:b] for _, a, b in self._group_pieces]
        self.states: list[AdamState | None] = [None] * len(groups)
        for (g, _, _), piece in zip(self._group_pieces, self._device_params):
            self.states[g] = self.backend.init_state([piece], configs[g])
        self.seconds = {"reduce_scatter": 0.0, "update": 0.0, "all_gather": 0.0, "copy": 0.0}

    @property
    def state_bytes(self) -> int:
        """Bytes of optimizer state this rank holds: its arrays of m, v and amsgrad's max
        (with int8 state their codes and scales)."""
        arrays = [getattr(state, name) or () for state in self.states if state is not None
                  for name in _MOMENTS + SCALE_NAMES]
        return sum(int(a.nbytes) for column in arrays for a in column if a is not None)

    def step(self, grads, lr=None) -> None:
        """One sharded Adam step; every rank must call it with its local gradients.

        ``lr`` (a number, or one per group) is this step's learning rate and becomes the
        groups' ``"lr"``, as ``Adam.step``'s does; without it each group's ``"lr"`` (a
        schedule may set it between steps). Every group's dict and lr is checked on every
        rank before anything changes (also groups this rank holds no piece of, so that all
        ranks refuse alike)."""
        groups = self.param_groups
        rates = step_rates([g["lr"] for g in groups] if lr is None else lr, len(groups))
        configs = [c.of(g, i) for i, (c, g) in enumerate(zip(self._configs, groups))]
        grads = as_list(grads, "grads")
        if not (len(grads) == len(self.grads) and all(map(_is, grads, self.grads))):
            for view, g in zip(self.grads, self._checked_grads(grads)):
                view[...] = g
        t0 = time.perf_counter()
        if not self.zero_copy:  # the caller's values of this rank's shard, as they are now
            for i, a, b in self._shard_pieces:
                self._flat_views[i].reshape(-1)[a:b] = self._host[i].reshape(-1)[a:b]
        copy_in = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.comm.reduce_scatter(self.flat_grads, self._grad_shard)
        t1 = time.perf_counter()
        # lr None where it is the config's: the backend's fast path, no per-step lr to check
        calls = [([piece], [self.backend.asarray(grad) if self._staged else grad],
                  self.states[g], configs[g], None if rates[g] == configs[g].lr else rates[g])
                 for piece, grad, (g, _, _) in zip(self._device_params, self._grad_pieces,
                                                   self._group_pieces)]
        if len(calls) == 1:
            self.backend.step(*calls[0])
        elif calls:
            self.backend.step_groups(calls)
        if self._staged:
            for piece, (_, a, b) in zip(self._device_params, self._group_pieces):
                self._param_shard[a:b] = self.backend.to_numpy(piece)
        t2 = time.perf_counter()
        self.comm.all_gather(self.flat_params)
        t3 = time.perf_counter()
        if not self.zero_copy:
            for p, view in zip(self._host, self._flat_views):
                p[...] = view
        t4 = time.perf_counter()
        if lr is not None:
            for group, rate in zip(groups, rates):
                group["lr"] = rate
        self.seconds = {"reduce_scatter": t1 - t0, "update": t2 - t1, "all_gather": t3 - t2,
                        "copy": copy_in + t4 - t3}

    def _checked_grads(self, grads) -> list[np.ndarray]:
        """``grads`` as host arrays, each checked against its param."""
        if len(grads) != len(self.shapes):
            raise ValueError(f"grads holds {len(grads)} tensors but params has "
                             f"{len(self.shapes)}")
        host = []
        for i, (g, shape) in enumerate(zip(grads, self.shapes)):
            try:
                g = to_host(g.detach() if hasattr(g, "detach") else g)
            except (TypeError, RuntimeError) as exc:  # torch's: a CUDA or bfloat16 tensor
                raise TypeError(f"grads[{i}]: {exc}") from None
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{i}] is {type(g).__name__}; expected an array")
            if g.dtype != self.dtype:
                raise TypeError(f"grads[{i}] has dtype {g.dtype} but params has {self.dtype}")
            if tuple(g.shape) != shape:
                raise ValueError(f"grads[{i}] has shape {tuple(g.shape)} but params[{i}] "
                                 f"has {shape}")
            host.append(g)
        return host

    # --- checkpoints --------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write this rank's shard of the state, then (rank 0, once every shard is on
        disk) the manifest: a checkpoint is complete, or ``load`` finds none. Every rank
        must call it; returns the manifest's path."""
        directory = Path(directory)
        config, entries = describe_groups(self.param_groups, self.defaults)
        manifest = _manifest(config, entries, self.backend.name, self.dtype, self.shapes,
                             self._steps(), self.comm.size, self.shard_len)
        ok = True
        try:
            _write_shard(directory, manifest, self.comm.rank, self._shard_arrays(manifest))
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

    def _steps(self) -> int:
        """The steps taken (every group steps together; a rank holding no state, its shard
        empty, has taken none it could count)."""
        return next((s.step for s in self.states if s is not None), 0)

    def _shard_arrays(self, manifest: dict) -> dict:
        """This rank's arrays of a checkpoint: the moments of float groups' pieces
        laid out over the shard (zeros elsewhere), each int8 group's codes and scales
        under ``name.i`` (encoded per piece, so kept as they are)."""
        flat = {name: np.zeros(self.shard_len, self.dtype) for name in manifest["moments"]}
        int8_arrays = {}
        for g, a, b in self._group_pieces:
            host = self.states[g].to_dict()
            for name in _MOMENTS + SCALE_NAMES:
                array = (host.get(name) or [None])[0]
                if array is None:
                    continue
                if self.param_groups[g]["state_dtype"] is None:
                    flat[name][a:b] = array
                else:
                    int8_arrays[f"{name}.{g}"] = array
        return {**flat, **int8_arrays}

    @classmethod
    def load(cls, directory, params, backend: str | Backend | None = None, comm=None,
             **overrides) -> "ShardedAdam":
        """A ShardedAdam resumed from ``directory``, re-sharded to this run's ranks, with
        the saved param groups (``params``: the list of every tensor, in ``opt.params``
        order); ``overrides`` replace those hyperparameters in every group."""
        manifest = read_manifest(directory)
        entries = _check_params(manifest, params)
        params = list(as_list(params, "params"))
        groups = [{**_hyperparameters(e), **overrides, "params": [params[k] for k in e["params"]]}
                  for e in entries]
        opt = cls(groups, backend=backend or manifest["backend"], comm=comm,
                  **{**manifest["config"], **overrides})
        for i, (group, entry) in enumerate(zip(opt.param_groups, entries)):
            if group["state_dtype"] != entry.get("state_dtype"):
                raise ValueError(f"{directory}: param_groups[{i}] saved with state_dtype="
                                 f"{entry.get('state_dtype')!r}; it resumes so only")
        int8_groups = [g for g, _, _ in opt._group_pieces
                     if opt.param_groups[g]["state_dtype"] is not None]
        own = (_read_own_shard(Path(directory), manifest, opt.comm)
               if any(e.get("state_dtype") for e in entries) else {})
        moments = {}
        if len(int8_groups) < len(opt._group_pieces):
            lo = opt.start
            hi = min(lo + opt.shard_len, opt.total)
            moments = _read_range(Path(directory), manifest, lo, max(hi, lo), opt.shard_len)
        states = []
        for piece, (g, a, b) in zip(opt._device_params, opt._group_pieces):
            config = opt._configs[g].of(opt.param_groups[g], g)
            if g in int8_groups:
                saved = _int8_state(own, manifest, g)
            else:
                saved = {"step": manifest["step"], **{
                    name: [moments[name][a:b].copy()] if name in moments and (
                        name != "max_exp_avg_sq" or config.amsgrad) else None
                    for name in _MOMENTS}}
            state = opt.backend.state_from_dict(saved)
            opt.backend.check_state([piece], state, config)
            states.append((g, state))
        for g, state in states:
            opt.states[g] = state
        return opt


def save_adam(adam: Adam, directory: str | os.PathLike) -> Path:
    """Write a plain ``Adam``'s state (its param groups too) as a one-shard checkpoint
    that ``ShardedAdam.load`` re-shards to any number of ranks."""
    params = adam.params
    dtypes = {p.dtype for p in params}
    if len(dtypes) != 1:
        raise TypeError("save_adam needs params of one dtype")
    saved = adam.state_dict()
    states = saved["state"] if isinstance(saved["state"], list) else [saved["state"]]
    for i, entry in enumerate(saved["param_groups"]):
        if entry["state_dtype"] is not None:
            raise ValueError(f"param_groups[{i}]: {_NOT_RESHARDED}; save a plain Adam with "
                             "Adam.save")
        if states[i]["step"] != states[0]["step"]:
            raise ValueError(f"save_adam needs every param group at one step: param_groups"
                             f"[{i}] is at step {states[i]['step']}, param_groups[0] at "
                             f"{states[0]['step']}")
    shapes = [tuple(p.shape) for p in params]
    total = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
    manifest = _manifest(saved["config"], saved["param_groups"], adam.backend.name,
                         params[0].dtype, shapes, states[0]["step"], 1, total)
    moments = {name: np.concatenate([a.reshape(-1) for state, group in
                                     zip(states, adam.param_groups) for a in state[name] or
                                     [np.zeros(p.shape, p.dtype) for p in group["params"]]])
               for name in manifest["moments"]}
    _write_shard(Path(directory), manifest, 0, moments)
    _write_manifest(Path(directory), manifest)
    return Path(directory) / MANIFEST


def load_adam(directory, params, backend: str | Backend | None = None) -> Adam:
    """A plain ``Adam`` over ``params`` (the list of every tensor) resumed from a
    checkpoint of any number of ranks, with its param groups."""
    manifest = read_manifest(directory)
    entries = _check_params(manifest, params)
    if any(e.get("state_dtype") is not None for e in entries):
        raise ValueError(f"{directory}: {_NOT_RESHARDED}; resume it with ShardedAdam.load "
                         f"on {manifest['world_size']} ranks")
    total = manifest["total"]
    moments = _read_range(Path(directory), manifest, 0, total, total)
    shapes = [tuple(s) for s in manifest["shapes"]]
    tensors = {name: [v.reshape(s) for v, s in zip(split_views(flat, shapes), shapes)]
               for name, flat in moments.items()}
    params = list(as_list(params, "params"))
    opt = Adam([{**_hyperparameters(e), "params": [params[k] for k in e["params"]]}
                for e in entries], backend=backend or manifest["backend"], **manifest["config"])
    states = [{"step": manifest["step"], **{
        name: [tensors[name][k] for k in e["params"]] if name in tensors and (
            name != "max_exp_avg_sq" or e["amsgrad"]) else None for name in _MOMENTS}}
        for e in entries]
    opt.load_state_dict({"config": manifest["config"], "param_groups": entries,
                         "state": states})
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
def _manifest(config: dict, entries: list[dict], backend: str, dtype, shapes, step: int,
              world: int, shard_len: int) -> dict:
    """The manifest: the groups (``describe_groups``'s config and entries) and layout;
    ``moments`` names the arrays laid out over the shards (those of float groups)."""
    total = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
    plain = [e for e in entries if e["state_dtype"] is None]
    moments = [m for m in _MOMENTS if plain and (m != "max_exp_avg_sq"
                                                  or any(e["amsgrad"] for e in plain))]
    return {"format": _FORMAT, "step": int(step), "config": config, "param_groups": entries,
            "backend": backend, "dtype": str(np.dtype(dtype)), "shapes": [list(s) for s in shapes],
            "total": total, "world_size": world, "shard_len": shard_len, "moments": moments,
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


def _read_own_shard(directory: Path, manifest: dict, comm) -> dict:
    """Every array of this rank's shard file: int8 state is encoded per block of each
    rank's piece of a group, so only the world size that saved it can use it."""
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
        return {name: f[name] for name in f.files}


def _int8_state(arrays: dict, manifest: dict, group: int) -> dict:
    """Group ``group``'s int8 state dict from its rank's shard arrays (named ``name.i``;
    a checkpoint from before groups has one group and plain names)."""
    def key(name):
        return f"{name}.{group}" if "param_groups" in manifest else name

    state = {"step": manifest["step"]}
    for name, scale in zip(_MOMENTS, SCALE_NAMES):
        if key(name) in arrays:
            state[name] = [arrays[key(name)]]
            state[scale] = [arrays.get(key(scale))]
    return state


def _check_params(manifest: dict, params) -> list[dict]:
    """The manifest's param group entries (one group in a checkpoint from before groups),
    once ``params`` have the saved shapes."""
    shapes = [list(np.shape(to_host(p))) for p in as_list(params, "params")]
    if shapes != manifest["shapes"]:
        raise ValueError(f"params have shapes {shapes} but the checkpoint was saved for "
                         f"{manifest['shapes']}")
    return manifest.get("param_groups") or [
        {**manifest["config"], "params": list(range(len(shapes)))}]


def _hyperparameters(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "params"}


def _host_view(x, what: str) -> np.ndarray:
    """The NumPy view of a param the step updates in place: a NumPy array itself, a CPU
    torch tensor's memory (``requires_grad`` aside: the step writes its data, as
    torch.optim does); anything else would be a copy the caller never sees."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "device"):
        if x.device.type != "cpu":
            raise TypeError(f"{what} is on {x.device}; ShardedAdam steps host memory (NumPy "
                            "arrays, CPU torch tensors)")
        try:
            return x.detach().numpy()
        except (TypeError, RuntimeError) as exc:  # torch's: a dtype NumPy lacks
            raise TypeError(f"{what}: {exc}; expected float32 or float64") from None
    raise TypeError(f"{what} is {type(x).__name__}; expected a NumPy array or a CPU torch "
                    "tensor (updated in place)")


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


def _overlaps(sizes, lo: int, hi: int) -> list[tuple[int, int, int, int]]:
    """(i, start, stop, offset) for each i whose elements [offset, offset + sizes[i]) of
    the flat buffer meet [lo, hi): the common range and where i begins."""
    pieces, offset = [], 0
    for i, n in enumerate(sizes):
        a, b = max(lo, offset), min(hi, offset + int(n))
        if a < b:
            pieces.append((i, a, b, offset))
        offset += int(n)
    return pieces
