"""The ``pgps`` command line. ``pgps schedule`` prints a curriculum's stage table.

Errors go to stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from pgps import pacing
from pgps.plans import planned_configuration
from pgps.schedule import MODES, make_schedule


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse already exits 2; keep one format
        self.print_usage(sys.stderr)
        self.exit(2, f"pgps: error: {message}\n")


def _schedule_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schedule",
        help="print the stage table of a curriculum",
        description="Print the stages (patch size, batch size, tensor voxels, epochs) and the relative "
        "FLOPs of a curriculum, from an nnU-Net plans file or from explicit sizes.",
    )
    src = p.add_argument_group("planned sizes (either a plans file or explicit sizes)")
    src.add_argument("--plans", metavar="FILE", help="nnU-Net v2 plans JSON (e.g. nnUNetPlans.json)")
    src.add_argument("--configuration", default="3d_fullres", help="plans configuration (default: %(default)s)")
    src.add_argument("--patch-size", nargs="+", type=int, metavar="N", help="planned patch size P_max (3 axes)")
    src.add_argument("--steps", nargs="+", type=int, metavar="N", help="per-axis step = 2**(stride-2 downsamplings)")
    src.add_argument("--batch-size", type=int, metavar="B", help="planned batch size b_base")
    p.add_argument("--mode", default="performance", choices=list(MODES), help="curriculum mode (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=pacing.EPOCHS, help="training epochs (default: %(default)s)")
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--iterations-per-epoch", type=int, help=f"iterations per epoch (default: {pacing.ITERATIONS_PER_EPOCH})"
    )
    length.add_argument(
        "--training-length", type=float, help="fraction of the default iterations per epoch, e.g. 0.1 for 10%%"
    )
    p.add_argument("--batch-size-cap", type=int, help="upper limit on every stage's batch size")
    p.add_argument(
        "--no-single-voxel-bottleneck",
        action="store_true",
        help="start one stage later, for architectures that cannot train a 1x1x1 bottleneck",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of RPSS's per-iteration stage draws")
    p.add_argument("--json", action="store_true", help="print JSON (mode, patch_size_max, ..., relative_voxels)")
    p.set_defaults(func=_run_schedule)


def _run_schedule(args: argparse.Namespace) -> int:
    explicit = [args.patch_size, args.steps, args.batch_size]
    if args.plans:
        if any(v is not None for v in explicit):
            raise ValueError("give either --plans or --patch-size/--steps/--batch-size, not both")
        planned = planned_configuration(args.plans, args.configuration)
        patch_size, steps, batch_size = planned.patch_size, planned.steps, planned.batch_size
    else:
        missing = [n for n, v in zip(("--patch-size", "--steps", "--batch-size"), explicit, strict=True) if v is None]
        if missing:
            raise ValueError(f"missing {', '.join(missing)} (or give --plans FILE)")
        patch_size, steps, batch_size = explicit
    if args.training_length is not None:
        ipe = pacing.iterations_per_epoch(args.training_length)
    else:
        ipe = args.iterations_per_epoch or pacing.ITERATIONS_PER_EPOCH
    schedule = make_schedule(
        args.mode,
        patch_size,
        steps,
        batch_size,
        epochs=args.epochs,
        iterations_per_epoch=ipe,
        single_voxel_bottleneck=not args.no_single_voxel_bottleneck,
        batch_size_cap=args.batch_size_cap,
        seed=args.seed,
    )
    if args.json:
        json.dump(schedule.summary(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(schedule.table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pgps", description="Progressive Growing of Patch Size (PGPS) tools.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _schedule_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `pgps schedule ... | head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except (ValueError, OSError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"pgps {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
