"""The keras.ops masks (compiled step) equal the NumPy reference."""

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
        got = mask_ops.compute_masks(
            [keras.ops.convert_to_tensor(k) for k in kernels],
            keras.ops.convert_to_tensor(sparsity, "float32"),
            **case,
        )
        for r, g in zip(ref, got):
            np.testing.assert_array_equal(r, keras.ops.convert_to_numpy(g))


@pytest.mark.parametrize("ties", [False, True])
def test_ops_n_m_equal_numpy_reference(ties):
    kernels = [k for k in _kernels(1, ties) if k.ndim > 1]
    kernels = [k.reshape(-1, k.shape[-1])[:12] for k in kernels]
    for sparsity in (0.0, 0.5):
        ref = masks_lib.compute_masks(kernels, sparsity, "n_m", n_m=(2, 4))
        got = mask_ops.compute_masks(kernels, sparsity, "n_m", n_m=(2, 4))
        for r, g in zip(ref, got):
            np.testing.assert_array_equal(r, keras.ops.convert_to_numpy(g))


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
