"""``pgps schedule``: a curriculum's stages, batch sizes and epochs, from sizes or a plans file."""

from __future__ import annotations

import argparse
import json
import sys

from pgps import pacing
from pgps.cli.common import (
    NON_NEGATIVE,
    POSITIVE,
    read_plans,
)
from pgps.plans import planned_configuration
from pgps.schedule import MODES, RPSS_POOLS, make_schedule
from pgps.stages import GROWTH


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
    src.add_argument("--batch-size", type=POSITIVE, metavar="B", help="planned batch size b_base")
    p.add_argument("--mode", default="performance", choices=list(MODES), help="curriculum mode (default: %(default)s)")
    p.add_argument("--epochs", type=POSITIVE, default=pacing.EPOCHS, help="training epochs (default: %(default)s)")
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--iterations-per-epoch", type=POSITIVE, help=f"iterations per epoch (default: {pacing.ITERATIONS_PER_EPOCH})"
    )
    length.add_argument(
        "--training-length", type=float, help="fraction of the default iterations per epoch, e.g. 0.1 for 10%%"
    )
    p.add_argument("--batch-size-cap", type=POSITIVE, help="upper limit on every stage's batch size")
    p.add_argument(
        "--no-single-voxel-bottleneck",
        action="store_true",
        help="start one stage later, for architectures that cannot train a 1x1x1 bottleneck",
    )
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of RPSS's per-iteration stage draws")
    p.add_argument(
        "--rpss-pool",
        default="miccai",
        choices=list(RPSS_POOLS),
        help="stages RPSS draws from: miccai (the MICCAI 2024 paper's, default) or journal",
    )
    p.add_argument(
        "--growth",
        default="code",
        choices=list(GROWTH),
        help="journal modes: the axis grown next, code (next value smallest: the authors' code, default) or text "
        "(currently smallest: the article's wording)",
    )
    p.add_argument("--json", action="store_true", help="print JSON (mode, patch_size_max, ..., relative_voxels)")
    p.set_defaults(func=_run_schedule)


def _run_schedule(args: argparse.Namespace) -> int:
    explicit = [args.patch_size, args.steps, args.batch_size]
    if args.plans:
        if any(v is not None for v in explicit):
            raise ValueError("give either --plans or --patch-size/--steps/--batch-size, not both")
        try:
            planned = planned_configuration(read_plans(args.plans), args.configuration)
        except ValueError as exc:
            raise ValueError(exc if str(exc).startswith(args.plans) else f"{args.plans}: {exc}") from exc
        patch_size, steps, batch_size = planned.patch_size, planned.steps, planned.batch_size
    else:
        missing = [n for n, v in zip(("--patch-size", "--steps", "--batch-size"), explicit, strict=True) if v is None]
        if missing:
            raise ValueError(f"missing {', '.join(missing)} (or give --plans FILE)")
        patch_size, steps, batch_size = explicit
    if args.training_length is not None:
        ipe = pacing.iterations_per_epoch(args.training_length)
    elif args.iterations_per_epoch is not None:
        ipe = args.iterations_per_epoch
    else:
        ipe = pacing.ITERATIONS_PER_EPOCH
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
        rpss_pool=args.rpss_pool,
        growth=args.growth,
    )
    if args.json:
        json.dump(schedule.summary(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(schedule.table())
    return 0


def register(sub) -> None:
    """Add this group's commands to ``sub`` (:class:`~pgps.cli.common.CommandGroups`)."""
    _schedule_parser(sub)
