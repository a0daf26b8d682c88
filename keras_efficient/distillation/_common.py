"""Helpers shared by the distillation modules (private).

Each rule is written once: probabilities from outputs (`keras.ops` for the
losses, NumPy for the callbacks and the estimator), the top-1 minus top-2
margin, and the soft cross-entropy.
"""

import numpy as np
from keras import ops


def teacher_probs(y_true, teacher_from_logits):
    """Teacher probabilities (float32) from `y_true`, `keras.ops`."""
    return student_probs(y_true, teacher_from_logits)


def student_probs(y_pred, from_logits):
    """Probabilities (float32) from outputs, `keras.ops`."""
    y_pred = ops.cast(y_pred, "float32")
    if from_logits:
        return ops.softmax(y_pred, axis=-1)
    return y_pred


def soft_ce(target, y_pred, from_logits, eps=1e-7):
    """Cross-entropy of probabilities `target` vs student output, float32."""
    y_pred = ops.cast(y_pred, "float32")
    if from_logits:
        logp = ops.log_softmax(y_pred, axis=-1)
    else:
        logp = ops.log(ops.clip(y_pred, eps, 1.0))
    return -ops.sum(target * logp, axis=-1)


def margin(probs):
    """Top-1 minus top-2 probability over the last axis, `keras.ops`."""
    top2, _ = ops.top_k(probs, k=2)
    return top2[..., 0] - top2[..., 1]


def np_probs(outputs, from_logits):
    """Probabilities (float64) from outputs, NumPy, last axis."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if not from_logits:
        return outputs
    outputs = outputs - outputs.max(axis=-1, keepdims=True)
    outputs = np.exp(outputs)
    return outputs / outputs.sum(axis=-1, keepdims=True)


def np_margin(probs):
    """Top-1 minus top-2 probability per row, NumPy (1 with one class)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[-1] < 2:
        return np.ones(probs.shape[:-1])
    top2 = np.partition(probs, -2, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]
