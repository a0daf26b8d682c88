import os

import keras
import numpy as np
import pytest

from keras_efficient.callbacks import MagnitudePruning
from keras_efficient.pruning import ConstantSparsity
from keras_efficient.pruning import PolynomialDecay
from keras_efficient.pruning import sparsity_report
from keras_efficient.pruning import strip_pruning
from tests.callback_harness import classification_data
from tests.callback_harness import fit

DATA = classification_data(input_shape=(8, 4))


def _model(seed=0, kind="sequential"):
    keras.utils.set_random_seed(seed)
    if kind == "functional":
        inp = keras.Input((8, 4))
        h = keras.layers.Conv1D(8, 3, padding="same", activation="relu")(inp)
        h = keras.layers.Flatten()(h)
        h = keras.layers.Dense(16, activation="relu")(h)
        return keras.Model(inp, keras.layers.Dense(3)(h))
    if kind == "subclassed":

        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.f = keras.layers.Flatten()
                self.d1 = keras.layers.Dense(16, activation="relu")
                self.d2 = keras.layers.Dense(3)

            def call(self, x):
                return self.d2(self.d1(self.f(x)))

        m = Net()
        m(np.zeros((1, 8, 4), "float32"))
        return m
    return keras.Sequential(
        [
            keras.Input((8, 4)),
            keras.layers.Conv1D(8, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


def _fit(model, cb, epochs=2, optimizer="adam", extra=()):
    return fit(model, [cb, *extra], DATA, epochs, optimizer=optimizer)


def _kernels(cb):
    return [
        keras.ops.convert_to_numpy(lay.kernel.value) for lay in cb.target_layers
    ]


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_layer_sparsity_exact_and_stays_zero(kind):
    model = _model(kind=kind)
    # tfmot steps: batch 0 runs at step 1, so begin = end = 1 prunes once,
    # before the first batch.
    cb = MagnitudePruning(ConstantSparsity(0.75, begin_step=1, end_step=1))
    hist = _fit(model, cb, epochs=3)  # 12 Adam steps after pruning at 1
    for w in _kernels(cb):
        k = max(round(w.size * 0.25), 1)
        assert np.count_nonzero(w) == k
    assert hist.history["pruning_sparsity"][-1] == pytest.approx(0.75, 0.02)
    assert hist.history["pruning_target_sparsity"][-1] == 0.75


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masked_weights_stay_zero_momentum(optimizer):
    model = _model()
    opt = (
        keras.optimizers.SGD(0.1, momentum=0.9)
        if optimizer == "sgd"
        else keras.optimizers.Adam(0.01)
    )
    cb = MagnitudePruning(ConstantSparsity(0.5, begin_step=2, end_step=2))
    _fit(model, cb, epochs=4, optimizer=opt)
    for w, m in zip(_kernels(cb), cb.mask_variables):
        m = keras.ops.convert_to_numpy(m)
        assert np.all(w[m == 0] == 0)
        assert m.mean() == pytest.approx(0.5, abs=0.01)


def test_global_scope():
    model = _model()
    cb = MagnitudePruning(ConstantSparsity(0.9, 1, 1), scope="global")
    _fit(model, cb, epochs=1)
    ws = _kernels(cb)
    n = sum(w.size for w in ws)
    assert sum(np.count_nonzero(w) for w in ws) == round(n * 0.1)
    assert len({round(float((w == 0).mean()), 3) for w in ws}) > 1


def test_n_m_block_filter_patterns():
    model = _model()
    cb = MagnitudePruning(
        ConstantSparsity(0.5, 1, 1),
        n_m=(2, 4),
        targets=lambda lay: isinstance(lay, keras.layers.Dense),
    )
    _fit(model, cb, epochs=1)
    for w in _kernels(cb):
        g = w.reshape(-1, 4, w.shape[-1])
        assert np.all((g != 0).sum(axis=1) == 2)

    model = _model()
    cb = MagnitudePruning(
        ConstantSparsity(0.5, 1, 1),
        block=(4, 1),
        targets=lambda lay: isinstance(lay, keras.layers.Dense),
    )
    _fit(model, cb, epochs=1)
    for w in _kernels(cb):
        b = (w != 0).reshape(w.shape[0] // 4, 4, w.shape[1], 1)
        per_block = b.sum(axis=(1, 3))
        assert set(np.unique(per_block)) <= {0, 4}
        assert (per_block == 0).mean() == pytest.approx(0.5)

    model = _model()
    cb = MagnitudePruning(ConstantSparsity(0.5, 1, 1), structure="filter")
    _fit(model, cb, epochs=1)
    for w in _kernels(cb):
        cols = w.reshape(-1, w.shape[-1])
        nz = (cols != 0).any(axis=0)
        assert nz.sum() == max(round(cols.shape[1] * 0.5), 1)
        assert np.all(cols[:, ~nz] == 0)


def test_polynomial_prunes_on_schedule():
    model = _model()
    cb = MagnitudePruning(PolynomialDecay(0.0, 0.8, 0, 8, frequency=2))
    hist = _fit(model, cb, epochs=3)
    assert hist.history["pruning_target_sparsity"][-1] == pytest.approx(0.8)
    assert hist.history["pruning_sparsity"][-1] == pytest.approx(0.8, 0.02)


def test_strip_and_report(tmp_path):
    model = _model(kind="functional")
    cb = MagnitudePruning(ConstantSparsity(0.8, 1, 1))
    _fit(model, cb, epochs=1)
    x = DATA[0][:8]
    stripped = strip_pruning(model)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(stripped(x)),
        keras.ops.convert_to_numpy(model(x)),
        atol=1e-5,
    )
    assert all(
        getattr(getattr(lay, "kernel", None), "constraint", None) is None
        for lay in stripped.layers
    )
    path = os.path.join(tmp_path, "m.keras")
    stripped.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(model(x)),
        atol=1e-5,
    )
    rep = sparsity_report(loaded)
    assert rep["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert set(rep["layers"]) == {w.path for w in cb.target_weights.values()}
    assert rep["compressed_bytes"] < rep["dense_bytes"]
    assert rep["nonzero"] == sum(np.count_nonzero(w) for w in _kernels(cb))


def test_errors():
    with pytest.raises(ValueError, match="scope"):
        MagnitudePruning(ConstantSparsity(0.5, 0), scope="model")
    with pytest.raises(ValueError, match="n_m"):
        MagnitudePruning(ConstantSparsity(0.5, 0), n_m=(4, 2))
    with pytest.raises(ValueError, match="block"):
        MagnitudePruning(ConstantSparsity(0.5, 0), structure="block")
    with pytest.raises(ValueError, match="schedule"):
        MagnitudePruning(0.5)
    cb = MagnitudePruning(ConstantSparsity(0.5, 0), targets=["nope"])
    with pytest.raises(ValueError, match="nope"):
        _fit(_model(), cb, epochs=1)
    config = MagnitudePruning(ConstantSparsity(0.5, 0), n_m=(2, 4)).get_config()
    back = MagnitudePruning.from_config(config)
    assert back.n_m == (2, 4) and back.schedule.target_sparsity == 0.5


class _KernelsAtEpochEnd(keras.callbacks.Callback):
    """Records the logs and the target kernels at every epoch end (runs
    after `MagnitudePruning`, so its logs are already there)."""

    def __init__(self, pruning):
        super().__init__()
        self.pruning = pruning
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.model  # noqa: B018 (on JAX, syncs the jitted state back)
        self.seen.append((dict(logs), _kernels(self.pruning)))


def _kth_largest(values, sparsity):
    values = np.sort(np.concatenate([v.ravel() for v in values]))[::-1]
    return float(values[max(round(values.size * (1 - sparsity)), 1) - 1])


def test_threshold_logs_layer_scope(tmp_path):
    cb = MagnitudePruning(ConstantSparsity(0.75, begin_step=1, frequency=1))
    rec = _KernelsAtEpochEnd(cb)
    csv = os.path.join(tmp_path, "log.csv")
    hist = _fit(_model(), cb, extra=(rec, keras.callbacks.CSVLogger(csv)))
    keys = {f"pruning_threshold/{p}" for p in cb.target_weights}
    assert keys <= set(hist.history) and "pruning_threshold" not in hist.history
    for logs, kernels in rec.seen:
        for path, w in zip(cb.target_weights, kernels):
            t = logs[f"pruning_threshold/{path}"]
            # frequency=1: the masks were just computed from these kernels,
            # so the threshold is tfmot's, the k-th largest |w| ...
            assert t == pytest.approx(_kth_largest([np.abs(w)], 0.75), 1e-6)
            # ... the smallest kept |w|, every pruned weight (zero) below.
            assert t == np.abs(w[w != 0]).min() and t > 0
    header = open(csv).readline().strip().split(",")
    assert keys <= set(header)


def test_threshold_logs_global_scope_and_filters():
    cb = MagnitudePruning(
        ConstantSparsity(0.8, begin_step=1, frequency=1), scope="global"
    )
    rec = _KernelsAtEpochEnd(cb)
    hist = _fit(_model(), cb, epochs=1, extra=(rec,))
    assert not [k for k in hist.history if k.startswith("pruning_threshold/")]
    logs, kernels = rec.seen[-1]
    want = _kth_largest([np.abs(w) for w in kernels], 0.8)
    assert logs["pruning_threshold"] == pytest.approx(want, 1e-6)

    cb = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=1, frequency=1), structure="filter"
    )
    rec = _KernelsAtEpochEnd(cb)
    _fit(_model(), cb, epochs=1, extra=(rec,))
    logs, kernels = rec.seen[-1]
    for path, w in zip(cb.target_weights, kernels):
        norms = np.abs(w.reshape(-1, w.shape[-1])).sum(axis=0)
        t = logs[f"pruning_threshold/{path}"]
        assert t == pytest.approx(_kth_largest([norms], 0.5), 1e-5)
        assert t == pytest.approx(norms[norms > 0].min(), 1e-6)


def test_threshold_zero_before_pruning_and_absent_for_n_m():
    late = ConstantSparsity(0.5, begin_step=10_000)
    hist = _fit(_model(), MagnitudePruning(late), epochs=1)
    values = [v for k, v in hist.history.items() if "threshold" in k]
    assert len(values) == 3 and all(v == [0.0] for v in values)
    cb = MagnitudePruning(ConstantSparsity(0.5, 1, 1), sparsity_m_by_n=(3, 4))
    hist = _fit(_model(), cb, epochs=1)
    assert not [k for k in hist.history if "threshold" in k]
    assert cb.n_m == (1, 4) and cb.structure == "n_m"
    for w in _kernels(cb):  # Conv1D (3, 4, 8): cin 4; Dense 64 and 16
        rows = np.moveaxis(w, -2, -1).reshape(-1, 4)
        np.testing.assert_array_equal((rows != 0).sum(axis=1), 1)


def test_tfmot_spelling_config_and_errors():
    cb = MagnitudePruning(ConstantSparsity(0.5, 0), sparsity_m_by_n=(2, 4))
    config = cb.get_config()
    assert config["sparsity_m_by_n"] == (2, 4) and config["n_m"] is None
    back = MagnitudePruning.from_config(config)
    assert back.n_m == (2, 4) and back.sparsity_m_by_n == (2, 4)
    with pytest.raises(ValueError, match="not both"):
        MagnitudePruning(
            ConstantSparsity(0.5, 0), n_m=(2, 4), sparsity_m_by_n=(2, 4)
        )
    for bad in ((4, 4), (0, 4), 2):
        with pytest.raises(ValueError, match="sparsity_m_by_n"):
            MagnitudePruning(ConstantSparsity(0.5, 0), sparsity_m_by_n=bad)
