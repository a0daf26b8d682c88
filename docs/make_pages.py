"""Writes the generated pages of the docs: the API reference (one entry per
public name of each subpackage), one page per tutorial (what a full run
prints, its figure, its wall time and its source) and the tutorials table.

Run after adding a public name or an example:

    python docs/make_pages.py

The tutorial pages show the files `docs/run_examples.py` keeps from a full
run of every example (about 45 minutes on a 2-core CPU); regenerate them with

    python docs/run_examples.py && python docs/make_pages.py

`tests/test_docs.py` fails when a public name is missing from the API pages
or an example has no page, so the two cannot drift apart silently.
"""

import glob
import importlib
import json
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


# example -> (title, what it shows, what its figure shows or None)
TUTORIALS = {
    "quickstart": (
        "Quick start: a ResNet and its LAuReL twin",
        "a small ResNet and its LAuReL twin on digits: accuracy, parameters "
        "and step time side by side",
        None,
    ),
    "laurel_resnet": (
        "Every LAuReL variant in a ResNet",
        "every LAuReL variant in a ResNet, and the residual weights RW learns",
        "learning curves of every variant",
    ),
    "altup_lm": (
        "AltUp in a byte-level language model",
        "AltUp, Recycled-AltUp and a 2x-wide byte LM against a baseline; "
        "sampled text",
        "evaluation loss during training",
    ),
    "lookup_and_moe": (
        "Sparse lookup tables and LSH-routed experts",
        "LSH lookup tables and LSH experts on the DSM polynomial task; a "
        "bigram table in a byte LM",
        None,
    ),
    "slam_distillation": (
        "Distilling from a noisy teacher: SLaM and debiased distillation",
        "soft / hard KD, debiased, SLaM and pseudo-labels with a noisy "
        "teacher on MNIST-1D",
        "the teacher's reliability",
    ),
    "active_distillation": (
        "Active distillation: which examples to ask the teacher about",
        "student accuracy against teacher queries for each selection strategy",
        "accuracy against teacher queries",
    ),
    "pruning": (
        "Magnitude pruning, and evaluation beyond accuracy",
        "one-shot, gradual, iterative and 2:4 pruning; evaluation beyond "
        "accuracy",
        "accuracy against sparsity",
    ),
    "prune_to_speed": (
        "Pruning for speed: a smaller, faster ResNet",
        "sensitivity, a sparsity policy, filter removal: a smaller, faster "
        "ResNet",
        "sensitivity of each channel group",
    ),
    "compress_lm": (
        "Prune, then distill: a byte LM at half width",
        "a byte LM cut to half width by activation importance: pruned only, "
        "fine-tuned, distilled, from scratch",
        "evaluation bits per byte during recovery",
    ),
    "data_pruning_kd": (
        "Data pruning with a cross-entropy + distillation mix",
        "random data subsets trained with a CE + KD mix",
        "accuracy against the CE weight",
    ),
}
OUTPUT = os.path.join(DOCS, "tutorials", "output")


def runs():
    """Wall time and machine of each example's last full run."""
    path = os.path.join(OUTPUT, "runs.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def duration(seconds):
    """A run's wall time as the docs, README and examples quote it."""
    if seconds < 100:
        return f"{round(seconds / 5) * 5:.0f} s"
    return f"{seconds / 60:.1f} min"


def example_names():
    """The examples, in the order of TUTORIALS (then any new ones)."""
    found = {
        os.path.splitext(os.path.basename(p))[0]
        for p in glob.glob(os.path.join(ROOT, "examples", "*.py"))
    }
    order = list(TUTORIALS) + sorted(found - set(TUTORIALS))
    return [name for name in order if name in found]


def tutorial_page(name, run):
    rel = f"examples/{name}.py"
    title, shows, figure = TUTORIALS.get(name, (name, "", None))
    lines = [f"# {title}", ""]
    if shows:
        lines += [f"What it shows: {shows}.", ""]
    lines += [f"Run it: `KERAS_BACKEND=jax python {rel}`.", ""]
    if run:
        load = run["load_average"]
        cpu = ""
        if "cpu_seconds" in run:
            cpu = f", {duration(run['cpu_seconds'])} of CPU time"
        lines += [
            f"Full run: **{duration(run['seconds'])}** on a {run['cpus']}-core "
            f"CPU with JAX (start-up included{cpu}; load average {load[0]:.1f} "
            f"before, {load[1]:.1f} after: other jobs shared the machine, "
            f"so a quiet one is faster). `--quick` is a smoke run of a few "
            f"seconds whose numbers mean nothing.",
            "",
            "## What it prints",
            "",
            f"The output of that run ({run['date']}):",
            "",
            f'```text\n--8<-- "docs/tutorials/output/{name}.txt"\n```',
            "",
        ]
        if figure and run.get("figure"):
            lines += [
                "## Figure",
                "",
                f"![{figure}](output/{name}.png)",
                "",
                f"_{figure[:1].upper() + figure[1:]}, saved by the run as "
                f"`examples/output/{name}.png`._",
                "",
            ]
    else:
        lines += [
            "_No full run recorded yet: run `python docs/run_examples.py "
            f"--only {name}`, then `python docs/make_pages.py`._",
            "",
        ]
    lines += ["## The script", "", f'```python\n--8<-- "{rel}"\n```', ""]
    return "\n".join(lines)


def tutorial_pages():
    recorded = runs()
    return {
        name: tutorial_page(name, recorded.get(name))
        for name in example_names()
    }


def tutorials_index():
    recorded = runs()
    rows = [
        "| tutorial | what it shows | full run, 2-core CPU (JAX) | figure |",
        "| --- | --- | --- | --- |",
    ]
    for name in example_names():
        title, shows, figure = TUTORIALS.get(name, (name, "", None))
        run = recorded.get(name)
        time = duration(run["seconds"]) if run else "not run yet"
        rows.append(
            f"| [{title}]({name}.md) | {shows} | {time} | {figure or 'none'} |"
        )
    return "\n".join(
        [
            "# Tutorials",
            "",
            "Every tutorial runs on a CPU on data that needs no download, on "
            "any backend (`KERAS_BACKEND=jax|tensorflow|torch`), and prints a "
            "short summary table at the end. Each page shows what a full run "
            "on JAX printed, its figure and how long it took. `--quick` is a "
            "smoke run (CI runs every tutorial that way on all three "
            "backends): tiny data and a step or two, so its numbers mean "
            "nothing.",
            "",
            "Times are full runs on JAX, start-up included, one after the "
            "other on a shared 2-core machine (`python docs/run_examples.py`; "
            "each page gives the load average), so a quiet machine is faster.",
            "",
            *rows,
            "",
        ]
    )


def main():
    for page, (title, subpackages) in API_PAGES.items():
        with open(os.path.join(DOCS, "api", f"{page}.md"), "w") as f:
            f.write(api_page(title, subpackages))
    for name, text in tutorial_pages().items():
        with open(os.path.join(DOCS, "tutorials", f"{name}.md"), "w") as f:
            f.write(text)
    with open(os.path.join(DOCS, "tutorials", "index.md"), "w") as f:
        f.write(tutorials_index())
    print("wrote the API and tutorial pages")


if __name__ == "__main__":
    main()
