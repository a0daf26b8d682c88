"""Every fast path registered with `_backend.register_fast_path` against
its `keras.ops` reference: values and gradients, on the backend in use
(a fast path of another backend is checked when the suite runs there)."""

import contextlib

import keras
import numpy as np
import pytest
from keras import ops

from keras_efficient import _backend
from keras_efficient.distillation import _common
from keras_efficient.distillation import _cross_entropies as xe
from keras_efficient.distillation import _interpolation
from keras_efficient.distillation import _slam_teacher
from keras_efficient.distillation import slam
from keras_efficient.losses import SLaMLoss
from keras_efficient.losses import TeacherAccuracy

# Three knot tables of different lengths; the second has a repeated knot
# (a jump) and the third a single knot (constant).
TABLES = [
    ([0.0, 0.2, 0.5, 0.9], [0.3, 0.4, 0.8, 0.95]),
    ([0.1, 0.4, 0.4, 0.7, 1.0], [0.2, 0.3, 0.6, 0.7, 0.9]),
    ([0.5], [0.75]),
]

CASES = {
    # name -> (the keras.ops reference, a function making its input)
    "margin": (
        _common._margin_reductions,
        lambda rng: rng.dirichlet(np.full(7, 0.5), size=(5, 3)),
    ),
    "interpolate_tables": (
        lambda m: _interpolation._interpolate_compare(
            [_interpolation._padded(list(x), list(y)) for x, y in TABLES], m
        ),
        # Margins off the knots (the derivative is defined), beyond both
        # ends and on the repeated knot itself.
        lambda rng: np.concatenate(
            [rng.uniform(-0.2, 1.2, size=(29,)), [0.4, 0.2, 1.0]]
        ).reshape(4, 8),
    ),
}


def _fast_path(name):
    fast = _backend.fast_paths(name).get(keras.backend.backend())
    if name == "interpolate_tables" and fast is not None:
        tables = [_interpolation._padded(list(x), list(y)) for x, y in TABLES]
        return lambda m: fast(tables, m)
    return fast


def _value_and_grad(fn, x, dtype="float32"):
    """`fn(x)` and the gradient of `sum(fn(x) * w)` (a fixed `w`), with
    `x` made a tensor of `dtype`; both as float32 arrays."""
    backend = keras.backend.backend()
    x = ops.cast(np.asarray(x, "float32"), dtype)
    w = np.random.default_rng(1).normal(size=np.shape(fn(x))).astype("f4")
    if backend == "jax":
        import jax

        value = fn(x)
        grad = jax.grad(lambda x: (fn(x) * w).sum())(x)
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
            total = tf.reduce_sum(value * w)
        grad = tape.gradient(total, x)
    else:
        import torch

        x = x.detach().requires_grad_(True)
        value = fn(x)
        (value * torch.tensor(w)).sum().backward()
        grad = x.grad
        assert grad.dtype == x.dtype
    return (
        ops.convert_to_numpy(ops.cast(value, "float32")),
        ops.convert_to_numpy(ops.cast(grad, "float32")),
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_path_matches_reference(name):
    reference, make_input = CASES[name]
    fast = _fast_path(name)
    if fast is None:
        # No fast path here: dispatch must give the reference itself.
        assert _backend.dispatch(name, reference) is reference
        pytest.skip(f"no {name} fast path on {keras.backend.backend()}")
    x = make_input(np.random.default_rng(0))
    ref_value, ref_grad = _value_and_grad(reference, x)
    value, grad = _value_and_grad(fast, x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6)
    # The values are not trivially equal: the inputs reach several
    # segments / classes.
    assert np.ptp(ref_value) > 0.1 and np.abs(ref_grad).sum() > 0


def test_dispatch_takes_the_registered_backend_only():
    def reference(x):
        return "reference"

    _backend.register_fast_path("_test_only", "no-such-backend")(
        lambda x: "fast"
    )
    try:
        assert _backend.dispatch("_test_only", reference) is reference
        here = keras.backend.backend()
        _backend.register_fast_path("_test_only", here)(lambda x: "fast")
        assert _backend.dispatch("_test_only", reference)(0) == "fast"
    finally:
        _backend._REGISTERED.pop("_test_only")


def test_margin_and_interpolation_use_the_dispatch():
    """The public helpers give the reference's values on every backend."""
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.full(5, 0.5), size=16).astype("float32")
    expected = np.sort(probs, -1)[:, -1] - np.sort(probs, -1)[:, -2]
    np.testing.assert_allclose(
        ops.convert_to_numpy(_common.margin(probs)), expected, atol=1e-6
    )
    xs, ys = TABLES[0]
    m = rng.uniform(-0.1, 1.0, size=(16,)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(_interpolation.interpolate(xs, ys, m)),
        np.interp(m, xs, ys),
        atol=1e-6,
    )


