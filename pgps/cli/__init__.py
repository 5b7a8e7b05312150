"""The ``pgps`` command line: commands in four groups, one module each (:mod:`.curriculum`, :mod:`.data`,
:mod:`.nnunet`, :mod:`.report`; shared pieces in :mod:`.common`). ``pgps --help`` lists them by group.

Every error is one line on stderr, ``pgps COMMAND: error: ...``, with exit status 2 (argparse's own errors
included). Every command takes ``-v``/``-q`` (the level of the ``pgps`` loggers, INFO by default, on stderr as
``pgps COMMAND: ...``) and ``--progress``/``--no-progress`` (see :mod:`pgps.progress`); what a command prints on
stdout is its output.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pgps import __version__
from pgps.cli import curriculum, data, nnunet, report
from pgps.cli.common import CommandGroups, Parser, setup_logging
from pgps.extras import MissingExtra

GROUPS = (
    ("curriculum", curriculum),
    ("data", data),
    ("nnU-Net plans, training and inference", nnunet),
    ("results and reports", report),
)


def build_parser() -> Parser:
    parser = Parser(
        prog="pgps",
        description="Progressive Growing of Patch Size (PGPS) tools.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pgps {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=Parser, metavar="COMMAND", help="one of the commands below"
    )
    groups = CommandGroups(sub)
    for title, module in GROUPS:
        module.register(groups.group(title))
    parser.epilog = groups.listing()
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's parser, in the one error format
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    undo_logging = setup_logging(args.command, args.verbose, args.quiet)
    if args.quiet and args.progress is None:
        args.progress = False
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `pgps schedule ... | head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except MissingExtra as exc:  # an optional dependency: the message names the extra that installs it
        print(f"pgps {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"pgps {args.command}: error: {msg}", file=sys.stderr)
        return 2
    finally:
        undo_logging()
