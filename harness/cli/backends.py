"""``adam-bench backends``: every backend, its device, and why any is unavailable."""
from __future__ import annotations

import pandas as pd

from . import options
from .summary import print_table

__all__ = ["add_parser", "cmd_backends"]


def add_parser(sub) -> None:
    """The ``backends`` subcommand."""
    p = sub.add_parser("backends", help="list backends, their device, and why any is unavailable")
    p.add_argument("--verbose", **options.VERBOSE)
    p.set_defaults(func=cmd_backends)


def cmd_backends(args) -> int:
    from backends import list_backends

    from .summary import backends_lines

    listed = list_backends()
    if args.verbose:
        rows = pd.DataFrame([r.__dict__ for r in listed])
        rows["reason"] = rows["reason"].fillna("")
        print_table(rows, "Backends")
    else:
        print("backends:\n" + "\n".join(backends_lines(listed)))
    return 0