def _output_stats_inputs():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(6, 0.5), size=8).astype("float32")
    logits = rng.normal(size=(8, 6)).astype("float32")
    padded = probs.copy()
    padded[2] = 0.0  # an all-zero row counts as summing to 1
    nan = logits.copy()
    nan[5, 1] = np.nan
    inf = probs.copy()
    inf[0, 0] = np.inf
    both = logits.copy()
    both[3, :2] = [np.inf, -np.inf]  # a row summing to NaN
    return [probs, logits, padded, nan, inf, both, probs.reshape(2, 4, 6)]


def test_output_stats_fast_path_matches_reference():
    """The convention checks' scalars (torch: read back in one transfer)
    equal the `keras.ops` reference's, and flag the same rows."""
    from keras_efficient import _distribution_checks as dc

    xs = _output_stats_inputs()
    reference = dc._output_stats([ops.convert_to_tensor(x) for x in xs])
    stats = dc.output_stats([ops.convert_to_tensor(x) for x in xs])
    if keras.backend.backend() == "torch":
        # Host floats, read back at once (not tensors).
        assert all(isinstance(s, float) for row in stats for s in row)
    for x, ref, got in zip(xs, reference, stats):
        ref = [float(ops.convert_to_numpy(s)) for s in ref]
        got = [float(ops.convert_to_numpy(s)) for s in got]
        np.testing.assert_array_equal(got[:4], ref[:4])
        sums = x.sum(-1)
        assert ref[4] == np.sum(~np.isfinite(sums))
        assert (got[4] > 0) == (ref[4] > 0)
    # Two tensors of one shape (a teacher's and a student's outputs):
    # torch reduces them stacked.
    for i in range(len(xs) - 2):
        pair = [ops.convert_to_tensor(x) for x in xs[i : i + 2]]
        for ref, got in zip(dc._output_stats(pair), dc.output_stats(pair)):
            ref = [float(ops.convert_to_numpy(s)) for s in ref]
            got = [float(ops.convert_to_numpy(s)) for s in got]
            np.testing.assert_array_equal(got[:4], ref[:4])
            assert (got[4] > 0) == (ref[4] > 0)
    # Tensors of different shapes (and a float64 one): torch reduces each
    # on its own, still in one transfer.
    ragged = [xs[3], xs[6], xs[2][:3].astype("float64"), xs[5][:, :4]]
    pair = [ops.convert_to_tensor(x) for x in ragged]
    ref_pair = dc._output_stats(pair)
    for ref, got in zip(ref_pair, dc.output_stats(pair)):
        ref = [float(ops.convert_to_numpy(s)) for s in ref]
        got = [float(ops.convert_to_numpy(s)) for s in got]
        np.testing.assert_array_equal(got[:4], ref[:4])
        assert (got[4] > 0) == (ref[4] > 0) == (ref[4] == 1.0)
    # Not trivially equal: the clean batches differ from the bad ones.
    assert float(ops.convert_to_numpy(reference[0][3])) <= 1.0 + 1e-6
    assert float(ops.convert_to_numpy(reference[1][0])) < 0.0
    assert float(ops.convert_to_numpy(reference[2][2])) > 0.99


