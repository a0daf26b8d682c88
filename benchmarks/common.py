"""Shared helpers for the benchmark scripts.

Every benchmark compares a method with its baseline in one process, prints a
table and writes `benchmarks/results/NAME.json` (or `NAME.quick.json` with
`--quick`; `NAME.tensorflow.json` for another backend; `NAME.gpu.json` on
an accelerator) through `write_results`. The
README's results table is regenerated from those files by
`python benchmarks/make_readme_table.py`.

A figure is a dict made by `figure(...)`: a name, the raw values (one per
seed or repeat), their mean and standard deviation, an optional target such
as `("<=", 1.05)` and whether the mean meets it.

Main loops show their progress through `Progress` (`progress.py`), a
`keras.utils.Progbar` that follows Keras's `verbose` convention
(`--verbose`, see `parse_args`). Models are timed against each other by
`step_timing.py` (`compare_step_times` and its kin).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

# Some scripts import this file as `common` (make_readme_table.py,
# compress.py), with only benchmarks/ on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import progress  # noqa: E402

# Progress and step timing have their own modules; their names stay
# importable from here, where every benchmark found them first.
from benchmarks.progress import Progress  # noqa: E402, F401
from benchmarks.step_timing import compare_step_times  # noqa: E402, F401
from benchmarks.step_timing import compiled_train_step  # noqa: E402, F401
from benchmarks.step_timing import fit_time_per_step  # noqa: E402, F401

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")

_COMPARATORS = {
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}


def parse_args(description, extra=None, full_help=None):
    """Standard arguments: `--quick`, `--seeds`, `--output`, `--verbose`.

    With `full_help`, also `--full` (a GPU-sized run), exclusive with
    `--quick`.
    """
    parser = argparse.ArgumentParser(description=description)
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="CI-sized run (a minute or two); results go to NAME.quick.json",
    )
    if full_help is not None:
        size.add_argument("--full", action="store_true", help=full_help)
    parser.add_argument(
        "--seeds", type=int, default=None, help="number of seeds"
    )
    parser.add_argument(
        "--output", default=None, help="path of the JSON results file"
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="progress as in Keras: 0 silent, 1 a progress bar, 2 one line "
        "per finished item (default: 1 on a terminal, 2 otherwise)",
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    if args.verbose is None:
        args.verbose = 1 if sys.stdout.isatty() else 2
    progress.VERBOSE = args.verbose
    return args


def figure(name, values, target=None, unit="", note=""):
    """Summarises raw values into a figure.

    Args:
        name: what is measured, e.g. `"step_time_ratio/rw"`.
        values: a number or a list of numbers (one per seed / repeat).
        target: optional `(comparator, threshold)`, comparator one of
            `"<="`, `"<"`, `">="`, `">"`; the mean is checked against it.
        unit: unit for display, e.g. `"x"` or `"%"`.
        note: free text shown beside the figure.
    """
    if isinstance(values, (int, float)):
        values = [values]
    values = [float(v) for v in values]
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    result = {
        "name": name,
        "mean": mean,
        "std": std,
        "n": len(values),
        "values": values,
        "unit": unit,
    }
    if target is not None:
        comparator, threshold = target
        if comparator not in _COMPARATORS:
            raise ValueError(f"Unknown comparator {comparator!r}")
        result["target"] = f"{comparator} {threshold:g}"
        result["met"] = bool(_COMPARATORS[comparator](mean, threshold))
    if len(values) > 1:
        result["ci95"] = list(confidence_interval(values))
        if target is not None:
            result["verdict"] = target_verdict(result["ci95"], *target)
    if note:
        result["note"] = note
    return result


def target_verdict(ci95, comparator, threshold):
    """Reads a 95% interval against a target `(comparator, threshold)`.

    "shown" when the whole interval meets the target, "contradicted" when
    none of it does, "not shown" when it straddles the threshold.
    """
    low, high = ci95
    meets = _COMPARATORS[comparator]
    if meets(low, threshold) and meets(high, threshold):
        return "shown"
    if not meets(low, threshold) and not meets(high, threshold):
        return "contradicted"
    return "not shown"


def confidence_interval(values, level=0.95):
    """Student-t interval for the mean of `values` (needs >= 2 values)."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(values)
    half /= n**0.5
    return float(mean - half), float(mean + half)


def paired_difference(name, method, baseline, higher_is_better=True, unit=""):
    """The paired difference method - baseline over seeds, with a verdict.

    `method[i]` and `baseline[i]` must come from the same seed. The verdict
    reads the 95% interval of the mean difference: "shown" when it excludes
    zero on the good side, "contradicted" when it excludes zero on the bad
    side, "not shown" when it contains zero.
    """
    if len(method) != len(baseline):
        raise ValueError(
            f"paired values need one per seed each; got {len(method)} and "
            f"{len(baseline)}"
        )
    diffs = [float(a) - float(b) for a, b in zip(method, baseline)]
    result = figure(name, diffs, unit=unit, note="paired by seed")
    if len(diffs) > 1:
        low, high = result["ci95"]
        good_low, good_high = (low, high) if higher_is_better else (-high, -low)
        if good_low > 0:
            result["verdict"] = "shown"
        elif good_high < 0:
            result["verdict"] = "contradicted"
        else:
            result["verdict"] = "not shown"
    return result


def machine_description():
    """A short description of where the benchmark ran."""
    import keras

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "accelerator": accelerator_name(),
    }
    return info


def accelerator_name():
    """Name of the accelerator the backend computes on, or `"cpu"`."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform != "cpu":
                return getattr(device, "device_kind", device.platform)
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                return gpus[0].name
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
    except Exception:  # A missing device query only loses the label.
        pass
    return "cpu"


def write_run(path, label, run, what, command):
    """Adds (or replaces) the run `label` in the results file at `path`
    (`{"what", "command", "runs": {label: run}}`), keeping its other runs;
    `what` and `command` describe the file and are rewritten."""
    results = {}
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    results["what"] = what
    results["command"] = command
    results.setdefault("runs", {})[label] = run
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    return results


def write_results(name, figures, args, extra=None):
    """Writes the results JSON and prints where it went."""
    if args.output:
        path = args.output
    else:
        import keras

        # NAME.json for JAX on CPU; other backends, accelerators and quick
        # runs get their own file so no run overwrites another.
        backend = keras.backend.backend()
        suffix = "" if backend == "jax" else f".{backend}"
        if accelerator_name() != "cpu":
            suffix += ".gpu"
        if args.quick:
            suffix += ".quick"
        path = os.path.join(RESULTS_DIR, f"{name}{suffix}.json")
    payload = {
        "benchmark": name,
        "command": "python " + " ".join(sys.argv),
        "mode": "quick" if args.quick else "full",
        "machine": machine_description(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "figures": figures,
    }
    if extra:
        payload.update(extra)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {path}")
    return path


def print_table(figures, title=None):
    """Prints figures as an aligned text table."""
    if title:
        print(f"\n{title}")
    rows = [("figure", "mean", "std", "n", "target", "met")]
    for f in figures:
        rows.append(
            (
                f["name"],
                f"{f['mean']:.4g}{f['unit']}",
                f"{f['std']:.2g}",
                str(f["n"]),
                f.get("target", ""),
                {True: "yes", False: "NO"}.get(f.get("met"), ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def median(values):
    return statistics.median(values)


def spread(values):
    """Median, interquartile range and min-max of per-round values."""
    q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return {
        "median": statistics.median(values),
        "iqr": [q[0], q[2]],
        "min": min(values),
        "max": max(values),
    }
