"""Communicators for sharded Adam: reduce-scatter (averaging) and in-place all-gather.

One small interface, two adapters: ``MPIComm`` (mpi4py; any MPI, ``COMM_WORLD`` by default)
and ``TorchComm`` (a torch.distributed process group, for torchrun/DeepSpeed users). Both
move NumPy buffers without pickling; mpi4py and torch are imported only when an adapter is
made, so ``import backends`` imports neither.

Every collective has a deadline (``timeout`` seconds): a peer that died or hangs makes the
waiting rank print which collective timed out and end the whole job with a non-zero exit
(``MPI_Abort``), instead of waiting forever.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

__all__ = ["Communicator", "MPIComm", "TorchComm", "CommTimeout", "DEFAULT_TIMEOUT",
           "ABORT_EXIT_CODE"]

#: Seconds a collective may wait for its peers; ``ADAM_COMM_TIMEOUT`` overrides it.
DEFAULT_TIMEOUT = float(os.environ.get("ADAM_COMM_TIMEOUT", "300"))
#: Exit status of every rank when a collective times out (``MPI_Abort``'s error code).
ABORT_EXIT_CODE = 3
#: Elements per point-to-point message in the ring reduce-scatter (measured: see docs/sharded.md).
DEFAULT_BUCKET = 2**18


class CommTimeout(RuntimeError):
    """A collective did not complete within its deadline: a peer rank died or hangs."""


class Communicator:
    """``rank``, ``size`` and three collectives over 1-D NumPy buffers.

    ``reduce_scatter(sendbuf, recvbuf)``: ``sendbuf`` is cut into ``size`` equal chunks;
    ``recvbuf`` (one chunk long) receives the elementwise mean over ranks of chunk
    ``rank``. ``sendbuf`` may be overwritten (it holds partial sums afterwards).
    ``all_gather(buf)``: chunk ``rank`` of ``buf`` is this rank's; afterwards every chunk
    holds its owner's values, on every rank. ``all_ok(flag)``: True when every rank
    passed True (a barrier that also agrees on success).
    """

    rank: int = 0
    size: int = 1

    def reduce_scatter(self, sendbuf: np.ndarray, recvbuf: np.ndarray) -> None:
        raise NotImplementedError

    def all_gather(self, buf: np.ndarray) -> None:
        raise NotImplementedError

    def all_ok(self, flag: bool) -> bool:
        raise NotImplementedError

    def alloc(self, n: int, dtype) -> np.ndarray:
        """A zeroed 1-D buffer for these collectives (an adapter may place it where its
        peers can reach it); every rank calls it alike."""
        return np.zeros(n, np.dtype(dtype))

    def chunk(self, buf: np.ndarray, rank: int) -> np.ndarray:
        """Chunk ``rank`` of ``buf`` (a view), ``len(buf) // size`` elements long."""
        n = _chunk_len(buf, self.size)
        return buf[rank * n:(rank + 1) * n]


def _chunk_len(buf, size: int) -> int:
    if buf.ndim != 1 or len(buf) % size:
        raise ValueError(f"buffer of shape {buf.shape} does not split into {size} equal chunks")
    return len(buf) // size


def _mean_into(total: np.ndarray, size: int, out: np.ndarray) -> None:
    """out = total / size (a correctly rounded division, exact for size 2)."""
    if size == 1:
        if not np.may_share_memory(out, total):
            out[:] = total
        return
    np.divide(total, total.dtype.type(size), out=out)


_SUM_KERNELS: dict = {}


def _sum_into(a: np.ndarray, b: np.ndarray, out: np.ndarray, size: int) -> None:
    """out = (a + b) / size in one pass (size 1: no division); one compiled loop, so the
    reduction reads each input once instead of twice as two NumPy ufuncs would."""
    kernel = _SUM_KERNELS.get("kernel")
    if kernel is None:
        import numba

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def kernel(a, b, out, size, divide):
            if divide:
                for i in range(a.size):
                    out[i] = (a[i] + b[i]) / size
            else:
                for i in range(a.size):
                    out[i] = a[i] + b[i]

        kernel = _SUM_KERNELS["kernel"] = kernel
    kernel(a, b, out, a.dtype.type(size), size > 1)


