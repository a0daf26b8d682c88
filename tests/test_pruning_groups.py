"""Group-aware filter pruning: coupled channels pruned together by the
callback, so that `shrink` removes exactly what was zeroed."""

import logging

import keras
import numpy as np
import pytest

import keras_efficient
from keras_efficient.callbacks import MagnitudePruning
from keras_efficient.pruning import ConstantSparsity
from keras_efficient.pruning import strip_pruning
from keras_efficient.pruning.masks import keep_count
from keras_efficient.pruning.plan_masks import group_masks
from keras_efficient.pruning.shrink import Analysis
from keras_efficient.pruning.shrink import removable
from keras_efficient.pruning.shrink import shrink
from tests.callback_harness import crash_and_resume
from tests.callback_harness import fit

L = keras.layers
# Plain SGD on softmax outputs, batches of 8.
SGD_CE = {"optimizer": "sgd", "loss": "sparse_categorical_crossentropy"}


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _fit(model, cb, x, y, epochs=1):
    fit(model, [cb], (x, y), epochs, batch_size=8, **SGD_CE)
    return model


def _images(n=16, shape=(8, 8, 1), classes=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + shape).astype("float32")
    return x, rng.integers(0, classes, n)


def _assert_same(a, b, x):
    ya = _np(a(x, training=False))
    yb = _np(b(x, training=False))
    np.testing.assert_allclose(ya, yb, atol=1e-5, rtol=0)


def _zero_columns(kernel):
    k = _np(kernel)
    return np.all(k.reshape(-1, k.shape[-1]) == 0, axis=0)


@pytest.fixture(scope="module")
def pruned_resnet():
    keras.utils.set_random_seed(0)
    model = keras_efficient.applications.ResNet20(
        input_shape=(8, 8, 1), classes=10, width_multiplier=0.25
    )
    dense_params = model.count_params()
    cb = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=1, frequency=1), structure="filter"
    )
    x, y = _images()
    _fit(model, cb, x, y)
    return model, cb, dense_params, x


def test_resnet20_groups_share_channels(pruned_resnet):
    model, cb, _, _ = pruned_resnet
    assert cb._plan.groups  # group-aware by default on a functional model
    masked = strip_pruning(model)
    analysis = Analysis(masked)
    zero = analysis.zeros()
    targets = {id(k) for k in masked.trainable_variables}
    checked = 0
    for group in analysis.unit_groups:
        columns = [
            _zero_columns(node.layer.kernel)
            for node, _ in group.members
            if node.kind == "producer" and id(node.layer.kernel) in targets
        ]
        assert columns, group.name
        for other in columns[1:]:
            np.testing.assert_array_equal(columns[0], other)
        # Exactly the zeroed channels are removable, k kept per group.
        gone = removable(group, zero)
        np.testing.assert_array_equal(gone, columns[0])
        assert group.size - gone.sum() == keep_count(group.size, 0.5)
        checked += len(columns)
    assert checked >= 19  # every convolution (stem, blocks, projections)


def test_resnet20_shrink_equals_masked(pruned_resnet):
    model, _, dense_params, x = pruned_resnet
    masked = strip_pruning(model)
    small = shrink(masked)
    _assert_same(masked, small, x[:4])
    # Same widths as shrink's own group-wise selection at 50%.
    reference = shrink(model, ratio=0.5)
    assert small.count_params() == reference.count_params()
    assert small.count_params() < 0.3 * dense_params


def _two_stage_resnet():
    # ResNet20's residual groups and layer names in 4 blocks, not 9: the
    # tests below compile it once each (ResNet20's own groups are checked
    # above).
    keras.utils.set_random_seed(0)
    return keras_efficient.applications.ResNet(
        [2, 2], [4, 8], input_shape=(8, 8, 1), classes=10
    )


def test_per_layer_when_turned_off():
    model = _two_stage_resnet()
    cb = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=1, end_step=1),
        structure="filter",
        group_channels=False,
    )
    x, y = _images(8)
    _fit(model, cb, x, y)
    assert cb._plan.groups is None
    for kernel in cb.target_weights.values():
        z = _zero_columns(kernel)
        assert (~z).sum() == keep_count(z.size, 0.5)


