"""What the harness runs and compares: our backends, the emulated GPU kernels and the
peers (``peers``, one adapter per library), each a ``Subject``."""
from .collect import collect_subjects
from .subject import Subject, backend_subject

__all__ = ["Subject", "backend_subject", "collect_subjects"]
