"""Strip pruning state from a model, and report its sparsity."""

import math
from collections.abc import Sequence

import keras
import numpy as np

from keras_efficient import _validation as v
from keras_efficient.pruning.constraints import MaskConstraint
from keras_efficient.pruning.targets import find_target_weights


def strip_pruning(model: keras.Model) -> keras.Model:
    """A copy of a pruned model with the zeros baked in and no masks.

    The copy has the same class and architecture (rebuilt from the
    model's config, as `.keras` loading does) and
    the pruned weights (each masked kernel multiplied by its mask), and no
    mask constraints, so it saves and loads without keras-efficient
    objects (for models built from Keras layers). `model` itself is left
    untouched: it keeps its masks and constraints and can train on with
    `MagnitudePruning`. The copy is not compiled.

    Args:
        model: a model trained with `MagnitudePruning`.

    Returns:
        A new `keras.Model` whose outputs equal the pruned model's.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_efficient.callbacks import MagnitudePruning
    from keras_efficient.pruning import ConstantSparsity, strip_pruning

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model.compile("sgd", "mse")
    model.fit(np.ones((8, 8)), np.ones((8, 4)), verbose=0, callbacks=[
        MagnitudePruning(ConstantSparsity(0.5, begin_step=1, end_step=1))])
    stripped = strip_pruning(model)
    assert stripped is not model
    ```
    """
    v.check_instance("model", model, keras.Model, "a keras.Model")
    # A serialization round trip keeps the model's class, so a keras-hub
    # task stays one with its tied embedding shared (`clone_model` makes a
    # plain functional model of it, with the tied table copied twice).
    # The config is the model's own, in memory (not an untrusted file):
    # `safe_mode=False` lets a `Lambda` layer copy as `clone_model` did.
    try:
        config = keras.saving.serialize_keras_object(model)
        config.pop("compile_config", None)  # the copy is not compiled
        clone = keras.saving.deserialize_keras_object(config, safe_mode=False)
    except Exception as e:  # e.g. a subclassed model without get_config
        raise ValueError(
            "`strip_pruning` copies the model through its config "
            "(`get_config` / `from_config`), which failed for this model "
            "(a subclassed model needs `get_config` / `from_config`). "
            f"Received: model={model.name!r}; error: {e}"
        ) from e
    clone.set_weights(model.get_weights())
    for source, target in zip(model.weights, clone.weights):
        c = getattr(source, "constraint", None)
        if isinstance(c, MaskConstraint):
            w = keras.ops.convert_to_numpy(source.value)
            m = keras.ops.convert_to_numpy(c.mask).astype(w.dtype)
            target.assign(w * m)
    return clone


def sparsity_report(
    model: keras.Model, targets: Sequence | None = None
) -> dict:
    """Per-layer and total sparsity of the prunable kernels.

    Bytes are estimated for three storage forms per kernel: dense
    (`n * itemsize`), CSR over the 2-D `(inputs, outputs)` view
    (`nnz * (itemsize + 4) + (rows + 1) * 4`, int32 indices) and bitmask
    plus values (`ceil(n / 8) + nnz * itemsize`); `compressed_bytes` is the
    smallest of the three.

    Args:
        model: a Keras model.
        targets: as in `MagnitudePruning` (None: Dense/EinsumDense/Conv).

    Returns:
        A dict with `"layers"` (`variable.path` -> params, nonzero, sparsity,
        dense_bytes, csr_bytes, bitmask_bytes, compressed_bytes) and the
        totals `params`, `nonzero`, `sparsity`, `dense_bytes`,
        `compressed_bytes`, plus `model_params` and `model_nonzero` over all
        weights.

    Raises:
        TypeError: when `model` is not a `keras.Model`.
        ValueError: when the model has nothing to prune (no Dense,
            EinsumDense or Conv kernel and no layer with
            `get_prunable_weights()` matches `targets`), or is not
            built yet.

    Example:

    ```python
    import keras
    from keras_efficient.pruning import sparsity_report

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    report = sparsity_report(model)
    assert report["sparsity"] == 0.0 and report["params"] == 32
    ```
    """
    v.check_instance("model", model, keras.Model, "a keras.Model")
    if not model.built:
        raise ValueError(
            "`model` must be built before `sparsity_report` can read its "
            "kernels: call it on a batch, or `model.build(input_shape)`. "
            f"Received: model={model.name!r} (unbuilt, no weights yet)"
        )
    found = find_target_weights(model, targets, trainable_only=False)
    found = [(layer, w) for layer, w in found if int(np.prod(w.shape))]
    if not found:
        raise ValueError(
            "`sparsity_report` found nothing to prune in the model: no "
            "Dense, EinsumDense or Conv kernel, nor a layer with "
            "`get_prunable_weights()`, matches `targets`. "
            f"Received: targets={targets!r}"
        )
    layers = {variable.path: _storage(variable) for _, variable in found}
    totals = {
        name: sum(entry[name] for entry in layers.values())
        for name in ("params", "nonzero", "dense_bytes", "compressed_bytes")
    }
    weights = [keras.ops.convert_to_numpy(v) for v in model.weights]
    return {
        "layers": layers,
        **totals,
        "sparsity": 1.0 - totals["nonzero"] / totals["params"],
        "model_params": int(sum(w.size for w in weights)),
        "model_nonzero": int(sum(np.count_nonzero(w) for w in weights)),
    }


def _storage(variable):
    """Sizes and bytes of one kernel, dense and in two sparse forms."""
    w = keras.ops.convert_to_numpy(variable.value)
    n, nnz = int(w.size), int(np.count_nonzero(w))
    item = w.dtype.itemsize
    rows = w.size // (w.shape[-1] if w.ndim > 1 else 1)
    entry = {
        "params": n,
        "nonzero": nnz,
        "sparsity": 1.0 - nnz / n,
        "dense_bytes": n * item,
        "csr_bytes": nnz * (item + 4) + (rows + 1) * 4,
        "bitmask_bytes": math.ceil(n / 8) + nnz * item,
    }
    entry["compressed_bytes"] = min(
        entry["dense_bytes"], entry["csr_bytes"], entry["bitmask_bytes"]
    )
    return entry