def test_output_stats_compiled_matches_reference():
    """Under XLA (TensorFlow's fast path is for compiled steps): the same
    scalars as the reference compiled alike, NaN and infinity included."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow's XLA-compiled output_stats")
    import tensorflow as tf

    from keras_efficient import _distribution_checks as dc

    def compiled(fn):
        return tf.function(lambda a, b: fn([a, b]), jit_compile=True)

    xs = _output_stats_inputs()[:6]
    for a, b in zip(xs, xs[1:]):
        ref = compiled(dc._output_stats)(a, b)
        got = compiled(dc.output_stats)(a, b)
        for x, r, g in zip((a, b), ref, got):
            r = [float(s) for s in r]
            g = [float(s) for s in g]
            np.testing.assert_array_equal(g[:4], r[:4])
            finite = bool(np.all(np.isfinite(x.sum(-1))))
            assert (g[4] > 0) == (r[4] > 0) == (not finite)


def test_output_stats_checks_agree_on_every_input():
    """Each problem built from the fast path's scalars is bad exactly when
    the one built from the reference's is."""
    from keras_efficient import _distribution_checks as dc

    for x in _output_stats_inputs():
        t = ops.convert_to_tensor(x)
        for stats in (dc._output_stats([t])[0], dc.output_stats([t])[0]):
            bads = [
                dc.probabilities_problem(t, "x", "", stats=stats).bad,
                dc.not_probabilities_problem(t, "x", "", stats=stats).bad,
                dc.non_finite_problem(t, "x", stats=stats).bad,
            ]
            got = [bool(ops.convert_to_numpy(b)) for b in bads]
            sums = x.sum(-1)
            finite = bool(np.all(np.isfinite(sums)))
            on_simplex = finite and bool(
                x.min() >= -1e-3
                and x.max() <= 1 + 1e-3
                and np.all(np.abs(np.where(sums == 0, 1, sums) - 1) <= 1e-3)
            )
            assert got == [not on_simplex, on_simplex, not finite], x


def test_khot_pairwise_fast_path_matches_reference():
    """SLaM's k-hot mask: the same classes, ties to the lowest index."""
    rng = np.random.default_rng(4)
    t = rng.dirichlet(np.full(7, 0.5), size=(6, 3)).astype("float32")
    t[0, 0, :4] = t[0, 0, 0]  # a four-way tie at the top
    t[1, 2] = 1.0 / 7.0  # all tied
    k = rng.integers(1, 7, size=(6, 3)).astype("int32")
    reference = ops.convert_to_numpy(_common._khot_pairwise(t, k))
    fast = _backend.dispatch("khot_pairwise", _common._khot_pairwise)
    got = ops.convert_to_numpy(fast(ops.convert_to_tensor(t), k))
    np.testing.assert_array_equal(got, reference)
    np.testing.assert_array_equal(reference.sum(-1), k)
    assert (
        reference[1, 2, : k[1, 2]].all()
        and not reference[1, 2, k[1, 2] :].any()
    )


# SLaM's per-example cross-entropy (`_cross_entropies`): the dispatched
# function against a float64 NumPy formula of the value and of its
# gradient to the student outputs (on every backend), and against the
# `keras.ops` reference (the same function off torch).
# Every fast path SLaM's loss takes (its checks' aside).
SLAM_FAST_PATHS = (
    "mixture_cross_entropy",
    "count_leading_below",
    "count_below_thresholds",
    "khot_pairwise",
    "margin",
    "interpolate_tables",
    "slam_teacher_side",
)


@contextlib.contextmanager
def _reference_only():
    """The `keras.ops` references of SLaM's fast paths inside the block."""
    saved = {
        n: _backend._REGISTERED.pop(n)
        for n in SLAM_FAST_PATHS
        if n in _backend._REGISTERED
    }
    try:
        yield
    finally:
        _backend._REGISTERED.update(saved)


