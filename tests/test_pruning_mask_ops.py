"""The keras.ops masks (compiled step) equal the NumPy reference."""

import functools

import keras
import numpy as np
import pytest

from keras_efficient.pruning import ConstantSparsity
from keras_efficient.pruning import IterativePruning
from keras_efficient.pruning import PolynomialDecay
from keras_efficient.pruning import mask_ops
from keras_efficient.pruning import masks as masks_lib

SHAPES = [(12, 8), (3, 4, 6), (2, 3, 4, 5), (7,)]


def _kernels(seed, ties):
    rng = np.random.default_rng(seed)
    out = []
    for shape in SHAPES:
        if ties:  # few distinct magnitudes: many exact ties, exact sums
            w = rng.integers(-3, 4, size=shape).astype("float32")
        else:
            w = rng.normal(size=shape).astype("float32")
        out.append(w)
    return out


def _compute_masks(kernels, sparsity, *args, **kwargs):
    """`mask_ops.compute_masks`, compiled on JAX as in a train step (one
    program per case, the sparsity an argument; eager JAX compiles every
    op for every new shape, most of this file's time)."""
    return _compiled(args, tuple(sorted(kwargs.items())))(
        [keras.ops.convert_to_tensor(k) for k in kernels],
        keras.ops.convert_to_tensor(sparsity, "float32"),
    )


@functools.cache
def _compiled(args, kwargs):
    def fn(kernels, sparsity):
        return mask_ops.compute_masks(kernels, sparsity, *args, **dict(kwargs))

    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    return fn


CASES = [
    dict(structure="unstructured"),
    dict(structure="unstructured", scope="global"),
    dict(structure="block", block=(2, 3)),
    dict(structure="block", block=(4, 1), pooling="max"),
    dict(structure="block", block=(2, 2), scope="global"),
    dict(structure="filter"),
    dict(structure="filter", scope="global"),
]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_ops_masks_equal_numpy_reference(case, ties):
    kernels = _kernels(0, ties)
    for sparsity in (0.0, 0.3, 0.5, 0.75, 0.9, 0.99):
        ref = masks_lib.compute_masks(kernels, sparsity, **case)
        got = _compute_masks(kernels, sparsity, **case)
        for r, g in zip(ref, got):
            np.testing.assert_array_equal(r, keras.ops.convert_to_numpy(g))


N_M_SHAPES = [(12, 8), (6, 5), (3, 3, 6, 4), (3, 3, 7, 2), (2, 10, 3), (7,)]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n_m", [(2, 4), (1, 4), (3, 8), (1, 2)])
def test_ops_n_m_equal_numpy_reference(ties, n_m):
    # Input channels (axis -2) both multiples of m and not (6, 7, 10).
    rng = np.random.default_rng(1)
    for shape in N_M_SHAPES:
        if ties:
            w = rng.integers(-2, 3, size=shape).astype("float32")
        else:
            w = rng.normal(size=shape).astype("float32")
        for sparsity in (0.0, 0.5):
            (ref,) = masks_lib.compute_masks([w], sparsity, "n_m", n_m=n_m)
            (got,) = _compute_masks([w], sparsity, "n_m", n_m=n_m)
            np.testing.assert_array_equal(ref, keras.ops.convert_to_numpy(got))


