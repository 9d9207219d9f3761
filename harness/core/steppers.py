"""One way to drive any Adam, ours or a peer's: make it, step it, read it back.

``check`` and ``bench`` work on Steppers only, so torch.optim.Adam rows and our backends'
rows are measured by the same code.
"""
from __future__ import annotations

import numpy as np

from backends import AdamConfig, Backend

__all__ = ["Stepper", "BackendStepper", "UnsupportedOption"]


class UnsupportedOption(ValueError):
    """A peer cannot run this option or dtype (raised by its constructor, before any step)."""


class Stepper:
    """Adam over a fixed list of tensors. ``kind`` is "backend" (ours), "emulated" (a GPU
    kernel's arithmetic on the CPU, harness.subjects.emulated_gpu) or "peer"."""

    label: str
    kind: str
    device: str
    compile_seconds: float = 0.0
    threads: int | None = None

    def compile_count(self) -> int:
        """Compilations done so far by this stepper's compiler (0 when it has none): the
        sweep and the benchmarks assert that timed steps leave it unchanged."""
        return 0

    def prepare(self, grads: list[np.ndarray]):
        """Host gradients in the form ``step`` takes (device arrays for GPU code)."""
        raise NotImplementedError

    def step(self, prepared) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        """Block until queued work is done (timings read the clock after this)."""

    def timer(self):
        """A device timer for harness.core.timing (None: the host clock times this stepper)."""
        return None

    def params(self) -> list[np.ndarray]:
        raise NotImplementedError

    def moments(self) -> dict[str, list[np.ndarray] | None]:
        """exp_avg, exp_avg_sq and max_exp_avg_sq (None unless amsgrad) as host arrays."""
        raise NotImplementedError

    def state_nbytes(self) -> int | None:
        """Bytes the optimizer state holds now (moments, int8 codes, scales, maps), read
        from the arrays themselves; None when this stepper cannot tell (the tables then use
        the bytes model, ``harness.core.tables.state_bytes_per_parameter``)."""
        return None


class BackendStepper(Stepper):
    """Stepper over one of our backends; params are copied, never shared with the caller."""

    kind = "backend"

    def __init__(self, backend: Backend, params: list[np.ndarray], cfg: AdamConfig,
                 flat_buffer: bool = False):
        self.backend = backend
        self.flat_buffer = flat_buffer or backend.device == "cuda"
        self.label = backend.name
        self.device = backend.device
        self.cfg = cfg
        self.threads = getattr(backend, "threads", None)
        self._params = self._to_backend([np.array(p, copy=True) for p in params])
        self.state = backend.init_state(self._params, cfg)
        self.compile_seconds = getattr(backend, "compile_seconds", 0.0)  # init_state's too

    def compile_count(self) -> int:
        """The backend's ``compile_count`` where it has one (cupy), else 0."""
        count = getattr(self.backend, "compile_count", None)
        return count() if count else 0

    def _to_backend(self, arrays):
        """Backend arrays; views of one flat buffer with ``flat_buffer`` (always on GPUs,
        where a step is then one launch)."""
        if self.flat_buffer:
            return self.backend.flatten(arrays)[1]
        return [self.backend.asarray(a) for a in arrays]

    def prepare(self, grads):
        return self._to_backend(grads)

    def step(self, prepared) -> None:
        self.backend.step(self._params, prepared, self.state, self.cfg)

    def sync(self) -> None:
        self.backend.synchronize()

    def timer(self):
        make = getattr(self.backend, "event_timer", None)
        return make() if make else None

    def params(self):
        return [self.backend.to_numpy(p) for p in self._params]

    def moments(self):
        d = self.state.to_dict()
        return {k: d[k] for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")}

    def state_nbytes(self) -> int:
        """Bytes of the state's array lists: moments and int8 scales (views of one flat
        buffer add up to the buffer; the derived cache is not state)."""
        return sum(a.nbytes for arrays in vars(self.state).values()
                   if isinstance(arrays, list) for a in arrays if a is not None)