class MPIComm(Communicator):
    """Collectives over an mpi4py communicator (``MPI.COMM_WORLD`` when ``comm`` is None).

    When every rank runs on one node (and ``shared_memory`` is True), buffers made by
    ``alloc`` live in an MPI-3 shared-memory window: a collective is a barrier, then each
    rank reads its peers' buffers directly (one pass, no copies through MPI's cells; the
    reduce-scatter sums in rank order). Other buffers, and ranks on several nodes, go
    through point-to-point messages: ``algorithm="ring"`` (default) posts point-to-point ``Isend``/``Irecv`` pairs around a
    ring into preallocated buffers (N-1 steps each way, the bandwidth-optimal schedule);
    ``"builtin"`` calls MPI's own ``Ireduce_scatter_block`` and ``Iallgather``. Both poll
    their requests against the deadline; on timeout the job is aborted with
    ``ABORT_EXIT_CODE`` (``abort=False`` raises ``CommTimeout`` instead).
    """

    def __init__(self, comm=None, timeout: float = DEFAULT_TIMEOUT, algorithm: str = "ring",
                 abort: bool = True, bucket: int = DEFAULT_BUCKET, shared_memory: bool = True):
        from mpi4py import MPI

        if algorithm not in ("ring", "builtin"):
            raise ValueError(f"algorithm must be 'ring' or 'builtin', got {algorithm!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if bucket < 1:
            raise ValueError(f"bucket must be >= 1 elements, got {bucket!r}")
        self.timeout, self.algorithm, self.abort = float(timeout), algorithm, abort
        self.bucket = int(bucket)
        self._scratch: np.ndarray | None = None
        self.node_local = shared_memory and self.size > 1 and (
            self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size() == self.size)
        self._windows: list = []
        self._peers: dict = {}  # (address, length) of a buffer from alloc -> every rank's copy

    def alloc(self, n: int, dtype) -> np.ndarray:
        """A zeroed 1-D buffer (collective: every rank calls it with the same n); in a
        shared-memory window when the ranks share a node."""
        dtype = np.dtype(dtype)
        if not self.node_local:
            return np.zeros(n, dtype)
        win = self._MPI.Win.Allocate_shared(max(n, 1) * dtype.itemsize, dtype.itemsize,
                                            comm=self.comm)
        self._windows.append(win)
        peers = [np.frombuffer(win.Shared_query(r)[0], dtype, count=n) for r in range(self.size)]
        mine = peers[self.rank]
        mine[:] = 0
        self._peers[(mine.ctypes.data, n)] = peers
        self._wait([self.comm.Ibarrier()], "alloc")
        return mine

    # --- the interface ------------------------------------------------------------------
    def reduce_scatter(self, sendbuf, recvbuf) -> None:
        n = _chunk_len(sendbuf, self.size)
        if recvbuf.shape != (n,) or recvbuf.dtype != sendbuf.dtype:
            raise ValueError(f"recvbuf must be {n} elements of {sendbuf.dtype}, got "
                             f"{recvbuf.shape} {recvbuf.dtype}")
        peers = self._peers.get((sendbuf.ctypes.data, len(sendbuf)))
        if self.size == 1:
            _mean_into(sendbuf, 1, recvbuf)
        elif peers is not None:
            self._wait([self.comm.Ibarrier()], "reduce_scatter")
            mine = [p[self.rank * n:(self.rank + 1) * n] for p in peers]
            _sum_into(mine[0], mine[1], recvbuf, 1 if self.size > 2 else 2)
            for r in range(2, self.size):
                _sum_into(recvbuf, mine[r], recvbuf, self.size if r == self.size - 1 else 1)
        elif self.algorithm == "builtin":
            self._wait([self.comm.Ireduce_scatter_block(sendbuf, recvbuf, op=self._MPI.SUM)],
                       "reduce_scatter")
            _mean_into(recvbuf, self.size, recvbuf)
        else:
            self._ring_reduce_scatter(sendbuf, recvbuf, n)

    def all_gather(self, buf) -> None:
        n = _chunk_len(buf, self.size)
        peers = self._peers.get((buf.ctypes.data, len(buf)))
        if self.size == 1:
            return
        if peers is not None:
            self._wait([self.comm.Ibarrier()], "all_gather")
            for r in range(self.size):
                if r != self.rank:
                    np.copyto(buf[r * n:(r + 1) * n], peers[r][r * n:(r + 1) * n])
            return
        if self.algorithm == "builtin":
            self._wait([self.comm.Iallgather(self._MPI.IN_PLACE, buf)], "all_gather")
            return
        right, left = (self.rank + 1) % self.size, (self.rank - 1) % self.size
        for s in range(self.size - 1):
            send, recv = (self.rank - s) % self.size, (self.rank - s - 1) % self.size
            self._wait([self.comm.Irecv(buf[recv * n:(recv + 1) * n], source=left, tag=2),
                        self.comm.Isend(buf[send * n:(send + 1) * n], dest=right, tag=2)],
                       "all_gather")

    def all_ok(self, flag: bool) -> bool:
        mine, out = np.array([int(bool(flag))], np.int32), np.zeros(1, np.int32)
        self._wait([self.comm.Iallreduce(mine, out, op=self._MPI.MIN)], "all_ok", idle=True)
        return bool(out[0])

    # --- internals ----------------------------------------------------------------------
    def _ring_reduce_scatter(self, buf, out, n) -> None:
        """Step s (of N-1) sends the partial sum of chunk rank-s-1 to the right and adds
        the left's partial sum of chunk rank-s-2 into this rank's copy, which is sent on at
        step s+1; the last step's sum, divided by N, lands in ``out``. Each step moves
        ``bucket`` elements at a time: the received bucket is still in cache when added."""
        size, rank, b = self.size, self.rank, min(self.bucket, n)
        if self._scratch is None or len(self._scratch) < b or self._scratch.dtype != buf.dtype:
            self._scratch = np.empty(b, buf.dtype)
        right, left = (rank + 1) % size, (rank - 1) % size
        for s in range(size - 1):
            send, recv = (rank - s - 1) % size, (rank - s - 2) % size
            last = s == size - 2
            for lo in range(0, n, b):
                hi = min(lo + b, n)
                tmp = self._scratch[:hi - lo]
                self._wait([self.comm.Irecv(tmp, source=left, tag=1),
                            self.comm.Isend(buf[send * n + lo:send * n + hi], dest=right,
                                            tag=1)], "reduce_scatter")
                target = buf[recv * n + lo:recv * n + hi]
                _sum_into(target, tmp, out[lo:hi] if last else target, size if last else 1)

    def _wait(self, requests, what: str, idle: bool = False) -> None:
        """Poll until ``requests`` complete; ``idle`` sleeps between polls (a barrier
        should leave the cores to the ranks still working)."""
        Testall = self._MPI.Request.Testall
        if Testall(requests):
            return
        deadline = time.monotonic() + self.timeout
        while not Testall(requests):
            if time.monotonic() > deadline:
                self._timed_out(what)
            if idle:
                time.sleep(1e-4)

    def _timed_out(self, what: str) -> None:
        message = (f"adam-backends: rank {self.rank} of {self.size}: {what} got no answer "
                   f"within {self.timeout:g} s; a peer rank died or hangs")
        if not self.abort:
            raise CommTimeout(message)
        print(message + f"; aborting every rank (exit status {ABORT_EXIT_CODE})",
              file=sys.stderr, flush=True)
        time.sleep(0.5)  # let mpiexec forward the message before it tears the job down
        self.comm.Abort(ABORT_EXIT_CODE)


class TorchComm(Communicator):
    """Collectives over a torch.distributed process group (the default group when None).

    NumPy buffers are shared with CPU tensors (``torch.from_numpy``: no copies), so this
    suits the gloo backend; the group's own ``timeout`` (set at ``init_process_group``)
    bounds every collective and torch raises when it passes.
    """

    def __init__(self, group=None):
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("TorchComm needs torch.distributed.init_process_group first")
        self._torch, self._dist, self.group = torch, dist, group
        self.rank, self.size = dist.get_rank(group), dist.get_world_size(group)

    def reduce_scatter(self, sendbuf, recvbuf) -> None:
        n = _chunk_len(sendbuf, self.size)
        if recvbuf.shape != (n,) or recvbuf.dtype != sendbuf.dtype:
            raise ValueError(f"recvbuf must be {n} elements of {sendbuf.dtype}, got "
                             f"{recvbuf.shape} {recvbuf.dtype}")
        if self.size > 1:
            whole = self._torch.from_numpy(sendbuf)
            self._dist.all_reduce(whole, group=self.group)
        _mean_into(self.chunk(sendbuf, self.rank), self.size, recvbuf)

    def all_gather(self, buf) -> None:
        n = _chunk_len(buf, self.size)
        if self.size == 1:
            return
        whole = self._torch.from_numpy(buf)
        parts = list(whole.split(n))
        self._dist.all_gather(parts, parts[self.rank].clone(), group=self.group)

    def all_ok(self, flag: bool) -> bool:
        t = self._torch.tensor([int(bool(flag))], dtype=self._torch.int32)
        self._dist.all_reduce(t, op=self._dist.ReduceOp.MIN, group=self.group)
        return bool(t.item())
