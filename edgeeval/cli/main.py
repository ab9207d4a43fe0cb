"""Command line: `edgeeval models | fetch | bench | report | runs | tasks | compare | import |
quantize | fidelity | doctor | completion`. Each module of this folder adds its subcommands
through `add_parsers(sub)` and imports the stages it drives only when its command runs, so
`edgeeval --help` stays light.

The global options (`--catalog`, `--output`, `--include-path`) are accepted before the
subcommand and after it (`edgeeval bench --catalog F` as well as `edgeeval --catalog F bench`).

The one place where an exception becomes a message and an exit code (EDGEEVAL_DEBUG=1 shows
the traceback). The codes (README, *Exit codes*): 0 done; 1 an error (EdgeevalError's default,
or an unexpected exception, shown with its traceback); 2 a usage or configuration error
(argparse, ConfigError and the other exit_code = 2 errors, `models` with catalog problems);
3 `bench`, `quantize` or a cluster bench finished without a result (nothing ranked, a build
failed); 4 the host is busy with another bench (HostBusyError); 130 interrupted (Ctrl-C);
141 stdout was closed before everything was printed (`edgeeval runs --json | head`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeeval import __version__, settings
from edgeeval.cli import bench, cluster, completion, doctor, models, plan, quant, results, tasks
from edgeeval.cli.options import HelpFormatter
from edgeeval.errors import ConfigError, EdgeevalError
from edgeeval.text import safe_text

#: Exit codes other than an EdgeevalError's own `exit_code` (README, *Exit codes*).
EXIT_OK = 0
EXIT_NO_RESULT = 3  # bench/quantize finished, but nothing was ranked or built
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the pipe

#: Prefix of the dest a global option has when it is given after the subcommand.
_AFTER = "after_"


def _add_global_options(parser: argparse.ArgumentParser, *, after: bool) -> None:
    """--catalog, --output and --include-path. After the subcommand (`after`) they land in
    their own dests (`after_catalog`...) with no default, so main() merges both places."""
    g = parser.add_argument_group("global options (before or after the subcommand)")
    extra: dict[str, Any] = {"default": argparse.SUPPRESS} if after else {}
    prefix = _AFTER if after else ""
    g.add_argument(
        "--catalog",
        dest=prefix + "catalog",
        metavar="FILE",
        help="a models.yaml that adds variants and sets to the built-in catalog (and to the "
        "user-level one in the config dir)",
        **extra,
    )
    g.add_argument(
        "--output",
        "--output_path",
        dest=prefix + "output",
        metavar="DIR",
        help="where run directories and edgeeval.sqlite go, and are read from (as lm-eval's "
        "--output_path; default: $EDGEEVAL_REPORTS, else ./reports)",
        **extra,
    )
    g.add_argument(
        "--include-path",
        "--include_path",
        dest=prefix + "include_path",
        action="append",
        metavar="DIR",
        help="also read the task .yaml files (and a suites.yaml) in DIR, as lm-eval's "
        "--include_path (repeatable)",
        **extra,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeeval",
        description="Measure small local GGUF models (speed, memory, accuracy) "
        "and rank them by capability per GB. Start with `edgeeval models` or `make bench`.",
        epilog="exit codes: 0 done, 1 error, 2 usage or configuration error, 3 bench finished "
        "with nothing ranked, 4 host busy with another bench, 130 interrupted, 141 stdout closed",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgeeval {__version__}")
    _add_global_options(parser, after=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (models, bench, results, tasks, quant, doctor, cluster, completion, plan):
        module.add_parsers(sub)
    for subparser in sub.choices.values():
        subparser.formatter_class = HelpFormatter
        _add_global_options(subparser, after=True)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line, a global option given after the subcommand merged in (it wins
    over the same option given before; --include-path folders add up)."""
    args = build_parser().parse_args(argv)
    for name in ("catalog", "output", "include_path"):
        if not hasattr(args, _AFTER + name):
            continue
        later = getattr(args, _AFTER + name)
        delattr(args, _AFTER + name)
        if name == "include_path":
            later = [*(args.include_path or []), *later]
        setattr(args, name, later)
    return args


@contextlib.contextmanager
def _global_environment(args: argparse.Namespace) -> Iterator[None]:
    """--output and --include-path for this command and the workers it starts, through the
    variables the library reads (EDGEEVAL_REPORTS, EDGEEVAL_INCLUDE_PATH); restored after."""
    changes = {}
    if args.output:
        output = Path(args.output).expanduser().resolve()
        if output.exists() and not output.is_dir():
            raise ConfigError(
                "--output: not a folder; give the folder run directories go in (it is made "
                "when missing)",
                path=output,
            )
        changes["EDGEEVAL_REPORTS"] = str(output)
    if args.include_path:
        folders = [str(Path(d).expanduser().resolve()) for d in args.include_path]
        earlier = [str(d) for d in settings.task_include_dirs()]
        changes["EDGEEVAL_INCLUDE_PATH"] = os.pathsep.join([*folders, *earlier])
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with _global_environment(args):
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
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`| head`): no traceback, no second error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit then writes nowhere
        return EXIT_BROKEN_PIPE
