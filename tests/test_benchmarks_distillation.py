"""The distillation benchmark's conditions, summary and joint training of
its students (tiny shapes; no accuracy is asserted)."""

import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import distillation  # noqa: E402
from keras_efficient.losses import KnowledgeDistillationLoss  # noqa: E402
from keras_efficient.losses import PseudoLabelLoss  # noqa: E402


def test_default_conditions_sweep_labels_and_teacher_epochs():
    conds = distillation.conditions(distillation.MODES["default"])
    assert [c[0] for c in conds] == [
        "labels_250",
        "labels_1000",
        "labels_4000",
        "teacher_acc_55",
        "teacher_acc_70",
        "teacher_acc_85",
    ]
    assert conds[3:] == [
        ("teacher_acc_55", 1000, 1),
        ("teacher_acc_70", 1000, 2),
        ("teacher_acc_85", 1000, 4),
    ]


def test_summary_pairs_every_method_with_soft_kd():
    rng = np.random.default_rng(0)
    conds = [("labels_250", 250, 30), ("labels_4000", 4000, 30)]
    noise = 0.01 * rng.standard_normal(5)
    runs = {}
    for name, offset in (("labels_250", 0.0), ("labels_4000", 0.2)):
        soft = 0.6 + offset + noise
        runs[(name, "soft_kd")] = list(soft)
        runs[(name, "slam")] = list(soft + 0.05)  # clearly better
        runs[(name, "debiased")] = list(soft - 0.05)  # clearly worse
        runs[(name, "pseudo_label")] = list(
            soft + [0.01, -0.01, 0.01, -0.01, 0]
        )
        runs[(name, "teacher")] = list(soft + 0.1)
        for key in ("teacher_pool", "pseudo_label_kept", "slam_mean_k"):
            runs[(name, key)] = [0.5] * 5
    figures = {f["name"]: f for f in distillation.summarise(runs, conds)}
    for name, _, _ in conds:
        assert figures[f"paired/slam-soft_kd/{name}"]["verdict"] == "shown"
        assert (
            figures[f"paired/debiased-soft_kd/{name}"]["verdict"]
            == "contradicted"
        )
        assert (
            figures[f"paired/pseudo_label-soft_kd/{name}"]["verdict"]
            == "not shown"
        )
        assert figures[f"check/teacher-soft_kd/{name}"]["verdict"] == "shown"
        assert len(figures[f"test_accuracy/{name}/slam"]["values"]) == 5
    check = figures["check/stronger_teacher/soft_kd/labels_4000-labels_250"]
    assert check["mean"] == pytest.approx(0.2)
    assert check["verdict"] == "shown"


def test_joint_students_train_as_each_would_alone():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 40, 1)).astype("float32")
    t = rng.dirichlet(np.ones(10), size=64).astype("float32")
    losses = {
        "soft_kd": KnowledgeDistillationLoss(
            temperature=1.0, teacher_from_logits=False
        ),
        "pseudo_label": PseudoLabelLoss(threshold=0.1),
    }
    joint = distillation.build_students(x.shape[1:], losses, seed=3)
    keras.utils.set_random_seed(3)
    joint.fit(x, [t, t], batch_size=32, epochs=2, verbose=0)
    alone = distillation.build_students(
        x.shape[1:], {"soft_kd": losses["soft_kd"]}, seed=3
    )
    keras.utils.set_random_seed(3)
    alone.fit(x, t, batch_size=32, epochs=2, verbose=0)
    for a, b in zip(joint.layers[1].weights, alone.layers[1].weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a),
            keras.ops.convert_to_numpy(b),
            atol=1e-5,
        )
    # The pseudo-label branch moved away from the shared initialisation.
    first = keras.ops.convert_to_numpy(joint.layers[2].weights[0])
    assert not np.allclose(
        first, keras.ops.convert_to_numpy(joint.layers[1].weights[0])
    )


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="counts JAX compiled kernels"
)
def test_loss_parts_count_the_kernels_each_loss_launches():
    import jax
    import jax.numpy as jnp

    from benchmarks import loss_parts_jax

    fns, probs = loss_parts_jax.functions()
    t = jnp.asarray(probs[:8])
    z = jnp.zeros((8, probs.shape[1]), "float32")
    kernels = {
        n: loss_parts_jax.entry_kernels(jax.jit(fns[n]).lower(t, z).compile())
        for n in ("cross_entropy", "slam", "slam: k(x)")
    }
    # SLaM's value and gradient launch more kernels than cross-entropy's,
    # and its k(x) (margin, then one compare-and-count) only a few.
    assert kernels["slam"] > kernels["cross_entropy"] >= 1
    assert 1 <= kernels["slam: k(x)"] <= 8
