"""Wall time of every tutorial in `examples/`, run as a newcomer runs it.

Each example runs in a fresh interpreter (`python examples/NAME.py`, full
mode unless `--quick`), one after the other, on the current backend. The
figure is the wall time including Python, Keras and backend start-up; the
load average before and after each run is recorded, since a busy machine
slows every example down. The README's tutorials table quotes these times.

    KERAS_BACKEND=jax python benchmarks/examples_runtime.py [--quick]
        [--only quickstart,pruning]
"""

import glob
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _add_arguments(parser):
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated example names (default: every example)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds one example may run before it counts as failed",
    )


def _examples(only):
    paths = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))
    names = [os.path.basename(p)[:-3] for p in paths]
    if only is None:
        return names
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise ValueError(
            f"`--only` names unknown examples {unknown}; the examples are "
            f"{names}."
        )
    return wanted


def run_example(name, quick, timeout):
    """Runs one example in a fresh interpreter; returns its record."""
    command = [sys.executable, os.path.join("examples", f"{name}.py")]
    if quick:
        command.append("--quick")
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        result = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        returncode, tail = result.returncode, result.stdout[-2000:]
        if returncode:
            tail += result.stderr[-2000:]
    except subprocess.TimeoutExpired:
        returncode, tail = None, f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    return {
        "example": name,
        "seconds": seconds,
        "returncode": returncode,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "output_tail": tail,
    }


def main():
    args = parse_args(__doc__.splitlines()[0], _add_arguments)
    names = _examples(args.only)
    runs, figures = [], []
    progress = Progress(names, unit="example")
    for name in progress:
        record = run_example(name, args.quick, args.timeout)
        runs.append(record)
        figures.append(
            figure(
                f"seconds/{name}",
                [record["seconds"]],
                unit="s",
                note="ok" if record["returncode"] == 0 else "FAILED",
            )
        )
        progress.log(f"{name}: {record['seconds']:.0f} s")
    print_table(figures, "wall time per example")
    write_results("examples_runtime", figures, args, {"runs": runs})
    failed = [r["example"] for r in runs if r["returncode"] != 0]
    if failed:
        print(f"failed: {failed}")
        sys.exit(1)


if __name__ == "__main__":
    main()
