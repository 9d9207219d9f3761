"""harness.core.timing: batches timed by the host clock, or by a device timer when the step
brings one (CUDA events on a GPU; a fake one here)."""
import numpy as np

from backends import AdamConfig, get_backend
from harness.core.steppers import BackendStepper
from harness.core.timing import time_interleaved


def test_a_device_timer_times_the_batches():
    calls = {"start": 0, "step": 0}

    def start():
        calls["start"] += 1

    def step():
        calls["step"] += 1

    timing, = time_interleaved([(step, lambda: None, (start, lambda: 0.25))], repeats=3,
                               max_seconds=0.0, min_batch_seconds=0.0)
    assert calls["start"] == 3
    assert timing.per_step == (0.25 / timing.steps_per_repeat,) * 3


def test_without_a_timer_the_host_clock_times_the_batches():
    timing, = time_interleaved([(lambda: None, lambda: None)], repeats=3, max_seconds=0.0)
    assert len(timing.per_step) == 3 and all(0 < t < 0.01 for t in timing.per_step)


def test_cpu_steppers_bring_no_device_timer():
    stepper = BackendStepper(get_backend("numpy"), [np.ones(3, np.float32)], AdamConfig())
    assert stepper.timer() is None
