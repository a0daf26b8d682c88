"""Knowledge distillation with temperature, done right."""

from typing import Any

import keras
from keras import ops

from keras_efficient import _validation as v
from keras_efficient.distillation._teacher_loss import TeacherOutputsLoss


@keras.saving.register_keras_serializable(package="keras_efficient")
class KnowledgeDistillationLoss(TeacherOutputsLoss):
    """Temperature knowledge distillation: T^2 * KL(p_T || q_T).

    p_T = softmax(t / T) from the teacher's logits t (`y_true`), q_T =
    softmax(s / T) from the student's logits s (`y_pred`); the T^2 factor
    keeps gradient magnitudes independent of T (Hinton et al., 2015).
    Computed in float32.

    Unlike Keras 3's own `keras.distillation.LogitsDistillation()` with its
    default `loss="kl_divergence"` string: there the string resolves to the
    plain `keras.losses.kl_divergence` function, which is applied to the
    temperature-scaled *logits* directly (no softmax; the function clips
    them to [eps, 1]) and no T^2 factor is applied. Only when passed a
    `keras.losses.KLDivergence()` instance does Keras apply the softmax and
    T^2. `keras.distillation.Distiller` also ignores `sample_weight` for the
    distillation term; this loss honours it.

    Args:
        temperature: T > 0 (default 2).
        teacher_from_logits: `y_true` holds teacher logits (default True).
            With False, `y_true` holds probabilities and is sharpened as
            softmax(log(p) / T).
        from_logits: `y_pred` holds student logits (must be True).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Example:

    ```python
    import numpy as np
    from keras_efficient.losses import KnowledgeDistillationLoss
    loss = KnowledgeDistillationLoss(temperature=4.0)
    t = np.random.normal(size=(8, 10)).astype("float32")
    s = np.random.normal(size=(8, 10)).astype("float32")
    print(float(loss(t, s)))
    ```
    """

    def __init__(
        self,
        temperature: float = 2.0,
        teacher_from_logits: bool = True,
        from_logits: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str = "knowledge_distillation_loss",
        dtype: str | None = None,
    ):
        super().__init__(
            teacher_from_logits, from_logits, reduction, name, dtype
        )
        self.temperature = v.check_number(
            "temperature", temperature, min_value=0.0, min_inclusive=False
        )
        if not self.from_logits:
            v.fail("from_logits", "True (a temperature needs logits)", False)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        T = self.temperature
        t = ops.cast(y_true, "float32")
        if not self.teacher_from_logits:
            t = ops.log(ops.clip(t, 1e-12, 1.0))
        log_p = ops.log_softmax(t / T, axis=-1)
        log_q = ops.log_softmax(ops.cast(y_pred, "float32") / T, axis=-1)
        kl = ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)
        return (T * T) * kl

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(temperature=self.temperature)
        return config
