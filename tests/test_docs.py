"""The documentation site covers the package: every public name has an entry
in the API reference and every example a tutorial page.

The pages are written by `docs/make_pages.py`; run it after adding a public
name or an example. The strict build itself (`mkdocs build --strict`) runs in
`.ci/run`.
"""

import glob
import html
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs"))

import make_pages  # noqa: E402


def _documented(page):
    with open(os.path.join(ROOT, "docs", "api", f"{page}.md")) as f:
        return set(re.findall(r"^::: (\S+)", f.read(), flags=re.MULTILINE))


@pytest.mark.parametrize("page", sorted(make_pages.API_PAGES))
def test_every_public_name_is_in_the_api_reference(page):
    _, subpackages = make_pages.API_PAGES[page]
    expected = {
        make_pages.home_of(sub, name)
        for sub in subpackages
        for name in make_pages.public_names(sub)
    }
    documented = _documented(page)
    missing = sorted(expected - documented)
    stale = sorted(documented - expected)
    assert not missing and not stale, (
        f"docs/api/{page}.md is out of date (run python docs/make_pages.py): "
        f"missing {missing}, stale {stale}"
    )


def test_every_example_has_a_tutorial_page_and_a_row():
    with open(os.path.join(ROOT, "docs", "tutorials", "index.md")) as f:
        index = f.read()
    for path in glob.glob(os.path.join(ROOT, "examples", "*.py")):
        name = os.path.splitext(os.path.basename(path))[0]
        page = os.path.join(ROOT, "docs", "tutorials", f"{name}.md")
        assert os.path.exists(page), f"no tutorial page for {name}"
        assert f"]({name}.md)" in index, f"no row for {name} in the index"


def test_tutorial_pages_are_up_to_date():
    pages = dict(make_pages.tutorial_pages())
    pages["index"] = make_pages.tutorials_index()
    for name, text in pages.items():
        with open(os.path.join(ROOT, "docs", "tutorials", f"{name}.md")) as f:
            assert f.read() == text, (
                f"docs/tutorials/{name}.md is out of date "
                "(run python docs/make_pages.py)"
            )


@pytest.mark.parametrize("name", make_pages.example_names())
def test_one_duration_per_tutorial(name):
    """The README's tutorials table and the example's docstring quote the
    wall time of the full run the tutorial page shows, and no other."""
    run = make_pages.runs().get(name)
    if run is None:
        pytest.skip(f"no full run of {name} recorded")
    quoted = make_pages.duration(run["seconds"])
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        row = re.search(rf"^\| `{name}\.py` \|.*$", f.read(), re.MULTILINE)
    assert row, f"no row for {name}.py in the README's tutorials table"
    assert f"| {quoted} |" in row.group(0), (row.group(0), quoted)
    with open(os.path.join(ROOT, "examples", f"{name}.py")) as f:
        docstring = f.read().split('"""')[1]
    times = re.findall(r"\d+(?:\.\d+)? (?:s|min)\b|minutes?\b", docstring)
    assert set(times) <= {quoted}, (name, times, quoted)


# The built site, checked in a real browser. CI's docs step (`.ci/run`)
# builds the site and points KERAS_EFFICIENT_DOCS_SITE at it; elsewhere:
#   mkdocs build --site-dir /tmp/site
#   KERAS_EFFICIENT_DOCS_SITE=/tmp/site python -m pytest -n 0 \
#       tests/test_docs.py -k browser
SITE = os.environ.get("KERAS_EFFICIENT_DOCS_SITE", "")
CHROMIUM = next(
    (
        shutil.which(name)
        for name in ("chromium", "chromium-browser", "google-chrome")
        if shutil.which(name)
    ),
    None,
)
# Skipped where no site is given; with a site, a missing Chromium fails.
browser = pytest.mark.skipif(
    not SITE, reason="set KERAS_EFFICIENT_DOCS_SITE to a built site"
)
# Pages whose sources hold formulas: each must show typeset (MathML) math.
MATH_PAGES = [
    "methods/laurel",
    "methods/altup",
    "methods/distillation",
    "methods/lookup-and-moe",
    "methods/active-distillation",
]


