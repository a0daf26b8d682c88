"""Cost of the run-time data checks.

Family `losses` (`overhead_checks_losses.py`): `SLaMLoss` and
`KnowledgeDistillationLoss` with their output checks against the same loss
with only the static (shape) checks, in a whole train step and in the loss
and its gradient alone. Family `ids` (`overhead_checks_ids.py`): a
token-id check (`check_ids_in_range`) in a small classifier's train step
and, on JAX, in one jitted call. Host CPU time, interleaved A/B rounds
(`step_timing.interleaved_cpu_times`); the load average at start and end
is recorded.

    KERAS_BACKEND=jax python benchmarks/overhead_checks.py [--quick]
        [--widths 64 256] [--repeats 9] [--families losses ids]

Writes `benchmarks/results/overhead_checks[.<backend>][.quick].json`.
"""

import os
import sys

import keras

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from benchmarks.overhead_checks_ids import ids_dispatch_cost  # noqa: E402
from benchmarks.overhead_checks_ids import run_ids  # noqa: E402
from benchmarks.overhead_checks_losses import loss_gradient_cost  # noqa: E402
from benchmarks.overhead_checks_losses import run_loss  # noqa: E402
from benchmarks.overhead_floor import LOSS_BATCH  # noqa: E402

BACKEND = keras.backend.backend()


def _arguments(parser):
    parser.add_argument("--widths", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--families",
        nargs="+",
        default=["losses", "ids"],
        choices=["losses", "ids"],
    )


def main():
    args = parse_args(__doc__.splitlines()[0], extra=_arguments)
    widths = args.widths or ((64,) if args.quick else (64, 256))
    repeats = args.repeats or (3 if args.quick else 31)
    batch = 64 if args.quick else LOSS_BATCH
    steps = 3 if args.quick else 20
    load_start = os.getloadavg()
    figures = []
    if "losses" in args.families:
        figures += [
            run_loss(name, d, batch, steps, repeats)
            for d in widths
            for name in ("slam", "kd")
        ]
        figures += [
            loss_gradient_cost(name, batch, 50 if args.quick else 300, repeats)
            for name in ("slam", "kd")
        ]
    if "ids" in args.families:
        for d in widths:
            figures += run_ids(d, batch, steps, repeats)
        if BACKEND == "jax":
            figures += ids_dispatch_cost(
                batch, 50 if args.quick else 300, repeats
            )
    load_end = os.getloadavg()
    write_results(
        "overhead_checks",
        figures,
        args,
        extra={
            "load_average_start": list(load_start),
            "load_average_end": list(load_end),
            "note": "checked / unchecked train-step time of the same loss; "
            "the machine was shared, so read the IQR and min-max next to "
            "each median.",
        },
    )
    print_table(figures, title=f"Output-check overhead ({BACKEND})")
    print(f"load average: start {load_start}, end {load_end}")


if __name__ == "__main__":
    main()