def _np_log_probs(y, from_logits, floor):
    if from_logits:
        shifted = y - y.max(-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return np.log(np.maximum(y, floor))


def _np_to_outputs(grad_logp, y, logp, from_logits, floor):
    """The gradient to the outputs from the one to their log-probs."""
    if from_logits:
        return grad_logp - np.exp(logp) * grad_logp.sum(-1, keepdims=True)
    return np.where(y > floor, grad_logp / np.where(y > 0, y, 1.0), 0.0)


def _np_mixture(target, y, alpha, r, topk, from_logits, w):
    """SLaM's value and the gradient of `sum(value * w)` to `y`."""
    logf = _np_log_probs(y, from_logits, xe.TINY)
    r, alpha = r[..., None], alpha[..., None]
    shifted = np.log1p(-r) + logf
    mixed = np.logaddexp(np.log(np.maximum(r, xe.TINY)), shifted)
    logmix = np.log(alpha) + np.where(topk, mixed, logf)
    value = -(target * logmix).sum(-1)
    share = np.where(topk, np.exp(shifted - mixed), 1.0)
    grad_logf = -target * share * w[..., None]
    return value, _np_to_outputs(grad_logf, y, logf, from_logits, xe.TINY)


def _cross_entropy_inputs(from_logits, hard, rng):
    """Student outputs (rank 3, with exact zeros among the probabilities),
    a soft or one-hot target, alpha (some exactly 1: r = 0), r and a
    random mask of top-k classes."""
    shape = (4, 3, 6)
    if from_logits:
        y = 3.0 * rng.normal(size=shape)
    else:
        y = rng.dirichlet(np.full(6, 0.4), size=shape[:-1])
        y[0, 0, :2] = [0.0, 0.0]
        y[0, 0] /= y[0, 0].sum()
    target = rng.dirichlet(np.ones(6), size=shape[:-1])
    if hard:
        target = np.eye(6)[target.argmax(-1)]
    alpha = rng.uniform(0.55, 1.0, size=shape[:-1])
    alpha[1, :2] = 1.0
    r = (1.0 - alpha) / alpha
    topk = rng.random(shape) < 0.4
    f32 = lambda a: np.asarray(a, "float32")  # noqa: E731
    return f32(y), f32(target), f32(alpha), f32(r), topk


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("hard", [False, True])
def test_mixture_cross_entropy_matches_numpy_and_reference(
    hard, from_logits, dtype
):
    rng = np.random.default_rng(7)
    y, target, alpha, r, topk = _cross_entropy_inputs(from_logits, hard, rng)
    tensors = [ops.convert_to_tensor(a) for a in (target, alpha, r, topk)]

    def fn(x):
        return xe.mixture_cross_entropy(
            tensors[0], x, tensors[1], tensors[2], tensors[3], from_logits
        )

    value, grad = _value_and_grad(fn, y, dtype)
    with _reference_only():
        ref_value, ref_grad = _value_and_grad(fn, y, dtype)
    # The student outputs as the function saw them (rounded to `dtype`).
    seen = ops.convert_to_numpy(ops.cast(ops.cast(y, dtype), "float32"))
    w = np.random.default_rng(1).normal(size=y.shape[:-1]).astype("f4")
    expected = _np_mixture(
        target, seen.astype("f8"), alpha, r, topk, from_logits, w
    )
    # The gradient comes back in `dtype`: compare to its rounding (float16
    # overflows where a tiny probability divides it, as the reference).
    grad_tol = 1e-5 if dtype == "float32" else 1e-2
    expected_grad = ops.convert_to_numpy(
        ops.cast(ops.cast(expected[1].astype("f4"), dtype), "float32")
    )
    np.testing.assert_allclose(value, ref_value, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=grad_tol, atol=1e-6)
    np.testing.assert_allclose(value, expected[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        grad, expected_grad, rtol=grad_tol, atol=10 * grad_tol
    )
    # Not trivially equal: values spread, gradients reach nearly all rows.
    assert np.ptp(expected[0]) > 0.5
    assert np.mean(np.abs(expected[1]).sum(-1) > 1e-3) > 0.9


def _distillation_data(c=6, n=48, seed=5):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c) * 0.3, size=600)
    order = np.argsort(-p, -1)
    y = np.where(rng.random(600) < 0.6, order[:, 0], order[:, 1])
    est = TeacherAccuracy().fit(p, y)
    t = rng.dirichlet(np.ones(c) * 0.3, size=n).astype("float32")
    logits = (2.0 * rng.normal(size=(n, c))).astype("float32")
    return est, t, logits


