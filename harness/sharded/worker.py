"""What each rank runs under ``mpiexec``: the sharded check, bench and digits demo.

``python -m harness.sharded.worker JOB --out FILE.json [options]``; every rank takes part,
rank 0 writes the JSON rows. ``harness.sharded.mpi_launch`` starts it; users call ``adam-bench``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from backends import Adam, get_backend
from backends.sharded.comm import MPIComm
from backends.sharded.adam import ShardedAdam

from ..check.agreement import OPTION_SETS
from ..core.problems import MIXED_SHAPES, random_problem

__all__ = ["check_rows", "bench_rows", "demo_rows", "mean_of", "main"]


def mean_of(grads_by_rank: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The single-process average: sum in rank order, divided by the number of ranks
    (the same correctly rounded division the communicators do)."""
    n = len(grads_by_rank)
    out = []
    for tensors in zip(*grads_by_rank):
        total = tensors[0].copy()
        for t in tensors[1:]:
            total += t
        out.append(total / total.dtype.type(n))
    return out


def _backend(name: str, ranks: int):
    """The backend a rank steps its shard with: Numba gets the rank's share of the cores."""
    if name == "numba":
        return get_backend(name, threads=max(1, (os.cpu_count() or 1) // ranks))
    return get_backend(name)


def check_rows(comm, backend: str, dtypes, steps: int, seed: int) -> list[dict]:
    """Sharded Adam against the single-process step on the averaged gradient, every
    option set, after every step: bit for bit with 2 ranks (a sum of two is order-free),
    else within ``bound`` (the reduction's rounding carried through ``steps`` steps)."""
    rows = []
    for dtype in dtypes:
        problems = [random_problem(MIXED_SHAPES, dtype, steps, seed + r) for r in range(comm.size)]
        for option, overrides in OPTION_SETS.items():
            cfg = {"lr": 1e-3, **overrides}
            sharded = ShardedAdam(problems[0].copy_params(), backend=_backend(backend, comm.size),
                                  comm=comm, **cfg)
            single_params = problems[0].copy_params()
            single = Adam(single_params, backend=backend, **cfg)
            eps = float(np.finfo(dtype).eps)
            worst_abs = worst_ulp = worst_ratio = 0.0
            for t in range(steps):
                sharded.step(problems[comm.rank].grads[t])
                single.step(mean_of([p.grads[t] for p in problems]))
                for a, b in zip(sharded.params, single_params):
                    if not a.size:
                        continue
                    diff = np.abs(a.astype(np.float64) - b)
                    ulp = np.spacing(np.abs(b)).astype(np.float64)
                    worst_abs = max(worst_abs, float(diff.max()))
                    worst_ulp = max(worst_ulp, float((diff / ulp).max()))
                    if comm.size > 2:  # each step may round p and the mean differently
                        bound = (t + 1) * (2 * ulp + 8 * comm.size * eps * cfg["lr"])
                        worst_ratio = max(worst_ratio, float((diff / bound).max()))
                    elif diff.any():
                        worst_ratio = float("inf")
            rows.append({"ranks": comm.size, "backend": backend, "dtype": dtype,
                         "options": option, "steps": steps, "max_abs_diff": worst_abs,
                         "max_ulp_diff": worst_ulp, "tolerance_ratio": worst_ratio,
                         "passed": bool(worst_ratio <= 1)})
    return rows


def bench_rows(comm, backend: str, sizes, dtype: str, repeats: int) -> list[dict]:
    """Per size: the sharded step's phases; a memcpy of the same bytes on every rank at
    once (the machine's memcpy bandwidth: sum over ranks); and on rank 0, while the other
    ranks wait idle, the single-process step (all cores) and a memcpy by one process, all
    timed in turn."""
    rows = []
    for n in sizes:
        rng = np.random.default_rng(comm.rank)
        params = [rng.standard_normal(n).astype(dtype)]
        local = rng.standard_normal(n).astype(dtype)
        opt = ShardedAdam(params, backend=_backend(backend, comm.size), comm=comm)
        lead = comm.rank == 0
        src, dst = local.copy(), np.empty_like(local)
        if lead:
            single_p = [params[0].copy()]
            single = Adam(single_p, backend=backend)
        phases, singles, copies, together = [], [], [], []
        for r in range(repeats + 1):  # the first round warms up (compilation, first touch)
            np.copyto(opt.grads[0], local)
            comm.comm.Barrier()  # ranks enter the step together (skew is not the step's)
            opt.step(opt.grads)
            phases.append(dict(opt.seconds))
            comm.all_ok(True)
            t0 = time.perf_counter()  # every rank copies at once: the machine's memcpy
            np.copyto(dst, src)
            comm.comm.Barrier()
            together.append(time.perf_counter() - t0)
            if lead:
                t0 = time.perf_counter()
                single.step([local])
                t1 = time.perf_counter()
                np.copyto(dst, src)
                t2 = time.perf_counter()
                singles.append(t1 - t0)
                copies.append(t2 - t1)
            comm.all_ok(True)
        if not lead:
            continue
        row = _bench_row(comm.size, backend, dtype, n, opt, phases[1:], singles[1:], copies[1:])
        per_rank = n * np.dtype(dtype).itemsize / float(np.median(together[1:])) / 1e9
        row["machine_memcpy_gb_per_s"] = comm.size * per_rank
        row["comm_over_machine_memcpy"] = row["comm_gb_per_s"] / per_rank
        rows.append(row)
    return rows


def _bench_row(ranks, backend, dtype, n, opt, phases, singles, copies) -> dict:
    med = {k: float(np.median([p[k] for p in phases])) for k in phases[0]}
    total = float(np.median([sum(p.values()) for p in phases]))
    nbytes = n * np.dtype(dtype).itemsize
    moved = (ranks - 1) / ranks * opt.flat_params.nbytes  # bytes each rank sends per collective
    single, memcpy = float(np.median(singles)), float(np.median(copies))
    comm_s = med["reduce_scatter"] + med["all_gather"]
    gbps = (lambda b, s: b / s / 1e9 if ranks > 1 and s > 0 else float("nan"))
    return {"ranks": ranks, "backend": backend, "dtype": dtype, "elements": n,
            "reduce_scatter_us": med["reduce_scatter"] * 1e6, "update_us": med["update"] * 1e6,
            "all_gather_us": med["all_gather"] * 1e6, "total_us": total * 1e6,
            "reduce_scatter_gb_per_s": gbps(moved, med["reduce_scatter"]),
            "all_gather_gb_per_s": gbps(moved, med["all_gather"]),
            "comm_gb_per_s": gbps(2 * moved, comm_s), "memcpy_gb_per_s": nbytes / memcpy / 1e9,
            "comm_over_memcpy": gbps(2 * moved, comm_s) / (nbytes / memcpy / 1e9),
            "single_process_us": single * 1e6, "total_over_single": total / single,
            "state_bytes_per_rank": opt.state_bytes, "shard_elements": opt.shard_len,
            "update_elements_per_s": opt.shard_len / med["update"], "repeats": len(phases)}


def demo_rows(comm, backend: str, steps: int, lr: float, seed: int) -> list[dict]:
    """Data-parallel digits: rank k computes the gradient of its slice of the training
    set (scaled so the mean over ranks is the full-batch gradient) and steps a
    ShardedAdam; rank 0 replays the same training in one process with a plain Adam on
    the averaged gradient, and the plain full-batch run of ``adam-bench demo``."""
    from threadpoolctl import threadpool_limits

    from ..demo import init_params, loss_and_grads, accuracy, load_digits_split

    x, y, x_test, y_test = load_digits_split(seed)
    parts = np.array_split(np.arange(len(x)), comm.size)
    scales = [np.float32(len(part) * comm.size / len(x)) for part in parts]

    def rank_grads(params, k):
        return [g * scales[k] for g in loss_and_grads(params, x[parts[k]], y[parts[k]])[1]]

    def run(make, grads_of):
        params = init_params(seed)
        opt = make(params)
        params = getattr(opt, "params", params)
        for _ in range(steps):
            opt.step(grads_of(params))
        loss = loss_and_grads(params, x, y)[0]
        return loss, accuracy(params, x_test, y_test), params

    with threadpool_limits(limits=1, user_api="blas"):
        t0 = time.perf_counter()
        loss, acc, params = run(lambda p: ShardedAdam(p, backend=_backend(backend, comm.size),
                                                      comm=comm, lr=lr),
                                lambda p: rank_grads(p, comm.rank))
        seconds = time.perf_counter() - t0
        if comm.rank != 0:
            return []
        rows = [{"run": f"sharded, {comm.size} ranks", "final_loss": loss,
                 "test_accuracy": acc, "train_seconds": seconds}]
        ref_loss, ref_acc, ref_params = run(
            lambda p: Adam(p, backend=backend, lr=lr),
            lambda p: mean_of([rank_grads(p, k) for k in range(comm.size)]))
        rows.append({"run": "one process, same averaged gradients", "final_loss": ref_loss,
                     "test_accuracy": ref_acc, "train_seconds": float("nan")})
        full_loss, full_acc, _ = run(lambda p: Adam(p, backend=backend, lr=lr),
                                     lambda p: loss_and_grads(p, x, y)[1])
        rows.append({"run": "one process, full batch (adam-bench demo)",
                     "final_loss": full_loss, "test_accuracy": full_acc,
                     "train_seconds": float("nan")})
    same = all(np.array_equal(a, b) for a, b in zip(params, ref_params))
    for row in rows:
        row["final_loss_rel_diff"] = abs(row["final_loss"] - loss) / loss
        row["params_equal_bits"] = same if row is rows[1] else None
    return rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.sharded.worker")
    p.add_argument("job", choices=["check", "bench", "demo"])
    p.add_argument("--out", required=True, help="JSON file rank 0 writes the rows to")
    p.add_argument("--backend", default="numba", help="backend name (check: a comma list)")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--sizes", default="1048576")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per collective")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    comm = MPIComm(timeout=args.timeout)
    dtypes = args.dtypes.split(",")
    if args.job == "check":
        rows = [row for backend in args.backend.split(",")
                for row in check_rows(comm, backend, dtypes, args.steps, args.seed)]
    elif args.job == "bench":
        rows = bench_rows(comm, args.backend, [int(s) for s in args.sizes.split(",")],
                          dtypes[0], args.repeats)
    else:
        rows = demo_rows(comm, args.backend, args.steps, args.lr, args.seed)
    if comm.rank == 0:
        with open(args.out, "w") as f:
            json.dump(rows, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
