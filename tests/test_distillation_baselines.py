import keras
import numpy as np
import pytest

from keras_efficient.distillation import ActiveDistillation
from keras_efficient.distillation import BADGESelection
from keras_efficient.distillation import BALDSelection
from keras_efficient.distillation import PseudoLabelLoss
from keras_efficient.distillation import RobustSelection
from keras_efficient.distillation import SelectionContext
from keras_efficient.distillation.active._io import _stochastic_forward
from keras_efficient.distillation.active.baselines import _sq_dist_to
from keras_efficient.distillation.active.baselines import badge_factors
from keras_efficient.distillation.active.baselines import bald_scores
from tests.harness import run_loss_test
from tests.harness import to_numpy


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_badge_embedding_distances_match_explicit_outer_products():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=30)
    h = rng.normal(size=(30, 6))
    a, hh = badge_factors(p, h)
    g = np.einsum("nc,nd->ncd", a, hh).reshape(30, -1)
    # The gradient of CE at the predicted label w.r.t. the kernel.
    np.testing.assert_allclose(
        g[0], np.outer(p[0] - np.eye(4)[p[0].argmax()], h[0]).ravel()
    )
    np.testing.assert_allclose(
        _sq_dist_to(a, hh, 3, (a * a).sum(1) * (hh * hh).sum(1)),
        ((g - g[3]) ** 2).sum(1),
        atol=1e-10,
    )


def test_badge_kmeanspp_first_is_largest_norm_and_diverse():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), size=60)
    h = rng.normal(size=(60, 5))
    a = p.copy()
    a[np.arange(60), p.argmax(-1)] -= 1
    norms = (a**2).sum(1) * (h**2).sum(1)
    got = BADGESelection().select(SelectionContext(p, features=h, rng=0), 8)
    assert len(set(got.tolist())) == 8 and int(norms.argmax()) in got
    # Duplicated candidates: D^2 sampling never picks a copy of a center.
    p2 = np.repeat(p[:2], 20, axis=0)
    h2 = np.repeat(h[:2], 20, axis=0)
    got = BADGESelection().select(SelectionContext(p2, features=h2, rng=0), 2)
    assert {int(i) // 20 for i in got} == {0, 1}


def test_bald_is_mutual_information():
    rng = np.random.default_rng(2)
    mc = rng.dirichlet(np.ones(3), size=(8, 20))
    mean = mc.mean(0)
    ref = -(mean * np.log(mean)).sum(-1) + (mc * np.log(mc)).sum(-1).mean(0)
    np.testing.assert_allclose(bald_scores(mc), ref, atol=1e-10)
    # Agreeing passes (no epistemic uncertainty) score 0 even if uncertain.
    same = np.repeat(mc[:1], 8, axis=0)
    np.testing.assert_allclose(bald_scores(same), 0.0, atol=1e-10)
    ctx = SelectionContext(mc_probabilities=mc, num_candidates=20)
    got = BALDSelection().select(ctx, 3)
    np.testing.assert_array_equal(got, np.sort(np.argsort(-ref)[:3]))
    with pytest.raises(ValueError, match="mc_probabilities"):
        BALDSelection().select(SelectionContext(mc[0]), 3)


def _teacher(x):
    return keras.ops.softmax(x[:, :3] * 5)


@pytest.mark.parametrize("strategy", ["badge", "bald"])
def test_active_distillation_runs_badge_and_bald(strategy):
    pool = np.random.default_rng(0).random((120, 8)).astype("float32")
    student = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3),
        ]
    )
    student.compile("adam", keras.losses.CategoricalCrossentropy(True))
    act = ActiveDistillation(
        pool, _teacher, 60, 20, strategy=strategy, batch_size=32
    )
    student.fit(act.dataset, epochs=3, callbacks=[act], verbose=0)
    assert act.queries_used == 60
    assert len(np.unique(act.queried)) == 60


def test_robust_without_teacher_accuracy_is_loud():
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=20)
    with pytest.raises(ValueError, match="teacher_accuracy"):
        RobustSelection().select(SelectionContext(p, rng=0), 5)
    pool = np.random.default_rng(0).random((50, 8)).astype("float32")
    with pytest.raises(ValueError, match="validation"):
        ActiveDistillation(pool, _teacher, 20, 10, strategy="robust")


def test_nan_teacher_answers_name_pool_indices():
    pool = np.random.default_rng(0).random((40, 8)).astype("float32")

    def teacher(x):
        y = np.array(keras.ops.convert_to_numpy(_teacher(x)))
        y[1] = np.nan
        return y

    student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    student.compile("adam", keras.losses.CategoricalCrossentropy(True))
    act = ActiveDistillation(
        pool,
        teacher,
        20,
        10,
        strategy="margin",
        batch_size=10,
        teacher_output_shape=(3,),
    )
    with pytest.raises(ValueError, match="pool indices"):
        student.fit(act.dataset, epochs=1, callbacks=[act], verbose=0)


def test_pseudo_label_loss_matches_reference():
    rng = np.random.default_rng(3)
    t = rng.dirichlet(np.ones(4) * 0.3, size=32).astype("float32")
    s = rng.normal(size=(32, 4)).astype("float32")
    loss = PseudoLabelLoss(threshold=0.8, reduction="none")
    logq = np.log(_softmax(s.astype("float64")))
    ref = -logq[np.arange(32), t.argmax(-1)] * (t.max(-1) >= 0.8)
    np.testing.assert_allclose(to_numpy(loss(t, s)), ref, rtol=1e-5, atol=1e-6)
    assert 0 < (t.max(-1) >= 0.8).sum() < 32
    run_loss_test(lambda **kw: PseudoLabelLoss(threshold=0.8, **kw), t, s)
    with pytest.raises(ValueError, match="threshold"):
        PseudoLabelLoss(threshold=1.5)
    with pytest.raises(ValueError, match="y_true"):
        loss(t.argmax(-1), s)


def test_stochastic_forward_samples_dropout_and_averages_to_the_mean():
    """BALD's compiled passes draw fresh dropout masks each call; their mean
    approaches the deterministic output (dropout, then a linear layer)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dropout(0.5), keras.layers.Dense(3)]
    )
    x = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    forward = _stochastic_forward(model)
    passes = np.stack(
        [keras.ops.convert_to_numpy(forward(x)) for _ in range(400)]
    )
    assert not np.allclose(passes[0], passes[1])
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    # Within 5 standard errors of the mean over the 400 passes.
    stderr = passes.std(0) / np.sqrt(len(passes))
    assert np.all(np.abs(passes.mean(0) - expected) <= 5 * stderr + 1e-6)
