"""``adam-bench``: one module per subcommand (``check``, ``bench``, ...), their shared
option types (``options``) and terminal output (``summary``); ``main`` builds the parser."""
from .main import build_parser, main
from .tour import cmd_tour

__all__ = ["build_parser", "cmd_tour", "main"]