def tfmot_m_by_n_mask(weights, m_by_n):
    """NumPy transcription of tfmot's rule (`pruning_utils`:
    `weights_rearrange`, `generate_m_by_n_mask`,
    `m_by_n_sparsity_mask_prepare`): `m_by_n = (zeros, block)`; Dense
    `(in, out)` and Conv2D `(h, w, in, out)` kernels become rows
    `(out[, h, w], in)`, each row is zero-padded to a multiple of `block`
    and every block keeps its `block - zeros` largest |w| (`top_k`: ties
    to the lower index)."""
    zeros, block = m_by_n
    w = np.abs(weights)
    if w.ndim == 2:
        rows = w.T
    else:
        rows = np.transpose(w, (3, 0, 1, 2)).reshape(-1, w.shape[2])
    pad = -(-rows.shape[1] // block) * block - rows.shape[1]
    padded = np.pad(rows, ((0, 0), (0, pad)))
    blocks = padded.reshape(-1, block)
    mask = np.zeros_like(blocks)
    for i, values in enumerate(blocks):
        top = sorted(range(block), key=lambda j: (-values[j], j))
        mask[i, top[: block - zeros]] = 1.0
    mask = mask.reshape(padded.shape)[:, : rows.shape[1]]
    if w.ndim == 2:
        return mask.T
    h, wd, cin, cout = w.shape
    return np.transpose(mask.reshape(cout, h, wd, cin), (1, 2, 3, 0))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("m_by_n", [(2, 4), (3, 4), (1, 2), (5, 8)])
def test_n_m_equals_tfmot_rule(ties, m_by_n):
    rng = np.random.default_rng(2)
    for shape in [(12, 8), (6, 5), (9, 3), (3, 3, 6, 4), (2, 3, 7, 5)]:
        if ties:
            w = rng.integers(-2, 3, size=shape).astype("float32")
        else:
            w = rng.normal(size=shape).astype("float32")
        want = tfmot_m_by_n_mask(w, m_by_n)
        (ours,) = masks_lib.compute_masks(
            [w], 0.5, "n_m", sparsity_m_by_n=m_by_n
        )
        np.testing.assert_array_equal(ours, want)
        n_m = (m_by_n[1] - m_by_n[0], m_by_n[1])
        (got,) = _compute_masks([w], 0.5, "n_m", n_m=n_m)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)


def test_n_m_partial_group_keeps_min_n_r():
    # 6 input channels, 2:4: groups [0:4] (keeps 2) and [4:6] (keeps both).
    w = np.arange(1, 7, dtype="float32")[:, None] * np.ones((1, 3), "float32")
    (mask,) = masks_lib.compute_masks([w], 0.5, "n_m", n_m=(2, 4))
    np.testing.assert_array_equal(mask[:, 0], [0, 0, 1, 1, 1, 1])
    # 1 input channel left over with 1:4: it keeps its one weight.
    w = np.array([4, 3, 2, 1, 5], "float32")[:, None]
    (mask,) = masks_lib.compute_masks([w], 0.5, "n_m", n_m=(1, 4))
    np.testing.assert_array_equal(mask[:, 0], [1, 0, 0, 0, 1])


def test_n_m_conv_groups_along_input_channels_per_position():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 3, 8, 5)).astype("float32")
    (mask,) = masks_lib.compute_masks([w], 0.5, "n_m", n_m=(2, 4))
    groups = mask.reshape(3, 3, 2, 4, 5).sum(axis=3)  # per (h, w, group, out)
    np.testing.assert_array_equal(groups, 2)
    # The two largest |w| of each group are the ones kept.
    a = np.abs(w).reshape(3, 3, 2, 4, 5)
    kept_min = np.where(mask.reshape(a.shape) > 0, a, np.inf).min(axis=3)
    pruned_max = np.where(mask.reshape(a.shape) > 0, -np.inf, a).max(axis=3)
    assert np.all(kept_min > pruned_max)


def test_n_m_spellings_and_validation():
    w = np.random.default_rng(4).normal(size=(8, 4)).astype("float32")
    (ours,) = masks_lib.compute_masks([w], 0.5, "n_m", n_m=(1, 4))
    (tfmot,) = masks_lib.compute_masks([w], 0.5, "n_m", sparsity_m_by_n=(3, 4))
    np.testing.assert_array_equal(ours, tfmot)
    assert ours.sum() == 8  # one nonzero in each of the 8 groups of 4
    with pytest.raises(ValueError, match="not both"):
        masks_lib.compute_masks(
            [w], 0.5, "n_m", n_m=(2, 4), sparsity_m_by_n=(2, 4)
        )
    with pytest.raises(ValueError, match="sparsity_m_by_n"):
        masks_lib.compute_masks([w], 0.5, "n_m", sparsity_m_by_n=(4, 4))
    with pytest.raises(ValueError, match="n_m"):
        masks_lib.compute_masks([w], 0.5, "n_m")


