"""int8 state agreement: every backend's int8 step against the float64 int8
reference (``backends.reference.reference_step_int8``), step by step from the backend's
own state, so errors never compound.

A code may differ from the reference's only where the reference's value / scale lies
within float32 rounding (BOUNDARY_EPS float32 epsilons) of a decision boundary between
two codes: the kernels compute that ratio in float32. Those are counted
(``codes_at_boundary``); any other difference fails. Scales must agree within float32
rounding; params within PARAM_TOLERANCE: two float32 ulps of the param plus float32
rounding of an update (about lr at most) several times over.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from backends import Adam, AdamConfig, BackendUnavailable, get_backend
from backends.reference import Int8Moment, nearest_code, reference_step_int8

from .agreement import OPTION_SETS

__all__ = ["BOUNDARY_EPS", "compare_codes", "int8_agreement", "INT8_SIZE",
           "simulated_int8_agreement", "SIMULATED", "SIMULATED_STEPS", "PYTHON_STEPS"]

#: Float32 epsilons within which a reference value counts as on a decision boundary.
BOUNDARY_EPS = 8
_F32_EPS = float(np.finfo(np.float32).eps)
#: A param's tolerance: 2 ulps of its float32 value plus this many float32 epsilons of lr.
PARAM_LR_EPS = 64
#: Steps of the pure-Python backend (about 8 us per element and step: 20 steps of every
#: option set would be most of the check's time; 5 still carry every block's state
#: through four updates from its own codes).
PYTHON_STEPS = 5
#: One tensor with int8 state: 32 full blocks and a partial one.
INT8_SIZE = 32 * 256 + 100
_MOMENTS = (("exp_avg", True), ("exp_avg_sq", False), ("max_exp_avg_sq", False))


def compare_codes(codes, reference: Int8Moment, signed: bool) -> tuple[int, int]:
    """(codes differing at a decision boundary, codes differing anywhere else)."""
    differ = np.asarray(codes) != reference.codes
    x = np.abs(reference.x)
    ambiguous = (nearest_code(x * (1 - BOUNDARY_EPS * _F32_EPS), signed)
                 != nearest_code(x * (1 + BOUNDARY_EPS * _F32_EPS), signed))
    return int(np.count_nonzero(differ & ambiguous)), int(np.count_nonzero(differ & ~ambiguous))


def _moment(state: dict, name: str) -> Int8Moment | None:
    if state.get(name) is None:
        return None
    return Int8Moment(state[name][0], state[f"{name}_scale"][0].astype(np.float64))


def _run(backend, options: dict, steps: int, seed: int) -> dict:
    cfg = AdamConfig(state_dtype="int8", **options)
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(INT8_SIZE).astype(np.float32)
    opt = Adam([backend.asarray(p)], backend=backend, **cfg.to_dict())
    out = {"codes_compared": 0, "codes_at_boundary": 0, "codes_off_boundary": 0,
           "max_scale_rel_err": 0.0, "param_tolerance_ratio": 0.0}
    for _ in range(steps):
        g = (rng.standard_normal(INT8_SIZE) * 10.0 ** rng.uniform(-4, 1, INT8_SIZE))
        g = g.astype(np.float32)
        before = opt.state_dict()["state"]
        p_before = backend.to_numpy(opt.params[0]).copy()
        opt.step([backend.asarray(g)])
        after = opt.state_dict()["state"]
        ref_p, *ref = reference_step_int8(
            p_before, g, *(_moment(before, name) for name, _ in _MOMENTS), opt.state.step, cfg)
        p_now = backend.to_numpy(opt.params[0]).astype(np.float64)
        tolerance = (2 * np.spacing(np.abs(ref_p).astype(np.float32)).astype(np.float64)
                     + PARAM_LR_EPS * _F32_EPS * cfg.lr)
        out["param_tolerance_ratio"] = max(out["param_tolerance_ratio"],
                                           float(np.max(np.abs(p_now - ref_p) / tolerance)))
        for (name, signed), q in zip(_MOMENTS, ref):
            if q is None:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                rel = np.abs(after[f"{name}_scale"][0] / q.scales - 1)
            out["max_scale_rel_err"] = max(out["max_scale_rel_err"],
                                           float(np.max(np.where(q.scales == 0, 0, rel))))
            at, off = compare_codes(after[name][0], q, signed)
            out["codes_compared"] += q.codes.size
            out["codes_at_boundary"] += at
            out["codes_off_boundary"] += off
    return out


#: GPU backends whose int8 kernel also runs under Numba's CUDA simulator on the CPU.
SIMULATED = ("numba-cuda",)
#: Steps of a simulated subject: the simulator runs one Python thread per GPU thread,
#: about 0.1 s per 256-element block and step (INT8_SIZE has 33 blocks).
SIMULATED_STEPS = 2


def simulated_int8_agreement(backend: str = "numba-cuda", steps: int = SIMULATED_STEPS,
                             seed: int = 0) -> pd.DataFrame:
    """``int8_agreement`` of ``backend``'s GPU kernel run by the CUDA simulator (in a
    process of its own: numba reads NUMBA_ENABLE_CUDASIM at import), as subject
    "<backend> (simulated)"; a row saying why where that fails."""
    import io
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom harness.check.int8_agreement import int8_agreement\n"
            f"sys.stdout.write(int8_agreement([{backend!r}], steps={steps}, "
            f"seed={seed}).to_json(orient='records', double_precision=15))")
    label = f"{backend} (simulated)"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ, NUMBA_ENABLE_CUDASIM="1"), timeout=1800,
                              check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        return pd.DataFrame([{"subject": label, "options": "",
                              "note": f"not run: the simulator failed: "
                                      f"{detail.strip().splitlines()[-1]}"}],
                            columns=_COLUMNS)
    df = pd.read_json(io.StringIO(done.stdout), orient="records")
    return df.reindex(columns=_COLUMNS).assign(subject=label)


def int8_agreement(backend_names: list[str], steps: int = 20, seed: int = 0) -> pd.DataFrame:
    """One row per backend and option set; backends without int8 state get a row that
    says why (``within_tolerance`` NaN: not judged)."""
    rows = []
    for name in backend_names:
        try:
            backend = get_backend(name)
        except BackendUnavailable as exc:
            rows.append({"subject": name, "options": "", "note": f"not run: {exc}"})
            continue
        if not backend.supports_int8_state:
            rows.append({"subject": name, "options": "",
                         "note": "refuses state_dtype='int8' (not implemented)"})
            continue
        runs = min(steps, PYTHON_STEPS) if name == "python" else steps
        for option_name, options in OPTION_SETS.items():
            result = _run(backend, options, runs, seed)
            ok = (result["codes_off_boundary"] == 0
                  and result["max_scale_rel_err"] <= BOUNDARY_EPS * _F32_EPS
                  and result["param_tolerance_ratio"] <= 1)
            rows.append({"subject": name, "options": option_name, "steps": runs, **result,
                         "within_tolerance": ok, "note": ""})
    return pd.DataFrame(rows, columns=_COLUMNS)


_COLUMNS = ["subject", "options", "steps", "codes_compared", "codes_at_boundary",
            "codes_off_boundary", "max_scale_rel_err", "param_tolerance_ratio",
            "within_tolerance", "note"]