LOSS_CASES = {
    "slam": dict(),  # per-example k(x)
    "slam_normalize": dict(normalize=True),
    "slam_hard": dict(target="hard", k=3),
    "slam_probabilities": dict(from_logits=False, normalize=True),
    "slam_no_estimator": dict(teacher_accuracy=None, k="global"),
}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("case", sorted(LOSS_CASES))
def test_slam_loss_matches_its_reference(case, dtype):
    """SLaM's per-example values and gradients to the student outputs with
    the fast paths equal those with the `keras.ops` references."""
    est, t, logits = _distillation_data()
    kwargs = {"teacher_accuracy": est, **LOSS_CASES[case]}
    loss = SLaMLoss(reduction="none", **kwargs)
    assert case != "slam" or loss._per_example()
    y = logits
    if not loss.from_logits:
        y = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    value, grad = _value_and_grad(lambda x: loss(t, x), y, dtype)
    with _reference_only():
        ref_value, ref_grad = _value_and_grad(lambda x: loss(t, x), y, dtype)
    grad_tol = 1e-5 if dtype == "float32" else 1e-2
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=grad_tol, atol=1e-5)
    assert np.ptp(value) > 0.1 and np.abs(grad).sum() > 1.0


def test_count_leading_below_matches_reference():
    """SLaM's k(x) count: the leading entries below the bound, stopping
    at the first that reaches it (later dips below do not count)."""
    values = np.array(
        [
            [0.5, 0.7, 0.96, 0.9, 0.8],  # reaches at 2, dips after: 2
            [0.99, 0.1, 0.1, 0.1, 0.1],  # reaches at once: 0
            [0.1, 0.2, 0.3, 0.4, 0.5],  # never: all 5
            [0.94, 0.95, 0.2, 0.2, 0.2],  # == bound reaches it: 1
        ],
        "float32",
    )
    expected = np.array([2, 0, 5, 1])
    count = _backend.dispatch("count_leading_below", slam._leading_below)
    reference = slam._leading_below(ops.convert_to_tensor(values), 0.95)
    got = count(ops.convert_to_tensor(values), 0.95)
    assert keras.backend.standardize_dtype(got.dtype) == "int32"
    assert keras.backend.standardize_dtype(reference.dtype) == "int32"
    np.testing.assert_array_equal(ops.convert_to_numpy(reference), expected)
    np.testing.assert_array_equal(ops.convert_to_numpy(got), expected)
    # Leading axes kept (sequence outputs).
    got = count(ops.convert_to_tensor(values.reshape(2, 2, 5)), 0.95)
    np.testing.assert_array_equal(ops.convert_to_numpy(got), [[2, 0], [5, 1]])


def test_count_below_thresholds_matches_reference():
    """SLaM's k(x) from coverage margins: how many thresholds exceed each
    margin (equal is not below; inf always exceeds, -inf never)."""
    thresholds = (np.inf, 0.6, 0.3, 0.3, -np.inf)
    margins = np.array([[0.0, 0.3], [0.5, 0.7]], "float32")
    expected = np.array([[4, 2], [2, 1]])
    count = _backend.dispatch("count_below_thresholds", slam._count_below)
    for fn in (count, slam._count_below):
        got = fn(ops.convert_to_tensor(margins), thresholds)
        assert keras.backend.standardize_dtype(got.dtype) == "int32"
        np.testing.assert_array_equal(ops.convert_to_numpy(got), expected)


def _teacher_side_estimator(decreasing=False):
    """Six classes; the top-k maps reach coverage 0.95 at margins 0.6
    (k = 2), 0.4, 0.2, 0.05 and always (k = 6), so k(x) takes every value
    from 2 to 6 over margins in [0, 1]. `decreasing`: the k = 3 map dips
    (k(x) then interpolates the maps: the torch path hands over)."""
    topk_knots = [
        [[0.0, 0.6, 1.0], [0.5, 0.95, 0.99]],
        [[0.0, 0.4, 1.0], [0.6, 0.95, 0.99]],
        [[0.0, 0.2, 1.0], [0.7, 0.95, 1.0]],
        [[0.0, 0.05, 1.0], [0.8, 0.95, 1.0]],
        [[0.0, 1.0], [1.0, 1.0]],
    ]
    if decreasing:
        topk_knots[1] = [[0.0, 0.4, 1.0], [0.6, 0.97, 0.96]]
    return TeacherAccuracy(
        knots_x=[0.0, 0.25, 0.25, 1.0],  # a jump at 0.25
        knots_y=[0.3, 0.6, 0.8, 0.95],
        topk_accuracy=[0.6, 0.8, 0.9, 0.95, 0.98, 1.0],
        topk_knots=topk_knots,
    )


