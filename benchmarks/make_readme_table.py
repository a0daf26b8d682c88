"""Regenerates the README's results table from benchmarks/results/*.json.

Usage: python benchmarks/make_readme_table.py [--all]

The tables sit between the markers `<!-- results:start -->` and
`<!-- results:end -->` in README.md; nothing in them is typed by hand. The
first lists every claim measured over several seeds with its 95% interval
and verdict: a paired difference (method minus baseline, seed by seed) is
"shown" when the interval excludes zero on the method's side,
"contradicted" when it excludes zero on the other side, "not shown" when it
contains zero; a figure with a target is "shown" when the whole interval
meets the target, "contradicted" when none of it does. The second lists
the figures that carry a target (`--all`: every figure). The JSON files hold
everything, raw values per seed included.
"""

import argparse
import glob
import json
import os

from common import confidence_interval
from common import target_verdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = "<!-- results:start -->"
END = "<!-- results:end -->"


def _format_value(figure):
    unit = figure.get("unit", "")
    text = f"{figure['mean']:.4g}{unit}"
    if figure.get("n", 1) > 1:
        text += f" ± {figure['std']:.2g}"
    return text


def render_table(paths, all_figures=False):
    lines = [
        "| benchmark | figure | mean ± std (n) | target | met | where | file |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        machine = result.get("machine", {})
        where = (
            f"{machine.get('backend', '?')}, {machine.get('accelerator', '?')}"
        )
        if result.get("mode") == "quick":
            where += ", quick"
        for figure in result["figures"]:
            if not all_figures and "target" not in figure:
                continue
            met = {True: "yes", False: "**no**"}.get(figure.get("met"), "")
            lines.append(
                f"| {result['benchmark']} | {figure['name']} | "
                f"{_format_value(figure)} ({figure.get('n', 1)}) | "
                f"{figure.get('target', '')} | {met} | {where} | "
                f"{os.path.basename(path)} |"
            )
    return "\n".join(lines)


def _claim(figure):
    """`(what, interval, verdict)` of a figure that makes a claim, or None.

    A paired difference claims "better than the baseline" (its verdict is
    recorded); a figure with a target and several seeds claims the target,
    read from its 95% interval (computed here for files written before
    the verdict was recorded).
    """
    if "verdict" in figure and "target" not in figure:
        return "vs 0", figure["ci95"], figure["verdict"]
    if "target" not in figure or figure.get("n", 1) < 2:
        return None
    ci95 = figure.get("ci95") or list(confidence_interval(figure["values"]))
    comparator, threshold = figure["target"].split()
    verdict = target_verdict(ci95, comparator, float(threshold))
    return figure["target"], ci95, verdict


def render_claims(paths):
    """One row per claim: the mean, its 95% interval and the verdict."""
    lines = [
        "| benchmark | claim | target | mean | 95% interval | runs | "
        "verdict | where | file |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        machine = result.get("machine", {})
        where = f"{machine.get('backend', '?')}, "
        where += machine.get("accelerator", "?")
        for figure in result["figures"]:
            claim = _claim(figure)
            if claim is None:
                continue
            target, (low, high), verdict = claim
            unit = figure.get("unit", "")
            if verdict != "not shown":
                verdict = f"**{verdict}**"
            lines.append(
                f"| {result['benchmark']} | {figure['name']} | {target} | "
                f"{figure['mean']:.4g}{unit} | [{low:.3g}, {high:.3g}] | "
                f"{figure['n']} | {verdict} | {where} | "
                f"{os.path.basename(path)} |"
            )
    if len(lines) == 2:
        return "_No claims with several seeds recorded yet._"
    return "\n".join(lines)


def _overhead_cell(figure):
    """`median [IQR] of <baseline step>, CPU <median>; <= target ✓/✗` of
    one figure (CPU where the figure records process CPU time)."""
    low, high = figure["iqr"]
    cell = f"{figure['median']:.3f} [{low:.2f}, {high:.2f}]"
    base = figure.get("baseline_step_seconds")
    if base is not None:
        cell += f" of {1e3 * base:.3g} ms"
    if "cpu" in figure:
        cell += f", CPU {figure['cpu']['median']:.3f}"
    if "target" in figure:
        mark = "✓" if figure["met"] else "✗"
        cell += f"; {figure['target'].replace('<=', '≤')} {mark}"
    return cell


def render_overhead(paths):
    """Step-time ratios of `overhead.<backend>.json`: one row per method and
    width, one column per backend (median [IQR] of the plain step's time,
    the target and whether it is met), next to the FLOP share (what the
    method's FLOPs alone would add) and the floor."""
    backends = ("jax", "tensorflow", "torch")
    cells, floors = {}, {}
    for path in paths:
        name = os.path.basename(path)
        parts = name.split(".")
        backend = parts[1] if len(parts) > 2 else None
        if (
            parts[0] != "overhead"
            or backend not in backends
            or "quick" in parts
        ):
            continue
        with open(path) as f:
            for figure in json.load(f)["figures"]:
                key = figure["name"]
                share = 1.0 + figure["floor_model"]["flop_fraction"]
                floors[key] = (share, figure["floor"])
                cells[key, backend] = _overhead_cell(figure)
    if not floors:
        return "_No overhead figures recorded yet._"
    lines = [
        "| method / width | FLOP share | floor | JAX | TensorFlow | torch |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def order(key):  # by family, then width, then method
        family, method, width = key.split("/")
        return family, int(width.lstrip("d")), method

    for key, (share, floor) in sorted(
        floors.items(), key=lambda kv: order(kv[0])
    ):
        row = [cells.get((key, b), "") for b in backends]
        lines.append(
            f"| {key} | {share:.3f} | {floor:.3f} | " + " | ".join(row) + " |"
        )
    return "\n".join(lines)


def _load(path):
    with open(path) as f:
        return json.load(f)


MUTATION = os.path.join(ROOT, "benchmarks", "results", "mutation.json")


def render_mutation(path):
    """One row per mutated module of `mutation.json`."""
    if not os.path.exists(path):
        return "_No mutation results recorded yet._"
    with open(path) as f:
        result = json.load(f)
    lines = [
        "| module | mutants | killed | timeout | survived | equivalent | "
        "kill rate |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for module, row in sorted(result.get("modules", {}).items()):
        rate = row.get("kill_rate")
        rate = "" if rate is None else f"{100 * rate:.1f}%"
        if rate and row["kill_rate"] < 0.9:
            rate += " ✗"
        interval = row.get("kill_rate_95")
        if row.get("sample"):
            size = row["mutants"] - row.get("not_checked", 0)
            rate += f" (random sample of {size}"
            if interval:
                low, high = (round(100 * bound) for bound in interval)
                rate += f"; 95% {low}-{high}%"
            rate += ")"
        elif row.get("not_checked"):
            rate += f" (partial run: {row['not_checked']} not checked)"
        first = row.get("first_pass")
        if first and first["survived"] + first["no_tests"]:
            caught = first["killed"] + first["timeout"]
            scored = caught + first["survived"] + first["no_tests"]
            rate += (
                f"; before the tests written for its survivors "
                f"{100 * caught / scored:.0f}%, equivalent ones included"
            )
        lines.append(
            f"| {module} | {row['mutants']} | {row['killed']} | "
            f"{row['timeout']} | {row['survived'] + row.get('no_tests', 0)} "
            f"| {len(row.get('equivalent', {}))} | {rate} |"
        )
    not_run = result.get("not_run", [])
    if not_run:
        lines.append(f"\nNot run yet: {', '.join(not_run)}.")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="list every figure")
    args = parser.parse_args()
    paths = sorted(
        p
        for p in glob.glob(
            os.path.join(ROOT, "benchmarks", "results", "*.json")
        )
        if not p.endswith(".quick.json") and p != MUTATION
    )
    # Results of another shape (no "figures") are left out, not fatal.
    paths = [p for p in paths if "figures" in _load(p)]
    table = render_table(paths, args.all) if paths else "_No results yet._"
    claims = render_claims(paths)
    commands = []
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        command = result["command"]
        backend = result.get("machine", {}).get("backend")
        if backend and "KERAS_BACKEND" not in command:
            command = f"KERAS_BACKEND={backend} {command}"
        commands.append(
            f"- `{result['benchmark']}` ({os.path.basename(path)}): `{command}`"
        )
    block = (
        f"{START}\nClaims measured over several seeds or runs (95% "
        "intervals; for losses, MSE and bits per byte lower is better, so "
        f"there a negative difference is the method's side):\n\n{claims}\n\n"
        "Mutation testing (`benchmarks/mutation.py`; kill rate over the "
        "mutants not reviewed equivalent, timeouts counted as caught; "
        "target 90%). A sampled figure includes the tests written for that "
        "sample's own survivors; for the mutants outside the sample, the "
        "figure before those tests is the fairer estimate:"
        f"\n\n{render_mutation(MUTATION)}\n\n"
        "Step-time overhead, method step over baseline step (median of "
        "interleaved rounds [IQR] of the plain step's time; the target, ✗ "
        "where missed: on TensorFlow and torch within 0.05 of JAX's ratio "
        "for the models, the losses' own target on every backend; CPU: "
        "the median ratio of process CPU time, where recorded, the steadier "
        "figure where wall times are bimodal, as TensorFlow's are here: "
        "docs/benchmarks.md). FLOP "
        "share: 1 + the method's extra FLOPs over the plain step's; floor: "
        "1 + the larger of its extra FLOP and byte fractions "
        "(`benchmarks/overhead.py`):\n\n"
        f"{render_overhead(paths)}\n\n"
        f"Figures with a target:\n\n{table}\n\nReproduce with:\n\n"
        + "\n".join(commands)
    )
    block += f"\n{END}"
    readme_path = os.path.join(ROOT, "README.md")
    with open(readme_path) as f:
        readme = f.read()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the {START} / {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(readme_path, "w") as f:
        f.write(head + block + tail)
    print(f"updated {readme_path} from {len(paths)} result files")


if __name__ == "__main__":
    main()
