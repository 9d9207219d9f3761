"""Sharded Adam in the harness: the worker that runs under ``mpiexec``, its launcher, and
the plan (per-rank memory and step time on paper)."""