TEACHER_SIDE_CASES = {
    "per_example": dict(),
    "per_example_normalize": dict(normalize=True),
    "per_example_min_alpha": dict(min_alpha=0.8),
    "per_example_normalize_min_alpha": dict(normalize=True, min_alpha=0.3),
    "k_fixed": dict(k=3),
    "k_fixed_normalize": dict(k=4, normalize=True),
    "k_global": dict(k="global"),
    "no_estimator": dict(teacher_accuracy=None),
    "no_estimator_normalize_k": dict(
        teacher_accuracy=None, k=5, normalize=True
    ),
    "decreasing_map": dict(teacher_accuracy="decreasing", normalize=True),
}


def _teacher_side_probs():
    """Teacher rows over the whole margin range, with ties: a three-way
    tie at the top (margin 0), all tied, two tied at the top and one
    tied below at the k-th place; one row's margin is exactly alpha(x)'s
    repeated knot."""
    rng = np.random.default_rng(7)
    top = np.linspace(0.17, 0.98, 40)
    t = rng.dirichlet(np.ones(6), size=40) * (1 - top)[:, None]
    t[np.arange(40), rng.integers(0, 6, 40)] += top
    t[0] = [0.1, 0.25, 0.1, 0.25, 0.25, 0.05]
    t[1] = 1.0 / 6.0
    t[2] = [0.3, 0.05, 0.3, 0.15, 0.15, 0.05]
    t[3] = [0.1, 0.1, 0.1, 0.6, 0.05, 0.05]
    t[4] = [0.125, 0.5, 0.25, 0.125, 0.0, 0.0]  # margin 0.25: the jump
    return (t / t.sum(-1, keepdims=True)).astype("float32")


@pytest.mark.parametrize("case", sorted(TEACHER_SIDE_CASES))
def test_slam_teacher_side_matches_reference(case):
    """SLaM's teacher side through the dispatch (torch: one fast path)
    gives the reference's k-hot mask, alpha(x) and r exactly."""
    kwargs = dict(TEACHER_SIDE_CASES[case])
    est = kwargs.pop("teacher_accuracy", "monotone")
    if est is not None:
        est = _teacher_side_estimator(decreasing=est == "decreasing")
    loss = SLaMLoss(teacher_accuracy=est, **kwargs)
    t = ops.convert_to_tensor(_teacher_side_probs())
    covered = _slam_teacher._plan_key(loss, 6) is not None
    assert covered == (case != "decreasing_map")
    ref = [ops.convert_to_numpy(x) for x in _slam_teacher._reference(loss, t)]
    got = [ops.convert_to_numpy(x) for x in _slam_teacher.teacher_side(loss, t)]
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[2], ref[2])
    k = ref[0].sum(-1)
    if case.startswith("per_example") or case == "decreasing_map":
        assert set(k.tolist()) >= {2, 3, 4, 5, 6}
    elif case == "k_global":
        assert set(k.tolist()) == {4}  # topk_accuracy[3] = 0.95
    else:
        fixed = {"k_fixed": 3, "k_fixed_normalize": 4, "no_estimator": 2}
        assert set(k.tolist()) == {fixed.get(case, 5)}
    # Ties go to the lowest class index.
    top3 = {2: [0, 1, 0, 1, 0, 0], 3: [0, 1, 0, 1, 1, 0]}
    if k[0] in top3:
        np.testing.assert_array_equal(ref[0][0], top3[k[0]])
    np.testing.assert_array_equal(ref[0][1], np.arange(6) < k[1])
    # alpha(x) floored, as `SLaMLoss.alpha` says.
    gap = 0.05 if loss.min_alpha is None else 1e-3
    floor = 1.0 / k + gap if loss.normalize else 0.5 + gap
    floor = np.maximum(np.minimum(floor, 1.0), loss.min_alpha or 0.0)
    assert np.all(ref[1] >= floor - 1e-6) and np.ptp(ref[1]) > 0.05
    # Sequence outputs (batch, time, classes): the same, row by row.
    seq = ops.reshape(t, (8, 5, 6))
    for got, want in zip(_slam_teacher.teacher_side(loss, seq), ref):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(got), want.reshape((8, 5) + want.shape[1:])
        )
    norm = k - 1.0 if loss.normalize else 1.0
    np.testing.assert_allclose(
        ref[2], (1 - ref[1]) / (ref[1] * norm), rtol=1e-6
    )
