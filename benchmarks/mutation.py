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
        --module distillation/active/rounding.py

Modules already in the results file are kept unless run again, so the
figures can be built up a module at a time. This is a benchmark, not a CI
gate.

A whole module can take hours on 2 cores (each mutant reruns the tests
that reach its function). `--sample N` runs N mutants drawn uniformly at
random (seeded) and records the kill rate with its 95% Wilson interval;
the backend with the fastest test files here is TensorFlow
(`KERAS_BACKEND=tensorflow`; torch aborts in mutmut's forked coverage run).
Lines a backend never reaches (another backend's fast path) are not
mutated, so the backend is recorded per module.

    KERAS_BACKEND=tensorflow nice -n 5 python benchmarks/mutation.py \
        --module layers/moe.py --sample 30 --max-children 2 \
        --timeout-multiplier 10 --timeout-constant 5
"""

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Module (relative to keras_efficient/) -> the test files that cover it.
# The one place to update when a module or a test file moves.
MODULE_TESTS = {
    "distillation/active/rounding.py": [
        "tests/test_dependent_rounding.py",
        "tests/test_rounding_marginals.py",
        "tests/test_selection_strategies.py",
    ],
    "distillation/active/strategies.py": ["tests/test_selection_strategies.py"],
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
    "pruning/update.py": [
        "tests/test_pruning_state.py",
        "tests/test_pruning_groups.py",
        # N:M applied once at step 1 (n_m_update="first_step")
        "tests/test_pruning_transformer_units.py",
    ],
    "pruning/shrink.py": ["tests/test_shrink.py"],
    "optimizers/lazy.py": [
        "tests/test_lazy_optimizers.py",
        "tests/test_row_update.py",
    ],
    "optimizers/row_update.py": ["tests/test_row_update.py"],
    "layers/laurel.py": ["tests/test_laurel.py"],
    "layers/laurel_ops.py": ["tests/test_laurel_ops.py"],
    "layers/routing.py": ["tests/test_moe.py"],
    "layers/moe.py": ["tests/test_moe.py"],
    "layers/altup/layer.py": ["tests/test_altup.py"],
    "layers/altup/block_ops.py": [
        "tests/test_altup_block_ops.py",
        # the NumPy references of the whole layer
        "tests/test_altup.py",
    ],
    "layers/lookup.py": ["tests/test_lookup.py", "tests/test_row_update.py"],
    "layers/lsh.py": ["tests/test_lsh.py"],
}

# Mutants reviewed as equivalent (no input can tell them from the code):
# module -> {mutant name: one-line reason}. Names are mutmut's without the
# module prefix, e.g. "x_as_rng__mutmut_3" (`mutmut show` prints the diff).
EQUIVALENT = {
    "distillation/active/rounding.py": {
        "x_dependent_rounding__mutmut_7": (
            "`|` also pairs integral entries; pairing a 0 or 1 with "
            "anything moves no mass (a or c is 0), so the draw is the same"
        ),
        "x_dependent_rounding__mutmut_8": (
            "`>= eps` differs only for an entry exactly 1e-9 (and pairing "
            "it changes no distribution)"
        ),
        "x_dependent_rounding__mutmut_9": (
            "`<= 1 - eps` differs only for an entry exactly 1 - 1e-9"
        ),
        "x_dependent_rounding__mutmut_10": (
            "`< 1 + eps` also pairs entries equal to 1, a no-op pairing (a = 0)"
        ),
        "x_dependent_rounding__mutmut_11": (
            "`< 2 - eps` also pairs entries equal to 1, a no-op pairing (a = 0)"
        ),
        "x_dependent_rounding__mutmut_16": (
            "start carry 1: entry 1 is either frac[0] (self-pair, no move) "
            "or integral (no-op pairing)"
        ),
        "x_dependent_rounding__mutmut_17": (
            "start carry -2 is still < 0: same branch as -1"
        ),
        "x_dependent_rounding__mutmut_39": (
            "`<=` vs `<` on a continuous uniform: probability 0"
        ),
        "x_dependent_rounding__mutmut_48": (
            "carry test at exactly 1e-9: probability-0 boundary"
        ),
        "x_dependent_rounding__mutmut_49": (
            "carry test at exactly 1 - 1e-9: probability-0 boundary"
        ),
        "x_dependent_rounding__mutmut_54": (
            "reset test at exactly 1e-9: probability-0 boundary"
        ),
        "x_dependent_rounding__mutmut_55": (
            "reset test at exactly 1 - 1e-9: probability-0 boundary"
        ),
        "x_dependent_rounding__mutmut_56": (
            "keeps an entry equal to 1 as the carry; pairing it next is a "
            "no-op (a = 0)"
        ),
        "x_dependent_rounding__mutmut_57": (
            "keeps an entry equal to 1 as the carry; pairing it next is a "
            "no-op (a = 0)"
        ),
        "x_dependent_rounding__mutmut_59": (
            "carry 1 after both resolve: entry 1 is already visited and "
            "integral, a no-op pairing"
        ),
        "x_dependent_rounding__mutmut_60": (
            "carry -2 is still < 0: same branch as -1"
        ),
        "x_dependent_rounding__mutmut_62": (
            "no choice -> the fix-up picks the b largest p, which are the b "
            "ones"
        ),
        "x_dependent_rounding__mutmut_63": (
            "p is 0 or 1 at the end: `>= 0.5` selects the same points"
        ),
        "x_dependent_rounding__mutmut_64": (
            "no choice -> the fix-up picks the b largest p, which are the b "
            "ones"
        ),
        "x_dependent_rounding__mutmut_65": (
            "the fix-up on an exact 0/1 vector returns the same points; a "
            "residue (len != b) needs a sum off an integer by > 0.5, "
            "refused by the check"
        ),
        "x__check_marginals__mutmut_8": (
            "reshape(-2): NumPy reads any negative size as 'infer', same "
            "flat array"
        ),
        "x__check_marginals__mutmut_31": (
            "`>= 1e-6`: differs only when |sum - b| is exactly the float "
            "1e-6 (tolerance boundary)"
        ),
        "x__check_marginals__mutmut_35": (
            "no lower clip: entries in [-1e-9, 0) are neither fractional "
            "nor chosen, as 0"
        ),
        "x__check_marginals__mutmut_36": (
            "no upper clip: entries in (1, 1 + 1e-9] are not fractional "
            "and are chosen, as 1"
        ),
        "x__check_marginals__mutmut_41": (
            "upper clip 2: entries in (1, 1 + 1e-9] are not fractional "
            "and are chosen, as 1"
        ),
        "x_capped_proportional__mutmut_28": (
            "NumPy reads the sort kind case-insensitively: 'STABLE' is 'stable'"
        ),
        "x_capped_proportional__mutmut_40": (
            "initial p_sorted is never used: the loop always breaks by k "
            "= b - 1 (ws[k] <= tail[k])"
        ),
        "x_capped_proportional__mutmut_44": (
            "initial p_sorted is never used: the loop always breaks by k "
            "= b - 1 (ws[k] <= tail[k])"
        ),
        "x_capped_proportional__mutmut_50": (
            "`<` vs `<=` at exactly 1 + 1e-12 (tolerance boundary)"
        ),
        "x_capped_proportional__mutmut_51": (
            "at ws[k] c = 1 the next k gives the same p (the entry is 1 "
            "either way); else within 1e-12"
        ),
        "x_capped_proportional__mutmut_61": (
            "at the break every c * ws[k:] <= 1 + 1e-12 and the result is"
            " clipped to 1 after"
        ),
        "x_capped_proportional__mutmut_66": (
            "p >= 0 already (w >= 0, c > 0): the lower clip is a no-op"
        ),
        "x_capped_proportional__mutmut_67": (
            "values exceed 1 by at most the 1e-12 break tolerance"
        ),
        "x_capped_proportional__mutmut_72": (
            "values exceed 1 by at most the 1e-12 break tolerance"
        ),
        "x_worst_case__mutmut_6": (
            "m = len(v): v.sum() minus the sum of all of v is 0 as the "
            "early return (up to summation order)"
        ),
        "xǁ_SortedGainsǁ__init____mutmut_8": (
            "NumPy reads the sort kind case-insensitively: 'STABLE' is 'stable'"
        ),
        "xǁ_SortedGainsǁcandidates__mutmut_4": (
            "a second t = 0 candidate duplicates the first"
        ),
        "xǁ_SortedGainsǁcandidates__mutmut_10": (
            "k = 0 gives thr = -m / 0 (-inf or nan), dropped by `thr > 0`"
        ),
        "xǁ_SortedGainsǁcandidates__mutmut_18": (
            "keeps every k: extra t >= 0 candidates only; F(t) <= max F, "
            "whose argmax is still a candidate"
        ),
        "xǁ_SortedGainsǁcandidates__mutmut_19": (
            "adds candidates only (thr = 0); F(t) <= max F, whose argmax "
            "is still a candidate"
        ),
        "xǁ_SortedGainsǁcandidates__mutmut_42": (
            "adds t = 0 only, already a candidate"
        ),
        "xǁ_SortedGainsǁdual__mutmut_8": (
            "side='left' is searchsorted's default"
        ),
        "xǁ_SortedGainsǁdual__mutmut_14": (
            "errstate only silences NumPy warnings; the values are the same"
        ),
        "xǁ_SortedGainsǁdual__mutmut_15": (
            "errstate only silences NumPy warnings; the values are the same"
        ),
        "xǁ_SortedGainsǁdual__mutmut_16": (
            "errstate only silences NumPy warnings; the values are the same"
        ),
        "xǁ_SortedGainsǁdual__mutmut_17": (
            "errstate only silences NumPy warnings; the values are the same"
        ),
        "xǁ_SortedGainsǁdual__mutmut_28": (
            "left vs right differ only at t = b / H_r exactly, where the "
            "two linear pieces of G meet"
        ),
        "xǁ_SortedGainsǁdual__mutmut_35": (
            "t = 0: b / 0 is inf under errstate, the same as the np.inf branch"
        ),
        "xǁ_SortedGainsǁdual__mutmut_42": (
            "r >= 1 (h[0] = 0 < b / t, side right), so r - 1 >= 0: the "
            "lower clip is a no-op"
        ),
        "xǁ_SortedGainsǁdual__mutmut_114": (
            "at mass == b the two pieces agree (G is continuous): g1 == g2"
        ),
        "xǁ_SortedGainsǁwater_fill__mutmut_24": (
            "`>=` vs `>` at a surplus of exactly 1e-12 (tolerance boundary)"
        ),
        "xǁ_SortedGainsǁwater_fill__mutmut_53": (
            "ps >= 0 already (min of cap and a max with 0, fill >= 0)"
        ),
        "xǁ_SortedGainsǁwater_fill__mutmut_54": (
            "ps <= 1 already (ps <= cap <= 1, fill <= 1 - ps)"
        ),
        "xǁ_SortedGainsǁwater_fill__mutmut_59": (
            "ps <= 1 already (ps <= cap <= 1, fill <= 1 - ps)"
        ),
        "xǁ_SortedGainsǁ__init____mutmut_15": (
            "`gs >= 0`: zero gains add infinite h entries and no candidate; "
            "the g1 branch reaches a zero gain only where its weight b - t "
            "h[r] is 0"
        ),
        "xǁ_SortedGainsǁcandidates__mutmut_12": (
            "the k = 1 candidate is kept only when m = 0, where F is flat from"
            " t = g0, already a candidate"
        ),
        "xǁ_SortedGainsǁcandidates__mutmut_6": (
            "b g0 >= g0, where F = greedy - m t is not increasing: g0 is at "
            "least as good"
        ),
        "xǁ_SortedGainsǁcandidates__mutmut_5": (
            "the b / H_r points are redundant: where the maximum is at one, "
            "the third kind of breakpoint gives the same t; elsewhere F is "
            "flat (same value; p may differ among optimal ones)"
        ),
        "xǁ_SortedGainsǁcandidates__mutmut_28": (
            "differs only when a gain equals the threshold exactly, where F's "
            "slope is 0: the same value"
        ),
        "xǁ_SortedGainsǁdual__mutmut_43": (
            "r reaches npos only when t H_npos = b exactly, where the extra "
            "term is 0 g"
        ),
        "xǁ_SortedGainsǁdual__mutmut_54": (
            "r reaches npos only when t H_npos = b exactly, where the extra "
            "term is 0 g"
        ),
        "xǁ_SortedGainsǁdual__mutmut_49": (
            "r = 0 needs t > b g0: mass 0 < b and g1 is unused; npos = 0 clips"
            " to 0 either way"
        ),
        "xǁ_SortedGainsǁdual__mutmut_56": (
            "differs only for npos <= 1, where r stays 0 (npos = 0) or g1 "
            "would need t >= b g0 > t"
        ),
        "xǁ_SortedGainsǁdual__mutmut_67": (
            "r <= npos - 1 <= n - 1 always: the clip never acts"
        ),
    },
    "optimizers/lazy.py": {
        "xǁLazyAdamǁupdate_step__mutmut_4": (
            "the step count t is an integer: float32 holds it exactly up to "
            "2**24 steps, and ops.power promotes to the variable's dtype "
            "(differs only for float16/bfloat16 variables)"
        ),
        "xǁLazySGDǁupdate_step__mutmut_4": (
            "Keras keeps the learning rate as a floatx (float32) variable, "
            "so casting it to floatx is a no-op; ops promote it to the "
            "variable's dtype either way"
        ),
    },
    "pruning/shrink.py": {
        "x_select_units__mutmut_1": (
            "`sparsity < 0` vs `<= 0`: at 0, keep_count keeps all n units, "
            "so n - n = 0 units are selected either way"
        ),
        "x__shrink_config__mutmut_2": (
            "the default importance was never used (both callers pass it); "
            "the default has since been removed"
        ),
    },
    "layers/routing.py": {
        "x_group_sizes__mutmut_3": (
            "no caller passed `weight`; the unused parameter has since been "
            "removed"
        ),
        "x_sort_by_expert__mutmut_27": (
            "side='left' is searchsorted's default"
        ),
        "x_sort_by_expert__mutmut_34": (
            "arange of a Python int is int32 on every backend (Keras's "
            "default int type), the dtype given"
        ),
    },
    "pruning/schedules.py": {
        "xǁIterativePruningǁtensor_sparsity__mutmut_21": (
            "Python floats convert to floatx, float32 by default, the dtype "
            "given"
        ),
    },
    "pruning/update.py": {
        "xǁPruningUpdateǁbefore_fit__mutmut_49": (
            "the channel mask is 0/1, exact in any float dtype, and assign "
            "casts to the variable's dtype"
        ),
    },
    "distillation/slam.py": {
        "xǁSLaMLossǁcall__mutmut_47": (
            "`call` passes the estimator's alpha as `estimate`, which wins "
            "over the margin; without one, a fitted estimator computes the "
            "same margin from t: the margin only saves recomputing it"
        ),
    },
    "distillation/debiased.py": {
        "xǁDebiasedDistillationLossǁ__init____mutmut_55": (
            "min_inclusive=None is falsy, the same as False"
        ),
        "xǁDebiasedDistillationLossǁset_pool__mutmut_26": (
            "the pool is checked to be 2-D (n, num_classes): shape[1] is "
            "shape[-1]"
        ),
    },
    "pruning/masks.py": {
        "x_keep_top__mutmut_21": (
            "the keep vector only feeds units_to_mask, which casts the mask "
            "to float32: 0./1. floats give the same mask as False/True"
        ),
    },
    "layers/moe.py": {
        "xǁMixtureOfExpertsǁ__init____mutmut_52": (
            "min_inclusive=None is falsy, the same as False"
        ),
        "xǁMixtureOfExpertsǁbuild__mutmut_71": (
            "add_weight's shape defaults to () (a scalar)"
        ),
    },
    "layers/lsh.py": {
        "xǁLSHHashǁbuild__mutmut_67": (
            "another seed draws other, equally valid offsets: no property "
            "of the hash depends on which"
        ),
        "xǁLSHHashǁcall__mutmut_15": (
            "the projections are float32 and cast to floatx (float32 by "
            "default)"
        ),
    },
    "optimizers/row_update.py": {
        "x__updated_read_rows__mutmut_25": (
            "a float 1 concatenated with the bool flags promotes them to "
            "0./1., cast to int32 for the cumsum: the same segments"
        ),
        "x_gather_rows_with_update__mutmut_1": (
            "on TensorFlow (the run's backend) the dispatch falls through to "
            "the keras.ops path either way; on JAX/torch it would skip a "
            "fast path tested equal to that path (speed, not values)"
        ),
    },
    "distillation/active/strategies.py": {
        "x__top__mutmut_16": (
            "NumPy reads the sort kind case-insensitively: 'STABLE' is 'stable'"
        ),
    },
    "layers/lookup.py": {
        "xǁSparseLookupTableǁcall__mutmut_22": (
            "np.shape reads `.shape` first: the same static shape"
        ),
    },
    "distillation/kd.py": {
        "xǁKnowledgeDistillationLossǁ__init____mutmut_22": (
            "min_inclusive=None is falsy, the same as False"
        ),
        "xǁKnowledgeDistillationLossǁcall__mutmut_4": (
            "ops.cast(x, None) casts to floatx, float32 by default (differs "
            "only under a global floatx other than float32)"
        ),
        "xǁKnowledgeDistillationLossǁcall__mutmut_35": (
            "ops.cast(x, None) casts to floatx, float32 by default (differs "
            "only under a global floatx other than float32)"
        ),
        "xǁKnowledgeDistillationLossǁcall__mutmut_14": (
            "no upper clip: teacher probabilities are <= 1"
        ),
        "xǁKnowledgeDistillationLossǁcall__mutmut_19": (
            "upper clip 2: teacher probabilities are <= 1"
        ),
        "xǁKnowledgeDistillationLossǁcall__mutmut_24": (
            "axis=-1 is log_softmax's default"
        ),
        "xǁKnowledgeDistillationLossǁcall__mutmut_32": (
            "axis=-1 is log_softmax's default"
        ),
    },
}

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "mutation.json"
KILLED = {"killed", "caught by type check"}
TIMEOUT = {"timeout"}


# Appended to the scratch copy's tests/conftest.py. mutmut wraps each
# mutated method in a trampoline that `inspect.signature` sees through
# (`__wrapped__`) but `inspect.getfullargspec` does not, and Keras's
# `Operation.__new__` reads both: a layer whose `__init__` is mutated could
# not be built (IndexError). Unwrap first, in the scratch copy only.
KERAS_TRAMPOLINE_SHIM = """

import inspect as _inspect  # noqa: E402
import types as _types  # noqa: E402

from keras.src.ops import operation as _operation  # noqa: E402

_shim = _types.ModuleType("inspect")
_shim.__dict__.update(vars(_inspect))
_shim.getfullargspec = lambda f: _inspect.getfullargspec(_inspect.unwrap(f))
_operation.inspect = _shim
"""


def _copy_tests(destination):
    """The tests, with the shim above, into a scratch folder."""
    shutil.copytree(
        ROOT / "tests", destination, ignore=shutil.ignore_patterns("*.pyc")
    )
    with open(destination / "conftest.py", "a") as conftest:
        conftest.write(KERAS_TRAMPOLINE_SHIM)


def _mutmut_config(module, tests, preload, timeout=(15.0, 1.0)):
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
        # Fork each mutant from a server that has imported Keras and the
        # backend but run nothing: a fork of the process that ran the tests
        # inherits JAX's runtime threads and can deadlock on one of their
        # locks (30 of kd.py's 102 mutants hung until the wall limit and
        # read as "timeout", i.e. caught).
        "process_isolation = forkserver",
        "forkserver_warmup = import",
        f"preload_modules_file = {preload}",
        "use_git_change_detection = false",
        # Limit per mutant: (estimated test time + constant) x multiplier
        # of wall time (twice that of CPU time). On a loaded machine a slow
        # but passing mutant can run past mutmut's defaults (15, 1 s: 30 s
        # for fast NumPy tests, less than a Keras import under load) and
        # read as a timeout, counted as caught: raise them.
        f"timeout_multiplier = {timeout[0]}",
        f"timeout_constant = {timeout[1]}",
        "",
    ]
    return "\n".join(lines)


def _status_of(exit_code):
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[exit_code]


def run_module(
    module,
    tests,
    workdir,
    max_children=1,
    timeout=(15.0, 1.0),
    sample=None,
    seed=0,
):
    """Runs mutmut on one module; `{mutant name: status}`.

    With `sample`, only that many mutants, drawn uniformly at random (seeded
    by `seed` and the module's name), are run; the rest read "not checked".
    """
    work = _work_of(workdir, module)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "keras_efficient", work / "keras_efficient")
    _copy_tests(work / "tests")
    # pytest options (markers, the `slow` filter) without a [tool.mutmut].
    (work / "pytest.ini").write_text(
        "[pytest]\naddopts = -m 'not slow' -p no:cacheprovider\n"
        "markers =\n    slow: long-running tests\n"
        "filterwarnings = ignore::DeprecationWarning\n"
    )
    preload = work / "preload_modules.txt"
    # Imports only: none of them starts the backend's runtime threads.
    preload.write_text("numpy\nkeras\npytest\nkeras_efficient\ntests.harness\n")
    (work / "setup.cfg").write_text(
        _mutmut_config(module, tests, preload, timeout)
    )
    env = dict(os.environ, PYTHONPATH=str(work))
    env.setdefault("KERAS_BACKEND", "jax")
    command = [sys.executable, "-m", "mutmut", "run"]
    command += ["--max-children", str(max_children)]
    names = []
    if sample is not None:
        # Generate the mutants and the test map only: a name that matches
        # no mutant stops mutmut after both are saved (it asserts).
        subprocess.run(
            command + ["keras_efficient.no_such_mutant"],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        names = sample_mutants(
            sorted(read_statuses(work, module)), sample, seed, module
        )
    run = subprocess.run(command + names, cwd=work, env=env)
    if run.returncode:
        # A failing clean run or test collection leaves every mutant
        # unrun: refuse rather than overwrite the module's results.
        raise RuntimeError(f"mutmut exited with {run.returncode} on {module}")
    return read_statuses(work, module)


def sample_mutants(names, size, seed, module):
    """`size` of `names` drawn without replacement, the same on every run."""
    if size >= len(names):
        return list(names)
    rng = random.Random(f"{seed}:{module}")
    return sorted(rng.sample(names, size))


def _work_of(workdir, module):
    return Path(workdir) / module.replace("/", "_").removesuffix(".py")


def read_statuses(work, module):
    """`{mutant name: status}` from a finished mutmut run in `work`."""
    meta = work / "mutants" / "keras_efficient" / (module + ".meta")
    if not meta.exists():
        raise RuntimeError(f"mutmut wrote no results for {module} in {work}")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: _status_of(code) for name, code in codes.items()}


def recheck(work, module, tests, names):
    """Reruns the module's tests, as they are now, on `names`.

    For a surviving mutant that a new test is written for: the test files
    are copied into the kept mutmut folder and run under each mutant (what
    mutmut itself does, without regenerating mutants or their test map);
    its result replaces the old one in mutmut's results file.
    """
    mutants = work / "mutants"
    shutil.rmtree(mutants / "tests")
    _copy_tests(mutants / "tests")
    meta = mutants / "keras_efficient" / (module + ".meta")
    data = json.loads(meta.read_text())
    for name in names:
        env = dict(os.environ, PYTHONPATH=str(mutants), MUTANT_UNDER_TEST=name)
        env.setdefault("KERAS_BACKEND", "jax")
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(work / "pytest.ini"),
        ]
        command += ["--rootdir=.", "-p", "no:xdist", "-x", "-q", *tests]
        run = subprocess.run(command, cwd=mutants, env=env)
        # pytest: 0 all passed (survived), 1 a test failed (killed).
        data["exit_code_by_key"][name] = run.returncode
        print(name, _status_of(run.returncode))
    meta.write_text(json.dumps(data))


def summarize(module, statuses):
    equivalent = EQUIVALENT.get(module, {})
    counts = {"mutants": len(statuses), "killed": 0, "survived": 0}
    counts.update(timeout=0, no_tests=0, not_checked=0, other=0)
    survivors = []
    seen_equivalent = {}
    for name, status in sorted(statuses.items()):
        short = name.rsplit(".", 1)[-1]
        if short in equivalent and status != "not checked":
            seen_equivalent[short] = equivalent[short]
            continue
        if status in KILLED:
            counts["killed"] += 1
        elif status in TIMEOUT:
            counts["timeout"] += 1
        elif status == "survived":
            counts["survived"] += 1
            survivors.append(name)
        elif status == "not checked":
            # A run stopped before reaching this mutant: the kill rate is
            # over the mutants checked only.
            counts["not_checked"] += 1
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
        "equivalent": seen_equivalent,
        "kill_rate": round(caught / scored, 4) if scored else None,
        "kill_rate_95": wilson_interval(caught, scored),
        "surviving": survivors,
    }


def wilson_interval(successes, trials, z=1.96):
    """95% Wilson score interval of a proportion (sampled kill rates)."""
    if not trials:
        return None
    p = successes / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials**2))
    denominator = 1 + z * z / trials
    return [
        round((centre - spread) / denominator, 4),
        round((centre + spread) / denominator, 4),
    ]


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
    parser.add_argument(
        "--timeout-multiplier",
        type=float,
        default=15.0,
        help="mutmut's timeout_multiplier (raise it on a loaded machine)",
    )
    parser.add_argument(
        "--timeout-constant",
        type=float,
        default=1.0,
        help="mutmut's timeout_constant in seconds (idem)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=None,
        help="run only this many mutants per module, drawn at random",
    )
    parser.add_argument("--seed", type=int, default=0, help="of --sample")
    parser.add_argument(
        "--recheck",
        nargs="+",
        default=None,
        metavar="MUTANT",
        help="with --workdir and one --module: rerun the current tests on "
        "these mutants of a kept run (after writing a test for them), then "
        "rescore",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="re-read a kept --workdir (after editing EQUIVALENT), no run",
    )
    args = parser.parse_args()
    modules = args.module or list(MODULE_TESTS)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault("modules", {})
    workdir = args.workdir or tempfile.mkdtemp(prefix="mutation-")
    if args.recheck:
        if not args.workdir or len(modules) != 1:
            parser.error("--recheck needs --workdir and one --module")
        module = modules[0]
        names = [
            n if n.startswith("keras_efficient.") else _full_name(module, n)
            for n in args.recheck
        ]
        recheck(_work_of(workdir, module), module, MODULE_TESTS[module], names)
        args.rescore = True
    try:
        for module in modules:
            if args.rescore:
                statuses = read_statuses(_work_of(workdir, module), module)
            else:
                statuses = run_module(
                    module,
                    MODULE_TESTS[module],
                    workdir,
                    args.max_children,
                    (args.timeout_multiplier, args.timeout_constant),
                    args.sample,
                    args.seed,
                )
            summary = summarize(module, statuses)
            summary["tests"] = MODULE_TESTS[module]
            if not args.rescore:
                summary["timeout_limit"] = {
                    "multiplier": args.timeout_multiplier,
                    "constant_s": args.timeout_constant,
                }
                summary["backend"] = os.environ.get("KERAS_BACKEND", "jax")
                if args.sample is not None:
                    summary["sample"] = {"size": args.sample, "seed": args.seed}
                # Before any test written for this run's survivors (and any
                # review): the unbiased figure for the tests as they were.
                summary["first_pass"] = {
                    key: summary[key]
                    for key in ("killed", "timeout", "survived", "no_tests")
                }
            else:
                previous = results["modules"].get(module, {})
                keys = ("timeout_limit", "backend", "sample", "first_pass")
                for key in keys:
                    if key in previous:
                        summary[key] = previous[key]
            # Re-read: another run may have written its modules meanwhile.
            if RESULTS.exists():
                results["modules"] = json.loads(RESULTS.read_text())["modules"]
            results["modules"][module] = summary
            print(
                module,
                json.dumps(
                    {
                        k: summary[k]
                        for k in summary
                        if k
                        in (
                            "mutants",
                            "killed",
                            "survived",
                            "timeout",
                            "kill_rate",
                        )
                    }
                ),
            )
            results["tool"] = "mutmut " + _mutmut_version()
            results["not_run"] = sorted(
                set(MODULE_TESTS) - set(results["modules"])
            )
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if not (args.keep or args.rescore) and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _full_name(module, short):
    """mutmut's name of a mutant from its short name in `EQUIVALENT`."""
    return (
        "keras_efficient."
        + module.removesuffix(".py").replace("/", ".")
        + "."
        + short
    )


def _mutmut_version():
    from importlib.metadata import version

    return version("mutmut")


if __name__ == "__main__":
    main()