def _conv_net():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            L.Conv2D(8, 3, padding="same", name="c1"),
            L.BatchNormalization(),
            L.ReLU(),
            L.Conv2D(8, 3, padding="same", activation="relu", name="c2"),
            L.Flatten(),
            L.Dense(16, activation="relu", name="d1"),
            L.Dense(3, name="out"),
        ]
    )


def test_sequential_conv_net():
    model = _conv_net()
    cb = MagnitudePruning(ConstantSparsity(0.5, 1, 1), structure="filter")
    x, y = _images(16, (8, 8, 2), 3)
    _fit(model, cb, x, y)
    assert len(cb._plan.groups) == 3  # c1, c2, d1; the output is per layer
    for kernel in cb.target_weights.values():  # out: per layer, as before
        z = _zero_columns(kernel)
        assert (~z).sum() == keep_count(z.size, 0.5)
    masked = strip_pruning(model)
    for name in ("c2", "d1"):  # biases masked with their filters
        layer = masked.get_layer(name)
        z = _zero_columns(layer.kernel)
        assert np.all(_np(layer.bias)[z] == 0)
    small = shrink(masked)
    assert small.get_layer("c1").filters == 4
    assert small.get_layer("d1").units == 8
    _assert_same(masked, small, x[:4])


def test_transformer_lm_feedforward():
    keras.utils.set_random_seed(2)
    model = keras_efficient.applications.TransformerLM(
        vocabulary_size=16, sequence_length=8, hidden_dim=8, num_layers=2,
        num_heads=2,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, (16, 8)).astype("int32")
    cb = MagnitudePruning(ConstantSparsity(0.5, 1, 1), structure="filter")
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, x, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    assert len(cb._plan.groups) == 2  # the two feed-forward hidden layers
    masked = strip_pruning(model)
    small = shrink(masked)
    _assert_same(masked, small, x[:2])
    assert small.count_params() < model.count_params()


def test_layer_sparsity_group_takes_smallest_target():
    model = _two_stage_resnet()
    cb = MagnitudePruning(
        ConstantSparsity(0.5, begin_step=1, end_step=1),
        structure="filter",
        layer_sparsity={"stage1_block2_conv2": 0.0},
    )
    x, y = _images(8)
    _fit(model, cb, x, y)
    for name in ("stem_conv", "stage1_block1_conv2", "stage1_block2_conv2"):
        assert not _zero_columns(model.get_layer(name).kernel).any(), name
    assert _zero_columns(model.get_layer("stage1_block1_conv1").kernel).any()


def test_numpy_reference_equals_ops():
    rng = np.random.default_rng(3)
    kernels = [
        rng.integers(-2, 3, size=(3, 3, 2, 6)).astype("float32"),
        rng.integers(-2, 3, size=(1, 1, 4, 6)).astype("float32"),
        rng.integers(-2, 3, size=(6, 5)).astype("float32"),
    ]
    groups = (((0, 1), (0, 1)),)
    for scope in ("layer", "global"):
        for s in (0.0, 0.3, 0.5, 0.9):
            want = group_masks(kernels, s, groups, scope, backend="numpy")
            got = group_masks(kernels, s, groups, scope, backend="ops")
            for g, w in zip(got, want):
                np.testing.assert_array_equal(_np(g), w)
            np.testing.assert_array_equal(want[0][0, 0, 0], want[1][0, 0, 0])


