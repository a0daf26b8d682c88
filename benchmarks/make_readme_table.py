"""Regenerates the README's results table from benchmarks/results/*.json.

Usage: python benchmarks/make_readme_table.py [--all]

The tables sit between the markers `<!-- results:start -->` and
`<!-- results:end -->` in README.md; nothing in them is typed by hand. The
first lists every claim measured as a paired difference (method minus
baseline, seed by seed) with its 95% interval and verdict: "shown" when the
interval excludes zero on the method's side, "contradicted" when it excludes
zero on the other side, "not shown" when it contains zero. The second lists
the figures that carry a target (`--all`: every figure). The JSON files hold
everything, raw values per seed included.
"""

import argparse
import glob
import json
import os

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


def render_claims(paths):
    """One row per paired-difference figure: interval and verdict."""
    lines = [
        "| benchmark | claim (method - baseline) | mean | 95% interval | "
        "seeds | verdict | where | file |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        machine = result.get("machine", {})
        where = f"{machine.get('backend', '?')}, "
        where += machine.get("accelerator", "?")
        for figure in result["figures"]:
            if "verdict" not in figure:
                continue
            low, high = figure["ci95"]
            unit = figure.get("unit", "")
            verdict = figure["verdict"]
            if verdict != "not shown":
                verdict = f"**{verdict}**"
            lines.append(
                f"| {result['benchmark']} | {figure['name']} | "
                f"{figure['mean']:+.4g}{unit} | [{low:+.3g}, {high:+.3g}] | "
                f"{figure['n']} | {verdict} | {where} | "
                f"{os.path.basename(path)} |"
            )
    if len(lines) == 2:
        return "_No paired comparisons recorded yet._"
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
        if not p.endswith(".quick.json")
    )
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
        f"{START}\nClaims, paired by seed:\n\n{claims}\n\n"
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