def test_keep_count_matches_reference_at_half_way_points():
    for n in (5, 7, 10, 101, 4096):
        for s in np.linspace(0.0, 0.95, 39):
            got = mask_ops.keep_count(n, keras.ops.convert_to_tensor(s))
            assert int(got) == masks_lib.keep_count(n, s)


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSparsity(0.6, begin_step=3, end_step=40, frequency=4),
        PolynomialDecay(0.1, 0.8, begin_step=2, end_step=30, frequency=3),
        IterativePruning([0.2, 0.5, 0.7], steps_per_cycle=6, begin_step=4),
    ],
)
def test_tensor_call_equals_python_call(schedule):
    for step in range(0, 60):
        should, sparsity = schedule.tensor_call(
            keras.ops.convert_to_tensor(step)
        )
        py_should, py_sparsity = schedule(step)
        assert bool(should) == py_should, step
        assert float(sparsity) == pytest.approx(py_sparsity, abs=1e-6), step


@pytest.mark.parametrize(
    "shape, axis, parts, unit",
    [
        ((6, 12), 1, 1, 1),
        ((6, 12), 1, 3, 2),
        ((4, 5, 6), 0, 1, 2),
        ((8,), 0, 2, 1),
    ],
)
def test_axis_unit_scores_and_mask_match_numpy(shape, axis, parts, unit):
    """Scores and masks of units along one axis (Transformer widths, fused
    query-key-value kernels) equal the NumPy reference."""
    w = np.random.default_rng(0).normal(size=shape).astype("float32")
    expected = masks_lib.axis_unit_scores(w, axis, parts, unit)
    got = keras.ops.convert_to_numpy(
        mask_ops.axis_unit_scores(
            keras.ops.convert_to_tensor(w), axis, parts, unit
        )
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    keep = expected > np.median(expected)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(
            mask_ops.axis_units_to_mask(keep, shape, axis, parts, unit)
        ),
        masks_lib.axis_units_to_mask(keep, shape, axis, parts, unit),
    )


def test_axis_unit_scores_default_is_one_part_of_single_elements():
    w = np.random.default_rng(1).normal(size=(5, 6)).astype("float32")
    got = mask_ops.axis_unit_scores(keras.ops.convert_to_tensor(w), 1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got), np.abs(w).sum(0), rtol=1e-6
    )


def test_block_masks_default_to_average_pooling_and_their_threshold():
    """Block scores are block means unless `pooling` says otherwise, and
    the threshold is the smallest kept block mean (NumPy written here)."""
    w = np.random.default_rng(2).normal(size=(8, 6)).astype("float32")
    mask = masks_lib.compute_masks([w], 0.5, "block", block=(2, 3))[0]
    avg = masks_lib.compute_masks(
        [w], 0.5, "block", block=(2, 3), pooling="avg"
    )[0]
    np.testing.assert_array_equal(mask, avg)
    means = np.abs(w).reshape(4, 2, 2, 3).mean(axis=(1, 3))
    kept = mask.reshape(4, 2, 2, 3)[:, 0, :, 0] == 1
    assert kept.sum() == 4
    np.testing.assert_array_equal(
        np.sort(means[kept]), np.sort(means.ravel())[4:]
    )
    (threshold,) = masks_lib.mask_thresholds([w], [mask], "block", block=(2, 3))
    assert threshold == pytest.approx(means[kept].min(), rel=1e-6)


def test_tfmot_n_m_spelling_error_says_what_is_allowed():
    with pytest.raises(ValueError, match="0 < zeros < m"):
        masks_lib.resolve_n_m(sparsity_m_by_n=(4, 4))
    with pytest.raises(ValueError, match="`pooling` must be one of"):
        masks_lib.compute_masks(
            [np.ones((4, 4), "float32")],
            0.5,
            "block",
            block=(2, 2),
            pooling="mean",
        )