def test_arguments_and_fallback():
    sched = ConstantSparsity(0.5, 1, 1)
    with pytest.raises(ValueError, match="group_channels"):
        MagnitudePruning(sched, group_channels=True)
    with pytest.raises(ValueError, match="group_channels"):
        MagnitudePruning(sched, structure="filter", group_channels="yes")
    with pytest.raises(ValueError, match="group_channels"):
        MagnitudePruning(sched, structure="filter", group_channels=1)
    cb = MagnitudePruning(sched, structure="filter", group_channels=False)
    assert MagnitudePruning.from_config(cb.get_config()).group_channels is False

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d1 = L.Dense(8, activation="relu")
            self.d2 = L.Dense(3)

        def call(self, x):
            return self.d2(self.d1(x))

    x = np.random.default_rng(0).random((8, 4)).astype("float32")
    y = np.zeros(8, "int32")
    for flag in (None, True):
        net = Net()
        net(x)
        cb = MagnitudePruning(sched, structure="filter", group_channels=flag)
        if flag:
            with pytest.raises(ValueError, match="group_channels=False"):
                _fit(net, cb, x, y)
        else:
            with pytest.warns(UserWarning, match="layer by layer"):
                _fit(net, cb, x, y)  # subclassed: per layer, and says so
            assert cb._plan.groups is None


def _residual_net(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    a = L.Conv2D(8, 3, padding="same", use_bias=False, name="a")(inputs)
    a = L.ReLU()(L.BatchNormalization(name="bn_a")(a))
    b = L.Conv2D(8, 3, padding="same", name="b")(a)
    x = L.GlobalAveragePooling2D()(L.Add()([a, b]))
    return keras.Model(inputs, L.Dense(3, name="out")(x))


def test_residual_net_backup_and_restore(tmp_path):
    from keras_efficient.pruning import PolynomialDecay

    sched = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=6, frequency=2)
    x, y = _images(16, (6, 6, 2), 3)
    ref, ref_cb, model, cb = crash_and_resume(
        _residual_net,
        lambda: MagnitudePruning(sched, structure="filter"),
        tmp_path,
        data=(x, y),
        batch_size=8,
        **SGD_CE,
    )
    assert cb.step == ref_cb.step == 8
    for a, b in zip(ref_cb.mask_variables, cb.mask_variables):
        np.testing.assert_array_equal(_np(a), _np(b))
    za = _zero_columns(model.get_layer("a").kernel)
    zb = _zero_columns(model.get_layer("b").kernel)
    np.testing.assert_array_equal(za, zb)
    assert za.sum() == 4
    assert np.all(_np(model.get_layer("bn_a").beta)[za] == 0)
    small = shrink(strip_pruning(model))
    assert small.get_layer("a").filters == 4
    _assert_same(strip_pruning(model), small, x[:4])


def test_resnet20_laurel_up_projections_follow_the_group():
    keras.utils.set_random_seed(0)
    model = keras_efficient.applications.ResNet20(
        input_shape=(8, 8, 1), classes=10, width_multiplier=0.25,
        laurel="rw+lr", laurel_rank=4,
    )  # fmt: skip
    cb = MagnitudePruning(ConstantSparsity(0.5, 1, 1), structure="filter")
    x, y = _images(8)
    _fit(model, cb, x, y)
    masked = strip_pruning(model)
    small = shrink(masked)
    _assert_same(masked, small, x[:4])
    assert small.count_params() == shrink(model, ratio=0.5).count_params()
    zero = _zero_columns(masked.get_layer("stem_conv").kernel)
    up = _np(masked.get_layer("stage1_block1_laurel").lr_kernel_b)
    assert zero.sum() == 2 and np.all(up[:, zero] == 0)


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="counts XLA compiles on JAX"
)
def test_group_masks_update_inside_one_compiled_step():
    import jax

    from keras_efficient.pruning import PolynomialDecay

    compiles = []

    class Count(logging.Handler):
        def emit(self, record):
            if "Compiling jit(train_step)" in record.getMessage():
                compiles.append(record.getMessage())

    handler, logger = Count(), logging.getLogger("jax")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    sched = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=6, frequency=1)
    x, y = _images(16, (6, 6, 2), 3)
    try:
        model = _residual_net()
        cb = MagnitudePruning(sched, structure="filter")
        _fit(model, cb, x, y, epochs=3)
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[cb])
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
    assert len(compiles) == 1, compiles
    za = _zero_columns(model.get_layer("a").kernel)
    zb = _zero_columns(model.get_layer("b").kernel)
    np.testing.assert_array_equal(za, zb)
    assert za.sum() == 4
