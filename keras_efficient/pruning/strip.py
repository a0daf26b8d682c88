"""Strip pruning state from a model, and report its sparsity."""

import math

import keras
import numpy as np

from keras_efficient.pruning.targets import find_target_weights


def _masked_kernels(model):
    seen = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for variable in layer.weights:
            c = getattr(variable, "constraint", None)
            if (
                c is not None
                and hasattr(c, "mask")
                and id(variable) not in seen
            ):
                seen.add(id(variable))
                yield layer, variable, c


def strip_pruning(model):
    """A copy of a pruned model with the zeros baked in and no masks.

    The copy has the same architecture (`keras.models.clone_model`), the
    pruned weights (kernels multiplied by their masks) and no mask
    constraints, so it saves and loads without keras-efficient objects
    (for models built from Keras layers). Subclassed models that cannot be
    cloned are stripped in place (constraints removed) and returned.

    Args:
        model: a model trained with `MagnitudePruning`.

    Returns:
        A `keras.Model` whose outputs equal the pruned model's.

    Example:

    ```python
    stripped = strip_pruning(model)
    stripped.save("pruned.keras")
    ```
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a keras.Model. Received: model={model!r}"
        )
    for _, kernel, c in _masked_kernels(model):
        kernel.assign(kernel.value * keras.ops.cast(c.mask, kernel.dtype))
    try:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
    except Exception:  # subclassed model without a usable config
        clone = model
    for _, kernel, c in _masked_kernels(clone):
        kernel.constraint = c.original
    return clone


def sparsity_report(model, targets=None):
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
        A dict with `"layers"` (key -> params, nonzero, sparsity,
        dense_bytes, csr_bytes, bitmask_bytes, compressed_bytes) and the
        totals `params`, `nonzero`, `sparsity`, `dense_bytes`,
        `compressed_bytes`, plus `model_params` and `model_nonzero` over all
        weights.

    Example:

    ```python
    report = sparsity_report(model)
    print(report["sparsity"], report["compressed_bytes"])
    ```
    """
    layers = {}
    tot = {"params": 0, "nonzero": 0, "dense_bytes": 0, "compressed_bytes": 0}
    for _, key, variable in find_target_weights(model, targets):
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
        layers[key] = entry
        for key in tot:
            tot[key] += entry[key]
    weights = [keras.ops.convert_to_numpy(v) for v in model.weights]
    return {
        "layers": layers,
        **tot,
        "sparsity": 1.0 - tot["nonzero"] / max(tot["params"], 1),
        "model_params": int(sum(w.size for w in weights)),
        "model_nonzero": int(sum(np.count_nonzero(w) for w in weights)),
    }
