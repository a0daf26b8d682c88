"""MkDocs hook: benchmark figures in the docs come from the result files.

A page writes `<!-- results: laurel -->` and the build replaces it with a
table of every figure in `benchmarks/results/laurel*.json` (quick runs
excluded): name, mean with spread and number of runs, the 95% interval of
the mean, the target and whether it was met (or, for a paired difference,
its verdict), backend and device, and the command that reproduces it. Nothing in
these tables is typed by hand.
"""

import glob
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"<!-- results: ([\w.-]+) -->")


def _value(figure):
    text = f"{figure['mean']:.4g}{figure.get('unit', '')}"
    if figure.get("n", 1) > 1 and "std" in figure:
        text += f" ± {figure['std']:.2g}"
    return text


def _table(prefix):
    pattern = os.path.join(ROOT, "benchmarks", "results", f"{prefix}*.json")
    paths = sorted(p for p in glob.glob(pattern) if ".quick." not in p)
    if not paths:
        return f"_No results recorded yet for `{prefix}`._"
    rows = [
        "| figure | mean ± std | 95% interval | runs | target | met | where |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    commands = []
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        machine = result.get("machine", {})
        backend = machine.get("backend", "?")
        where = f"{backend}, {machine.get('accelerator', '?')}"
        for figure in result.get("figures", []):
            met = {True: "yes", False: "**no**"}.get(figure.get("met"), "")
            met = figure.get("verdict", met)
            low_high = figure.get("ci95")
            interval = (
                f"[{low_high[0]:.3g}, {low_high[1]:.3g}]" if low_high else ""
            )
            rows.append(
                f"| {figure['name']} | {_value(figure)} | {interval} | "
                f"{figure.get('n', 1)} | {figure.get('target', '')} | {met} "
                f"| {where} |"
            )
        if "command" in result:
            name = os.path.basename(path)
            commands.append(f"- `{name}`: `{result['command']}`")
    return "\n".join(rows) + "\n\nReproduce with:\n\n" + "\n".join(commands)


def on_page_markdown(markdown, **kwargs):
    return MARKER.sub(lambda m: _table(m.group(1)), markdown)
