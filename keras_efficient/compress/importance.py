"""How much each feed-forward neuron, head and hidden channel matters.

`transformer_importance(model, data, importance=...)` scores the units
that `shrink` removes from a Transformer, in the format its `scores`
argument takes, `{"ffn": [array per layer], "heads": [array per layer],
"hidden": array}`:

- `"activation"` (Minitron, Muralidharan et al. 2024): on calibration
  batches, the mean absolute output of every feed-forward neuron (the
  input of the down projection), the mean l2 norm of every head's
  attention output (before the output projection), and the mean absolute
  value of every hidden channel after every norm over the hidden width.
  Read by a recording call of the public model (`compress/recording.py`).
  Every family `shrink` knows.
- `"taylor"` (LLM-Pruner, Ma et al. 2023): `|w * dL/dw|` of every weight,
  with `dL/dw` the gradient of the mean calibration loss, summed over the
  weights of a unit. Every family `shrink` knows.
- `"magnitude"`: the l2 norm of a unit's weights (what `shrink` uses
  without scores). Needs no data.
"""

from typing import Any

import keras
import numpy as np

from keras_efficient._validation import check_choice
from keras_efficient._validation import check_instance
from keras_efficient._validation import fail
from keras_efficient.compress.calibration import calibration_batches
from keras_efficient.compress.recording import activation_scores
from keras_efficient.pruning.transformer_families import Layout
from keras_efficient.pruning.transformer_units import unit_scores

IMPORTANCES = ("activation", "taylor", "magnitude")


class _GradientSum(keras.optimizers.Optimizer):
    """An optimizer that leaves the weights alone and sums the gradients.

    Compiled into `fit`, it gives the gradient of the calibration loss on
    every backend, inside the same (jit-compiled) train step as training.
    """

    def __init__(self):
        super().__init__(learning_rate=0.0, name="gradient_sum")

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.sums = [
            self.add_variable_from_reference(v, name="gradient_sum")
            for v in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        self.assign_add(self.sums[index], gradient)


def _clone(model):
    """A trainable copy of `model` (same class and weights) to compile.

    Trainable even where `model` is frozen (a `Distiller` freezes its
    teacher): the gradient is taken with respect to every weight, and a
    frozen copy would give no gradients, so all-zero scores.
    """
    clone = type(model).from_config(model.get_config())
    clone.set_weights(model.get_weights())
    clone.trainable = True
    return clone


def _per_unit(layout, values):
    """Sum of `values` (one non-negative array per weight) over each unit."""
    total = {
        "ffn": [0.0] * layout.num_layers,
        "heads": [0.0] * layout.num_layers,
        "hidden": np.zeros(layout.hidden_dim),
    }
    for (_, dims), value in zip(layout.entries, values):
        for index, (axis, layer, parts, unit) in dims.items():
            other = tuple(a for a in range(value.ndim) if a != index)
            per_element = value.sum(axis=other)
            per_unit = per_element.reshape(parts, -1, unit).sum(axis=(0, 2))
            if layer is None:
                total[axis] = total[axis] + per_unit
            else:
                total[axis][layer] = total[axis][layer] + per_unit
    return total


def taylor_scores(model: keras.Model, batches: list, loss: Any = None) -> dict:
    """First-order Taylor importance `sum |w * dL/dw|` of every unit.

    Args:
        model: a Transformer that `shrink` knows (left unchanged: a copy is
            compiled).
        batches: `(x, y)` pairs, e.g. from `calibration_batches`.
        loss: the loss (default: sparse categorical cross-entropy of
            logits, the language-model loss).
    """
    if any(y is None for _, y in batches):
        fail(
            "data",
            "batches with labels `(x, y)` for importance='taylor' (the "
            "gradient of the loss needs them)",
            "batches without labels",
        )
    layout = Layout(model)
    clone = _clone(model)
    recorder = _GradientSum()
    clone.compile(
        optimizer=recorder,
        loss=loss
        or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    for x, y in batches:
        clone.train_on_batch(x, y)
    sums = {v.path: s for v, s in zip(clone.trainable_variables, recorder.sums)}
    values = []
    for variable, _ in layout.entries:
        weight = keras.ops.convert_to_numpy(variable).astype("float64")
        gradient = sums.get(variable.path)
        if gradient is None:  # not trainable: no first-order term
            values.append(np.zeros_like(weight))
            continue
        gradient = keras.ops.convert_to_numpy(gradient).astype("float64")
        values.append(np.abs(weight * gradient / len(batches)))
    return _per_unit(layout, values)


def transformer_importance(
    model: keras.Model,
    data: Any = None,
    importance: str = "activation",
    batch_size: int = 8,
    num_batches: int | None = None,
    loss: Any = None,
) -> dict:
    """Importance of every feed-forward neuron, head and hidden channel.

    Args:
        model: a `TransformerLM` or a keras-hub task or backbone that
            `shrink` knows (GPT-2, BERT, Llama, Mistral, Qwen3, Gemma).
        data: calibration data: inputs `x`, a tuple `(x, y)`, or an
            iterable of batches (`"taylor"` needs labels `y`; `"magnitude"`
            reads none).
        importance: `"activation"`, `"taylor"` or `"magnitude"` (see the
            module docstring).
        batch_size: batch size when `data` holds arrays.
        num_batches: read at most this many batches.
        loss: the loss of `"taylor"` (default: sparse categorical
            cross-entropy of logits).

    Returns:
        `{"ffn": [array per layer], "heads": [array per key / value group
        per layer], "hidden": array}`, the `scores` of `shrink`; larger is
        more important.

    Example:

    >>> import numpy as np
    >>> from keras_efficient.applications import TransformerLM
    >>> from keras_efficient.compress import transformer_importance
    >>> model = TransformerLM(vocabulary_size=32, sequence_length=8,
    ...     hidden_dim=16, num_layers=2, num_heads=2)
    >>> x = np.random.randint(0, 32, size=(4, 8))
    >>> scores = transformer_importance(model, x)
    >>> [len(s) for s in scores["ffn"]], len(scores["hidden"])
    ([64, 64], 16)
    """
    check_instance("model", model, keras.Model, "a keras.Model")
    check_choice("importance", importance, IMPORTANCES)
    layout = Layout(model)
    if importance == "magnitude":
        return unit_scores(layout, "l2")
    if data is None:
        fail("data", f"calibration data for importance={importance!r}", data)
    batches = calibration_batches(data, batch_size, num_batches)
    if importance == "taylor":
        return taylor_scores(model, batches, loss)
    return activation_scores(model, batches)
