"""SLaM: student-label mixing for distillation with unlabeled examples."""

import keras
from keras import ops

from keras_efficient import _validation as v
from keras_efficient.distillation import _common
from keras_efficient.distillation import teacher_accuracy as ta


@keras.saving.register_keras_serializable(package="keras_efficient")
class SLaMLoss(keras.losses.Loss):
    """Student-label mixing loss (SLaM) for distillation.

    The student fits the teacher's label through a *mixture* of its own
    prediction that models how the teacher errs (Iliopoulos et al., "SLaM:
    Student-Label Mixing for Distillation with Unlabeled Examples", NeurIPS
    2023). With f the student's probabilities, alpha(x) the estimated teacher
    accuracy on x and top_k(t) the k-hot indicator of the teacher's k most
    likely classes:

        mix(f) = alpha * f + (1 - alpha) * (1 - f) * top_k(t) / norm
        loss   = cross_entropy(t, clip(mix(f), eps, 1))

    `norm = 1` by default (the paper found it better), `k - 1` with
    `normalize=True`. With no `teacher_accuracy`, alpha(x) is the teacher's
    own top-1 probability and k = 2 (or the given `k`); fitting a
    `TeacherAccuracy` on a small labeled validation set is the paper's method
    and is recommended. The mixture is computed in float32.

    Args:
        teacher_accuracy: a fitted `TeacherAccuracy`, or None.
        k: None (smallest k >= 2 whose top-k teacher accuracy on V reaches
            `coverage`; 2 without a fitted estimator) or a fixed int >= 2.
        coverage: in (0, 1], used when `k` is None.
        target: `"soft"` (teacher probabilities) or `"hard"` (one-hot top-1).
        normalize: divide the mixing term by k - 1.
        teacher_from_logits: `y_true` holds teacher logits.
        from_logits: `y_pred` holds student logits (default True).
        epsilon: clip floor of the mixture.
        reduction, name, dtype: as in `keras.losses.Loss`.

    Example:

    ```python
    import numpy as np
    from keras_efficient.losses import SLaMLoss, TeacherAccuracy
    rng = np.random.default_rng(0)
    val_probs = rng.dirichlet(np.ones(10), size=300)
    val_labels = np.where(rng.random(300) < 0.7, val_probs.argmax(-1), 0)
    est = TeacherAccuracy().fit(val_probs, val_labels)
    loss = SLaMLoss(teacher_accuracy=est)
    teacher = rng.dirichlet(np.ones(10), size=4).astype("float32")
    student_logits = rng.normal(size=(4, 10)).astype("float32")
    print(float(loss(teacher, student_logits)))
    # model.compile(optimizer="adam", loss=SLaMLoss(teacher_accuracy=est))
    ```
    """

    def __init__(
        self,
        teacher_accuracy=None,
        k=None,
        coverage=0.95,
        target="soft",
        normalize=False,
        teacher_from_logits=False,
        from_logits=True,
        epsilon=1e-7,
        reduction="sum_over_batch_size",
        name="slam_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.teacher_accuracy = ta.get_estimator(teacher_accuracy)
        self.k = None if k is None else v.check_int("k", k, min_value=2)
        self.coverage = ta.check_coverage(coverage)
        self.target = v.check_choice("target", target, ("soft", "hard"))
        self.normalize = v.check_bool("normalize", normalize)
        self.teacher_from_logits = v.check_bool(
            "teacher_from_logits", teacher_from_logits
        )
        self.from_logits = v.check_bool("from_logits", from_logits)
        self.epsilon = v.check_number(
            "epsilon", epsilon, min_value=0.0, min_inclusive=False
        )

    def resolved_k(self, num_classes=None):
        """The k used: fixed, from coverage on V, or 2; capped at C."""
        if self.k is not None:
            k = self.k
        elif self.teacher_accuracy is not None:
            k = self.teacher_accuracy.smallest_k(self.coverage)
        else:
            k = 2
        if num_classes is not None:
            k = min(k, num_classes)
        return k

    def call(self, y_true, y_pred):
        t = _common.teacher_probs(y_true, self.teacher_from_logits)
        f = _common.student_probs(y_pred, self.from_logits)
        num_classes = t.shape[-1]
        k = self.resolved_k(num_classes)
        alpha = ops.expand_dims(ta.estimate(self.teacher_accuracy, t), -1)
        kth = ops.top_k(t, k=k)[0][..., k - 1 : k]
        topk = ops.cast(ops.greater_equal(t, kth), "float32")
        norm = float(k - 1) if self.normalize else 1.0
        mix = alpha * f + (1.0 - alpha) * (1.0 - f) * topk / norm
        mix = ops.clip(mix, self.epsilon, 1.0)
        if self.target == "hard":
            target = ops.one_hot(ops.argmax(t, axis=-1), num_classes)
        else:
            target = t
        return -ops.sum(target * ops.log(mix), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            teacher_accuracy=ta.serialize_estimator(self.teacher_accuracy),
            k=self.k,
            coverage=self.coverage,
            target=self.target,
            normalize=self.normalize,
            teacher_from_logits=self.teacher_from_logits,
            from_logits=self.from_logits,
            epsilon=self.epsilon,
        )
        return config
