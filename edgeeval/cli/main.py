"""Command line: `edgeeval models | fetch | bench | report | runs | tasks | compare | import |
quantize | fidelity | doctor`. Each module of this folder adds its subcommands through
`add_parsers(sub)` and imports the stages it drives only when its command runs, so
`edgeeval --help` stays light.

The one place where an exception becomes a message and an exit code (EDGEEVAL_DEBUG=1 shows
the traceback).
"""

from __future__ import annotations

import argparse
import sys
import traceback

from edgeeval import __version__, settings
from edgeeval.cli import bench, cluster, doctor, models, quant, results, tasks
from edgeeval.errors import EdgeevalError
from edgeeval.text import safe_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeeval",
        description="Measure small local GGUF models (speed, memory, accuracy) "
        "and rank them by capability per GB. Start with `edgeeval models` or `make bench`.",
    )
    parser.add_argument("--version", action="version", version=f"edgeeval {__version__}")
    parser.add_argument(
        "--catalog",
        help="a models.yaml that adds variants and sets to the built-in catalog (and to the "
        "user-level one in the config dir)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (models, bench, results, tasks, quant, doctor, cluster):
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except EdgeevalError as exc:
        if settings.debug():
            traceback.print_exc()
        print(f"edgeeval: error: {safe_text(exc, 4000, newlines=True)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            "edgeeval: interrupted; finished measurements are saved (use --resume RUN)",
            file=sys.stderr,
        )
        return 130
