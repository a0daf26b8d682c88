"""The documentation site covers the package: every public name has an entry
in the API reference and every example a tutorial page.

The pages are written by `docs/make_pages.py`; run it after adding a public
name or an example. The strict build itself (`mkdocs build --strict`) runs in
`.ci/run`.
"""

import glob
import os
import re
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
