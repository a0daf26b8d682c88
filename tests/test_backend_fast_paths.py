"""Every fast path registered with `_backend.register_fast_path` against
its `keras.ops` reference: values and gradients, on the backend in use
(a fast path of another backend is checked when the suite runs there)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_efficient import _backend
from keras_efficient.distillation import _common
from keras_efficient.distillation import _interpolation

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


def _value_and_grad(fn, x):
    """`fn(x)` and the gradient of `sum(fn(x) * w)` (a fixed `w`)."""
    backend = keras.backend.backend()
    x = np.asarray(x, "float32")
    w = np.random.default_rng(1).normal(size=np.shape(fn(x))).astype("f4")
    if backend == "jax":
        import jax

        value = fn(x)
        grad = jax.grad(lambda x: (fn(x) * w).sum())(x)
    elif backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
            total = tf.reduce_sum(value * w)
        grad = tape.gradient(total, x)
    else:
        import torch

        x = torch.tensor(x, requires_grad=True)
        value = fn(x)
        (value * torch.tensor(w)).sum().backward()
        grad = x.grad
    return ops.convert_to_numpy(value), ops.convert_to_numpy(grad)


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
