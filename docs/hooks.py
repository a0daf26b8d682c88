"""MkDocs hooks: benchmark tables from the result files, math as MathML.

A page writes `<!-- results: laurel -->` and the build replaces it with a
table of every figure in `benchmarks/results/laurel*.json` (quick runs
excluded): what was measured (the figure's key in words), mean with spread
rounded to the spread's precision, the 95% interval of the mean, the number
of runs, the target and whether it was met (or, for a paired difference,
its verdict), backend and device, notes, and the command that reproduces
it. Nothing in these tables is typed by hand.

Formulas (`$...$` in pages, `\\(...\\)` in docstrings, both marked up by
`pymdownx.arithmatex`) become MathML at build time, which browsers render
natively: the site loads no script and needs no network to show them.
"""

import glob
import html
import json
import math
import os
import re

from latex2mathml.converter import convert as latex_to_mathml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"<!-- results: ([\w.-]+) -->")


# Words for the parts of a figure's key, e.g. "test_accuracy/rw+lr/width_8"
# reads "test accuracy: rw+lr, width 8".
_WORDS = {
    "kd": "KD",
    "moe": "MoE",
    "lsh": "LSH",
    "adam": "Adam",
    "lazyadam": "LazyAdam",
    "slam": "SLaM",
    "ce": "CE",
}


def _words(part):
    if re.fullmatch(r"d\d+", part):  # model width
        return f"width {part[1:]}"
    return " ".join(_WORDS.get(word, word) for word in part.split("_"))


def _label(name):
    parts = [_words(part) for part in name.split("/")]
    head = parts[0][:1].upper() + parts[0][1:]
    return head + (": " + ", ".join(parts[1:]) if parts[1:] else "")


def _decimals(spread):
    """Decimals that show two significant digits of `spread`."""
    if not spread or not math.isfinite(spread):
        return None
    return max(0, 1 - math.floor(math.log10(abs(spread))))


def _number(value, decimals=None):
    if decimals is not None:
        return f"{value:,.{decimals}f}"
    if value == 0 or 0.01 <= abs(value) < 1e6:
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:.2e}"


def _with_unit(text, unit):
    if unit in ("", None):
        return text
    return f"{text}{unit}" if unit == "x" else f"{text} {unit}"


def _value(figure):
    unit = figure.get("unit", "")
    std = figure.get("std") if figure.get("n", 1) > 1 else None
    decimals = _decimals(std)
    text = _number(figure["mean"], decimals)
    if std is not None:
        text += f" ± {_number(std, decimals)}"
    return _with_unit(text, unit)


def _table(prefix):
    pattern = os.path.join(ROOT, "benchmarks", "results", f"{prefix}*.json")
    paths = sorted(p for p in glob.glob(pattern) if ".quick." not in p)
    if not paths:
        return f"_No results recorded yet for `{prefix}`._"
    header = [
        "measured",
        "mean ± std",
        "95% interval",
        "runs",
        "target",
        "met",
        "where",
        "notes",
    ]
    rows = []
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
            interval = ""
            if low_high:
                std = figure.get("std") if figure.get("n", 1) > 1 else None
                decimals = _decimals(std)
                interval = (
                    f"[{_number(low_high[0], decimals)}, "
                    f"{_number(low_high[1], decimals)}]"
                )
            note = str(figure.get("note") or "").replace("|", "/")
            rows.append(
                [
                    _label(figure["name"]),
                    _value(figure),
                    interval,
                    str(figure.get("n", 1)),
                    str(figure.get("target") or ""),
                    met,
                    where,
                    note,
                ]
            )
        if "command" in result:
            name = os.path.basename(path)
            commands.append(f"- `{name}`: `{result['command']}`")
    # Columns empty in every row (no targets, no intervals) are left out.
    keep = [i for i in range(len(header)) if any(row[i] for row in rows)]
    lines = [
        "| " + " | ".join(header[i] for i in keep) + " |",
        "| " + " | ".join("---" for _ in keep) + " |",
    ]
    lines += ["| " + " | ".join(row[i] for i in keep) + " |" for row in rows]
    return "\n".join(lines) + "\n\nReproduce with:\n\n" + "\n".join(commands)


def on_page_markdown(markdown, **kwargs):
    return MARKER.sub(lambda m: _table(m.group(1)), markdown)


# What pymdownx.arithmatex (generic mode) writes around a formula.
_MATH = re.compile(
    r'<(span|div) class="arithmatex">\s*(\\\(|\\\[)(.*?)(\\\)|\\\])'
    r"\s*</\1>",
    flags=re.DOTALL,
)


def _mathml(match):
    latex = html.unescape(match.group(3)).strip()
    display = "block" if match.group(2) == "\\[" else "inline"
    try:
        return latex_to_mathml(latex, display=display)
    except Exception as error:  # latex2mathml raises its own error types
        raise ValueError(f"cannot typeset ${latex}$: {error}") from error


def on_page_content(html_text, **kwargs):
    return _MATH.sub(_mathml, html_text)
