"""Griffe extension: Keras-style docstrings read well on the API pages.

Keras writes two things Google-style parsing does not know:

- an `Example:` header (singular: Google style reads it as an admonition,
  not an examples section), often then a blank line and the doctest at the
  header's own indentation. Parsed as is, every `>>>` line becomes a
  Markdown blockquote, run together into one paragraph. Here the header
  becomes `Examples:` and the doctest is indented under it, so it renders
  as code.
- a `Call arguments:` section (what `layer(...)` takes), which would run
  onto one line. It becomes a table like the one of `Args:`.

Any other `>>>` line outside an indented section is put in a code block.
Only the rendered text changes; the docstrings stay as Keras writes them.
"""

import re

import griffe

_HEADER = re.compile(r"^([A-Z][A-Za-z ]*):\s*$")
_EXAMPLE = re.compile(r"^Examples?:\s*$")
_ITEM = re.compile(r"^(\*{0,2}[\w.]+(?:\s*,\s*\*{0,2}[\w.]+)*)\s*:\s*(.*)$")


def _indent(line):
    return len(line) - len(line.lstrip())


def _end_of_section(lines, start):
    """Index of the next top-level section header after `start`."""
    for i in range(start, len(lines)):
        if _HEADER.match(lines[i]) and not lines[i].startswith(" "):
            return i
    return len(lines)


def _indent_examples(lines):
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not _EXAMPLE.match(line):
            out.append(line)
            continue
        out.append("Examples:")
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j == len(lines) or lines[j].startswith(" "):
            continue  # already indented under its header
        end = _end_of_section(lines, j)
        out += ["    " + body if body.strip() else "" for body in lines[j:end]]
        i = end
    return out


def _call_arguments(lines):
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() != "Call arguments:" or _indent(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        j = i + 1
        items = []
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j])):
            text = lines[j].strip()
            item = _ITEM.match(text)
            if text and _indent(lines[j]) <= 4 and item:
                items.append([item.group(1), item.group(2)])
            elif text and items:
                items[-1][1] += " " + text
            j += 1
        if not items:  # not the name: description layout; leave it be
            out.append(lines[i])
            i += 1
            continue
        out += [
            '<p><span class="doc-section-title">Call arguments:</span></p>',
            "",
            "| Name | Description |",
            "| --- | --- |",
        ]
        for names, description in items:
            names = ", ".join(f"`{n.strip()}`" for n in names.split(","))
            out.append(f"| {names} | {description.replace('|', '&#124;')} |")
        out.append("")
        i = j
    return out


def _fence_doctests(lines):
    """Top-level `>>>` runs (up to a blank line) in a `pycon` code block."""
    out, i, fenced = [], 0, False
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith(">>>"):
            out.append("```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out += ["```", ""]
            continue
        out.append(line)
        i += 1
    return out


def rewrite(text):
    lines = text.split("\n")
    lines = _indent_examples(lines)
    lines = _call_arguments(lines)
    lines = _fence_doctests(lines)
    return "\n".join(lines)


class KerasDocstrings(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
