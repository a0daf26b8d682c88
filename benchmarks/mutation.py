"""Mutation testing of the core modules (mutmut 3), one module at a time.

Each module is mutated alone and checked against only the test files that
cover it (`MODULE_TESTS` below), so a run fits a small machine. For every
module the script copies the package and the tests into a scratch folder,
writes a `[mutmut]` section naming the module and its tests, runs
`mutmut run` there (one worker: mutmut forks each mutant from a pytest
process that has already imported Keras and the backend) and reads the
result of each mutant back. `benchmarks/results/mutation.json` gets, per
module: mutants, killed, survived, timeout, the equivalent mutants
(reviewed by hand in `EQUIVALENT`, each with its reason) and the kill rate
over the non-equivalent mutants.

    pip install -e ".[mutation]"
    KERAS_BACKEND=jax nice -n 10 python benchmarks/mutation.py \
        --module distillation/rounding.py

Modules already in the results file are kept unless run again, so the
figures can be built up a module at a time. This is a benchmark, not a CI
gate.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Module (relative to keras_efficient/) -> the test files that cover it.
# The one place to update when a module or a test file moves.
MODULE_TESTS = {
    "distillation/rounding.py": [
        "tests/test_dependent_rounding.py",
        "tests/test_selection_strategies.py",
    ],
    "distillation/strategies.py": ["tests/test_selection_strategies.py"],
    "distillation/kd.py": ["tests/test_kd.py"],
    "distillation/slam.py": ["tests/test_slam.py"],
    "distillation/debiased.py": ["tests/test_debiased.py"],
    "pruning/schedules.py": ["tests/test_pruning_schedules.py"],
    "pruning/masks.py": [
        "tests/test_pruning_mask_ops.py",
        "tests/test_pruning_groups.py",
    ],
    "pruning/mask_ops.py": ["tests/test_pruning_mask_ops.py"],
    "pruning/state.py": ["tests/test_pruning_state.py"],
    "pruning/shrink.py": ["tests/test_shrink.py"],
    "optimizers/lazy.py": [
        "tests/test_lazy_optimizers.py",
        "tests/test_row_update.py",
    ],
    "optimizers/row_update.py": ["tests/test_row_update.py"],
    "layers/laurel.py": ["tests/test_laurel.py"],
    "layers/routing.py": ["tests/test_moe.py"],
    "layers/moe.py": ["tests/test_moe.py"],
    "layers/altup.py": ["tests/test_altup.py"],
    "layers/lookup.py": ["tests/test_lookup.py", "tests/test_row_update.py"],
    "layers/lsh.py": ["tests/test_lsh.py"],
}

# Mutants reviewed as equivalent (no input can tell them from the code):
# module -> {mutant name: one-line reason}. Mutant names are mutmut's,
# e.g. "keras_efficient.distillation.rounding.x_as_rng__mutmut_3".
EQUIVALENT = {}

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "mutation.json"
KILLED = {"killed", "caught by type check"}
TIMEOUT = {"timeout"}


def _mutmut_config(module, tests):
    lines = [
        "[mutmut]",
        "source_paths = keras_efficient",
        f"only_mutate = keras_efficient/{module}",
        # Only the module's tests, without xdist; -x: a mutant is killed by
        # its first failing test.
        "pytest_add_cli_args_test_selection =",
        *(f"    {t}" for t in tests),
        "pytest_add_cli_args =",
        "    -p",
        "    no:xdist",
        "    -x",
        "    -q",
        "mutate_only_covered_lines = true",
        "use_git_change_detection = false",
        "timeout_multiplier = 5.0",
        "",
    ]
    return "\n".join(lines)


def _status_of(exit_code):
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[exit_code]


def run_module(module, tests, workdir, max_children=1):
    """Runs mutmut on one module; `{mutant name: status}`."""
    work = Path(workdir) / module.replace("/", "_").removesuffix(".py")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "keras_efficient", work / "keras_efficient")
    shutil.copytree(
        ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("*.pyc")
    )
    # pytest options (markers, the `slow` filter) without a [tool.mutmut].
    (work / "pytest.ini").write_text(
        "[pytest]\naddopts = -m 'not slow' -p no:cacheprovider\n"
        "markers =\n    slow: long-running tests\n"
        "filterwarnings = ignore::DeprecationWarning\n"
    )
    (work / "setup.cfg").write_text(_mutmut_config(module, tests))
    env = dict(os.environ, PYTHONPATH=str(work))
    env.setdefault("KERAS_BACKEND", "jax")
    command = [sys.executable, "-m", "mutmut", "run"]
    command += ["--max-children", str(max_children)]
    run = subprocess.run(command, cwd=work, env=env)
    meta = work / "mutants" / "keras_efficient" / (module + ".meta")
    if not meta.exists():
        raise RuntimeError(
            f"mutmut wrote no results for {module} (exit {run.returncode})"
        )
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: _status_of(code) for name, code in codes.items()}, work


def summarize(module, statuses):
    equivalent = EQUIVALENT.get(module, {})
    counts = {"mutants": len(statuses), "killed": 0, "survived": 0}
    counts.update(timeout=0, no_tests=0, other=0)
    survivors = []
    for name, status in sorted(statuses.items()):
        if name in equivalent:
            continue
        if status in KILLED:
            counts["killed"] += 1
        elif status in TIMEOUT:
            counts["timeout"] += 1
        elif status == "survived":
            counts["survived"] += 1
            survivors.append(name)
        elif status == "no tests":
            counts["no_tests"] += 1
            survivors.append(name)
        else:
            counts["other"] += 1
    # A timeout counts as killed (the mutant made the tests hang).
    caught = counts["killed"] + counts["timeout"]
    scored = caught + counts["survived"] + counts["no_tests"]
    return {
        **counts,
        "equivalent": {n: r for n, r in equivalent.items() if n in statuses},
        "kill_rate": round(caught / scored, 4) if scored else None,
        "surviving": survivors,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--module",
        action="append",
        choices=sorted(MODULE_TESTS),
        help="module to run (repeatable); default: all in MODULE_TESTS",
    )
    parser.add_argument("--workdir", default=None, help="scratch folder")
    parser.add_argument("--keep", action="store_true", help="keep workdir")
    parser.add_argument("--max-children", type=int, default=1)
    args = parser.parse_args()
    modules = args.module or list(MODULE_TESTS)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault("modules", {})
    workdir = args.workdir or tempfile.mkdtemp(prefix="mutation-")
    try:
        for module in modules:
            statuses, _ = run_module(
                module, MODULE_TESTS[module], workdir, args.max_children
            )
            summary = summarize(module, statuses)
            summary["tests"] = MODULE_TESTS[module]
            results["modules"][module] = summary
            print(
                module,
                json.dumps(
                    {
                        k: summary[k]
                        for k in summary
                        if k not in ("surviving", "tests")
                    }
                ),
            )
            results["tool"] = "mutmut " + _mutmut_version()
            results["backend"] = os.environ.get("KERAS_BACKEND", "jax")
            results["not_run"] = sorted(
                set(MODULE_TESTS) - set(results["modules"])
            )
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _mutmut_version():
    from importlib.metadata import version

    return version("mutmut")


if __name__ == "__main__":
    main()
