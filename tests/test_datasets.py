import numpy as np
import pytest

from keras_efficient import datasets


def test_mnist1d_is_deterministic_and_shaped():
    (x, y), (xt, yt) = datasets.load_mnist1d(num_train=300, num_test=100)
    (x2, _), _ = datasets.load_mnist1d(num_train=300, num_test=100)
    assert x.shape == (300, 40, 1) and xt.shape == (100, 40, 1)
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(x, x2)
    assert set(np.unique(y)) <= set(range(10))
    assert len(np.unique(y)) == 10


def test_mnist1d_seed_changes_data():
    (x1, _), _ = datasets.load_mnist1d(num_train=50, num_test=10, seed=1)
    (x2, _), _ = datasets.load_mnist1d(num_train=50, num_test=10, seed=2)
    assert not np.allclose(x1, x2)


def test_mnist1d_splits_are_disjoint_slices():
    splits = datasets.load_mnist1d_splits(100, 50, 200, 60, seed=3)
    sizes = [
        len(s[0])
        for s in (
            splits.labeled,
            splits.validation,
            splits.unlabeled,
            splits.test,
        )
    ]
    assert sizes == [100, 50, 200, 60]
    everything = np.concatenate(
        [
            splits.labeled[0],
            splits.validation[0],
            splits.unlabeled[0],
            splits.test[0],
        ]
    )
    flat = everything.reshape(len(everything), -1)
    assert len(np.unique(flat, axis=0)) == len(flat)


def test_digits_split_and_range():
    (x, y), (xt, yt) = datasets.load_digits(num_test=297, seed=0)
    assert x.shape == (1500, 8, 8, 1) and xt.shape == (297, 8, 8, 1)
    assert 0.0 <= x.min() and x.max() <= 1.0
    (x2, _), _ = datasets.load_digits(num_test=297, seed=1)
    assert not np.array_equal(x, x2)


def test_stdlib_text_and_windows():
    train, val = datasets.load_stdlib_text(
        max_bytes=50_000, validation_fraction=0.1
    )
    assert len(train) == 45_000 and len(val) == 5_000
    assert train.dtype == np.uint8
    assert b"def " in train.tobytes()
    x, y = datasets.lm_windows(train, 32, 16, seed=0)
    assert x.shape == y.shape == (16, 32)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    paths = datasets.stdlib_source_files()
    assert not any("site-packages" in p for p in paths)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: datasets.load_mnist1d(num_train=0), "num_train"),
        (
            lambda: datasets.load_mnist1d_splits(num_unlabeled=-1),
            "num_unlabeled",
        ),
        (lambda: datasets.load_digits(num_test=5000), "num_test"),
        (
            lambda: datasets.load_stdlib_text(validation_fraction=1.5),
            "validation_fraction",
        ),
        (lambda: datasets.lm_windows(np.arange(10), 20, 2), "data"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_loaders_return_fresh_arrays():
    # A user's in-place edit must not change the next call's data.
    (x, y), _ = datasets.load_mnist1d(num_train=20, num_test=5)
    x[:] = 0.0
    y[:] = -1
    (x2, y2), _ = datasets.load_mnist1d(num_train=20, num_test=5)
    assert np.abs(x2).sum() > 0 and (y2 >= 0).all()
    (d, _), _ = datasets.load_digits()
    d[:] = -5.0
    (d2, _), _ = datasets.load_digits()
    assert d2.min() >= 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_train": "10"},
        {"num_train": 2.5},
        {"num_train": True},
        {"num_test": 0},
        {"seed": -1},
        {"seed": "a"},
        {"channels_last": "yes"},
    ],
)
def test_mnist1d_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        datasets.load_mnist1d(**{"num_train": 10, "num_test": 5, **kwargs})


def test_numpy_integers_are_accepted():
    (x, _), _ = datasets.load_mnist1d(
        num_train=np.int64(10), num_test=np.int32(5)
    )
    assert x.shape[0] == 10