def _site_pages():
    if not SITE:
        return []
    pages = glob.glob(os.path.join(SITE, "**", "index.html"), recursive=True)
    return sorted(
        os.path.relpath(os.path.dirname(p), SITE).replace(os.sep, "/")
        for p in pages
    )


def _rendered_dom(page, tmp_path):
    """The DOM of `page` after Chromium has loaded and laid it out."""
    assert CHROMIUM, "no chromium on PATH (apt-get install chromium)"
    path = os.path.join(SITE, page, "index.html")
    profile = tmp_path / "chromium-profile"
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--dump-dom",
            pathlib.Path(os.path.abspath(path)).as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "</html>" in done.stdout, f"no DOM for {page}: {done.stderr[-500:]}"
    return done.stdout


def _text_outside_code(dom):
    """The page's visible text, less code blocks, scripts and styles."""
    dom = re.sub(
        r"<(pre|code|script|style|math)\b.*?</\1>", " ", dom, flags=re.DOTALL
    )
    return html.unescape(re.sub(r"<[^>]+>", " ", dom))


@browser
@pytest.mark.parametrize("page", _site_pages() or ["(no site)"])
def test_page_renders_in_a_browser(page, tmp_path):
    dom = _rendered_dom(page, tmp_path)
    article = re.search(r"<article\b.*?</article>", dom, flags=re.DOTALL)
    assert article, f"{page}: no article in the rendered page"
    text = _text_outside_code(article.group(0))
    # Formulas typeset, none left as LaTeX source.
    for raw in ("\\(", "\\[", "\\frac", "\\alpha", "\\mathrm"):
        assert raw not in text, f"{page}: raw LaTeX {raw!r} in the text"
    if page in MATH_PAGES:
        assert dom.count("<math") >= 3, f"{page}: no typeset math"
    # Every docstring example in a code block.
    assert ">>>" not in text, f"{page}: a `>>>` line outside a code block"
    assert "<blockquote" not in article.group(0) or not page.startswith(
        "api/"
    ), f"{page}: a doctest rendered as a blockquote"


@browser
def test_api_pages_show_call_arguments_and_examples_as_tables_and_code(
    tmp_path,
):
    dom = _rendered_dom("api/layers", tmp_path)
    assert 'class="doc-section-title">Call arguments:' in dom
    # Every Examples section opens with a highlighted code block.
    titles = dom.count('doc-section-title">Examples:')
    coded = len(
        re.findall(
            r'doc-section-title">Examples:</span></p>\s*<div class="highlight"',
            dom,
        )
    )
    assert titles >= 10 and coded == titles, (titles, coded)


@browser
@pytest.mark.parametrize("page", sorted(make_pages.API_PAGES))
def test_returns_tables_have_no_empty_cells(page, tmp_path):
    dom = _rendered_dom(f"api/{page}", tmp_path)
    tables = re.findall(
        r'doc-section-title">Returns:</span></p>\s*<table>(.*?)</table>',
        dom,
        flags=re.DOTALL,
    )
    for table in tables:
        for cell in re.findall(r"<td>(.*?)</td>", table, flags=re.DOTALL):
            assert re.sub(r"<[^>]+>|\s", "", cell), f"empty cell: {table}"


@browser
def test_tutorial_pages_show_output_figure_and_time(tmp_path):
    dom = _rendered_dom("tutorials/laurel_resnet", tmp_path)
    article = re.search(r"<article\b.*?</article>", dom, flags=re.DOTALL)
    assert re.search(r"<h1[^>]*>[^<]*LAuReL", article.group(0)), "title"
    assert "What it prints" in dom and "Full run:" in dom
    assert re.search(r'<img[^>]+src="[^"]*laurel_resnet\.png"', dom)


@browser
def test_benchmark_tables_have_labels_and_rounded_figures(tmp_path):
    text = _text_outside_code(_rendered_dom("methods/laurel", tmp_path))
    assert "Test accuracy: plain, width 8" in text
    assert "test_accuracy/" not in text
    assert not re.search(r"\d\.\d{5,}", text), "unrounded figure"
    assert not re.search(r"\de-\d", text), "scientific notation"
