"""Writes the generated pages of the docs: the API reference (one entry per
public name of each subpackage) and one page per tutorial (its source).

Run after adding a public name or an example:

    python docs/make_pages.py

`tests/test_docs.py` fails when a public name is missing from the API pages
or an example has no page, so the two cannot drift apart silently.
"""

import glob
import importlib
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

# page -> (title, subpackages documented on it)
API_PAGES = {
    "layers": ("keras_efficient.layers", ["layers"]),
    "distillation": ("keras_efficient.distillation", ["distillation"]),
    "pruning": ("keras_efficient.pruning", ["pruning"]),
    "applications": ("keras_efficient.applications", ["applications"]),
    "losses-callbacks": (
        "keras_efficient.losses and keras_efficient.callbacks",
        ["losses", "callbacks"],
    ),
    "optimizers": ("keras_efficient.optimizers", ["optimizers"]),
    "datasets": ("keras_efficient.datasets", ["datasets"]),
}


def public_names(subpackage):
    """The public names of `keras_efficient.<subpackage>`."""
    module = importlib.import_module(f"keras_efficient.{subpackage}")
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and getattr(obj, "__module__", "").startswith("keras_efficient")
        ]
    return sorted(names)


def home_of(subpackage, name):
    """Where `name` is defined (mkdocstrings documents it from there)."""
    module = importlib.import_module(f"keras_efficient.{subpackage}")
    obj = getattr(module, name)
    return f"{obj.__module__}.{obj.__qualname__}"


def api_page(title, subpackages):
    lines = [f"# {title}", ""]
    for subpackage in subpackages:
        if len(subpackages) > 1:
            lines += [f"## keras_efficient.{subpackage}", ""]
        for name in public_names(subpackage):
            lines += [
                f"::: {home_of(subpackage, name)}",
                "    options:",
                f"      heading_level: {3 if len(subpackages) > 1 else 2}",
                "",
            ]
    return "\n".join(lines)


def tutorial_pages():
    out = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        rel = os.path.relpath(path, ROOT)
        out[name] = (
            f"# {name}\n\nRun it: `KERAS_BACKEND=jax python {rel}` "
            f"(`--quick` for a short run).\n\n"
            f'```python\n--8<-- "{rel}"\n```\n'
        )
    return out


def main():
    for page, (title, subpackages) in API_PAGES.items():
        with open(os.path.join(DOCS, "api", f"{page}.md"), "w") as f:
            f.write(api_page(title, subpackages))
    for name, text in tutorial_pages().items():
        with open(os.path.join(DOCS, "tutorials", f"{name}.md"), "w") as f:
            f.write(text)
    print("wrote the API and tutorial pages")


if __name__ == "__main__":
    main()
