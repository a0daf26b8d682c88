"""The overhead benchmarks' targets, and what a figure is read against on
each backend.

JAX: the targets below, by (family, method, width). TensorFlow and torch:
the losses and the checks keep their own target; the models must come
within `BACKEND_SLACK` of the ratio JAX recorded (else of the JAX target).
"""

import json
import os

import keras

from benchmarks.common import RESULTS_DIR

BACKEND = keras.backend.backend()
# Targets on JAX, by (family, method, width); None: any width. A figure
# without a target is reported beside its floor and FLOP share only.
TARGETS = {
    ("transformer", "rw", 512): 1.02,
    ("transformer", "rw+lr", 512): 1.04,
    ("transformer", "altup2", 512): 1.05,
    ("transformer", "recycled2", 512): 1.05,
    ("loss", "slam", None): 1.05,
    ("loss", "debiased", None): 1.05,
    ("checks", "id_check", None): 1.01,
}
# TensorFlow and torch: within this much of the JAX ratio (the losses keep
# their own target on every backend).
BACKEND_SLACK = 0.05
ABSOLUTE_FAMILIES = ("loss", "checks")
# `overhead_checks.py`: a check that costs more than this, of a whole
# step, is not "cheap".
CHECKS_TARGET = 1.03


def jax_target(family, method, d):
    """The JAX target of one figure, or None."""
    return TARGETS.get((family, method, d), TARGETS.get((family, method, None)))


def jax_medians(path=None):
    """name -> median of the recorded JAX figures (for the other backends'
    "within 0.05 of JAX" targets); empty if JAX has not been run."""
    path = path or os.path.join(RESULTS_DIR, "overhead.jax.json")
    try:
        with open(path) as f:
            return {g["name"]: g["median"] for g in json.load(f)["figures"]}
    except (OSError, ValueError, KeyError):
        return {}


def target_for(family, method, d, backend=BACKEND, jax_figures=None):
    """`(threshold, basis)` of one figure on `backend`, or `(None, why)`.

    JAX: the issue's targets. TensorFlow and torch: the losses keep their
    target; the models must come within `BACKEND_SLACK` of the JAX ratio
    (the recorded one, else the JAX target), where JAX has a target.
    """
    base = jax_target(family, method, d)
    if base is None:
        return None, "no target at this width: read the floor"
    if backend == "jax" or family in ABSOLUTE_FAMILIES:
        return base, "target"
    name = f"{family}/{method}/d{d}"
    jax_ratio = (jax_figures or {}).get(name)
    if jax_ratio is None:
        return base + BACKEND_SLACK, "JAX target + 0.05 (no JAX run recorded)"
    return jax_ratio + BACKEND_SLACK, f"JAX's {jax_ratio:.3f} + 0.05"
