"""Runs every tutorial in full and keeps what it shows for the docs.

Each example runs in a fresh interpreter on JAX, one after the other,
exactly as a reader runs it (`KERAS_BACKEND=jax python examples/NAME.py`).
What it prints goes to `docs/tutorials/output/NAME.txt`, its figure to
`docs/tutorials/output/NAME.png` and its wall time (with the machine's load
average, since a busy machine slows every run down) to
`docs/tutorials/output/runs.json`. `docs/make_pages.py` builds the tutorial
pages and the tutorials table from these files, so every page shows the
output and the time of the same run.

    python docs/run_examples.py [--only quickstart,pruning]
    python docs/make_pages.py

A full pass takes about 45 minutes on a 2-core CPU; `--only` re-runs some.
"""

import argparse
import glob
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "docs", "tutorials", "output")
RUNS = os.path.join(OUTPUT, "runs.json")


def run(name):
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p
    )
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, os.path.join("examples", f"{name}.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time moves less than wall time on a busy machine.
    cpu_seconds = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    if done.returncode:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"examples/{name}.py failed ({done.returncode})")
    # Paths relative to the repository, as a reader's clone prints them.
    text = done.stdout.replace(ROOT + os.sep, "")
    with open(os.path.join(OUTPUT, f"{name}.txt"), "w") as f:
        f.write(text)
    figure = os.path.join(ROOT, "examples", "output", f"{name}.png")
    if os.path.exists(figure):
        shutil.copyfile(figure, os.path.join(OUTPUT, f"{name}.png"))
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "backend": "jax",
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "figure": os.path.exists(figure),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated example names")
    args = parser.parse_args()
    names = sorted(
        os.path.splitext(os.path.basename(p))[0]
        for p in glob.glob(os.path.join(ROOT, "examples", "*.py"))
    )
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    os.makedirs(OUTPUT, exist_ok=True)
    runs = {}
    if os.path.exists(RUNS):
        with open(RUNS) as f:
            runs = json.load(f)
    for name in names:
        print(f"examples/{name}.py ...", flush=True)
        runs[name] = run(name)
        print(f"  {runs[name]['seconds']:.0f} s", flush=True)
        with open(RUNS, "w") as f:
            json.dump(dict(sorted(runs.items())), f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
