"""A deliberately broken peer for tests: its native build fails, as DeepSpeed's does
without a C++ compiler."""
from harness.core.steppers import Stepper


def build() -> None:
    raise RuntimeError("ninja: build stopped: subcommand failed.")


STEPPER = Stepper
