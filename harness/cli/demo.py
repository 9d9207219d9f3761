"""``adam-bench demo``: the digits MLP trained with every CPU backend (or float32 beside
int8 state, ``--state int8``; on MPI ranks, ``--ranks``)."""
from __future__ import annotations

from . import options
from .summary import print_table

__all__ = ["add_parser", "cmd_demo"]


def add_parser(sub) -> None:
    """The ``demo`` subcommand."""
    p = sub.add_parser("demo", help="train an MLP on scikit-learn's digits with every CPU "
                                    "backend from one seed; plot the loss curves")
    p.add_argument("--steps", type=options.positive_int, default=200,
                   help="full-batch steps (default 200)")
    p.add_argument("--no-peers", action="store_true", help="leave out torch's Adam")
    p.add_argument("--out", default="results/local/demo-digits", help="path stem")
    p.add_argument("--ranks", type=options.ranks, help=options.RANKS_HELP)
    p.add_argument("--format", type=options.format_names,
                   help="instead: the MLP and a least-squares problem trained in these "
                        "formats and fp32 (default out results/local/demo-formats)")
    p.add_argument("--state", choices=["int8"], help="instead: float32 state beside int8 "
                   "state (default out results/local/demo-digits-int8)")
    p.add_argument("--torch", action="store_true", help="instead: the MLP as a torch model "
                   "trained with backends.torch.Adam and torch.optim.Adam (default out "
                   "results/local/demo-digits-torch); with --format, in those formats "
                   "beside torch.optim.Adam on params of the format's dtype")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    if args.ranks:
        from .sharded import cmd_demo as sharded

        return sharded(args)
    from ..demo import run_demo

    if args.state == "int8":
        return _demo_int8(args)
    if args.torch:
        return _demo_torch(args)
    if args.format:
        from ..demo.formats import run_format_demo

        out = (args.out if args.out != "results/local/demo-digits"
               else "results/local/demo-formats")
        run_format_demo(args.format, steps=args.steps, out_stem=out)
        print(f"tables: {out}.csv/.json/.md")
        return 0
    result = run_demo(steps=args.steps, out_stem=args.out, include_peers=not args.no_peers)
    print_table(result.summary, f"Digits MLP trained with Adam on every CPU backend "
                                 f"({args.steps} full-batch steps, same seed)")
    print(f"\nplot: {result.plot}\ntables: {args.out}.csv/.json/.md")
    return 0 if result.ok else 1


def _demo_torch(args) -> int:
    """The torch MLP with our adapter and torch.optim.Adam; with ``--format``, in those
    training formats, a measurement (their losses differ by design; torch.optim.Adam on
    float16 params may diverge), so no pass or fail, as ``demo --format``."""
    from ..demo.digits_torch import run_torch_demo, run_torch_format_demo

    stem = "demo-digits-torch-formats" if args.format else "demo-digits-torch"
    out = args.out if args.out != "results/local/demo-digits" else f"results/local/{stem}"
    if args.format:
        result = run_torch_format_demo(args.format, steps=args.steps, out_stem=out)
    else:
        result = run_torch_demo(steps=args.steps, out_stem=out)
    print_table(result.summary, f"Digits MLP in torch (autograd), our torch.optim Adam and "
                                 f"torch.optim.Adam ({args.steps} full-batch steps, same seed)")
    print(f"\nplot: {result.plot}\ntables: {out}.csv/.json/.md")
    return 0 if args.format or result.ok else 1


def _demo_int8(args) -> int:
    from ..demo.digits_int8 import run_int8_demo

    out = (args.out if args.out != "results/local/demo-digits"
           else "results/local/demo-digits-int8")
    summary, _ = run_int8_demo(steps=args.steps, out_stem=out)
    print_table(summary, f"Digits MLP, numba backend, float32 state and int8 state "
                          f"({args.steps} full-batch steps, same seed)")
    print(f"\nplot: {out}.png\ntables: {out}.csv/.json/.md")
    return 0


#: The tour's own options for its steps: a sweep of flat tensors with fewer, shorter
#: repeats than ``bench``'s defaults, so a first run takes about a minute
#: (``adam-bench bench`` measures everything).
