"""Evaluation beyond test accuracy ("Lost in Pruning", MLSys 2021)."""

import keras
import numpy as np

from keras_efficient import _validation as v


def _check_common(x, y, draws, seed, batch_size, from_logits):
    v.check_positive_int("draws", draws)
    v.check_int("seed", seed, min_value=0)
    v.check_positive_int("batch_size", batch_size)
    v.check_bool("from_logits", from_logits)
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[1:] != (1,) * (y.ndim - 1):
        raise ValueError(
            "`y` must be integer class ids of shape (n,), not one-hot. "
            f"Received: y.shape={y.shape}"
        )
    n = len(x) if not isinstance(x, dict) else None
    if n is not None and y.size != n:
        raise ValueError(
            f"`y` must hold one label per input ({n}). Received: "
            f"y.shape={y.shape}"
        )
    return y.reshape(-1)


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _probs(model, x, batch_size, from_logits):
    out = keras.ops.convert_to_numpy(
        model.predict(x, batch_size=batch_size, verbose=0)
    ).astype("float64")
    return _softmax(out) if from_logits else out


def noisy_accuracy(
    model, x, y, eps, draws=10, seed=0, batch_size=256, from_logits=True
):
    """Accuracy under uniform noise `x + eps * (2u - 1)`, `u ~ U[0, 1)`.

    Averaged over `draws` noise draws per input (the paper uses 100).
    """
    y = _check_common(x, y, draws, seed, batch_size, from_logits)
    eps = v.check_number("eps", eps, min_value=0.0)
    rng = np.random.default_rng(seed)
    x = np.asarray(x, "float32")
    y = np.asarray(y).reshape(-1)
    accs = []
    for _ in range(draws):
        u = rng.random(x.shape, dtype="float32")
        p = _probs(model, x + eps * (2 * u - 1), batch_size, from_logits)
        accs.append(float((p.argmax(-1) == y).mean()))
    return float(np.mean(accs))


def compare_to_dense(
    dense,
    pruned,
    x,
    y,
    eps=(0.0, 0.1, 0.3, 0.5, 0.7),
    draws=10,
    seed=0,
    batch_size=256,
    from_logits=True,
):
    """Compare a pruned model with its dense parent on `(x, y)`.

    Args:
        dense: the dense parent model.
        pruned: the pruned model.
        x, y: inputs and integer labels.
        eps: noise levels for `x + eps * (2u - 1)`.
        draws: noise draws per level (the paper: 100).
        seed: noise seed (same noise for both models).
        batch_size: prediction batch size.
        from_logits: whether the models output logits (softmax applied).

    Returns:
        A dict: `dense_accuracy`, `pruned_accuracy`, `top1_agreement`
        (fraction of inputs with the same predicted class), `softmax_l2`
        (mean L2 distance of the softmax outputs), and `noise`: a list of
        `{"eps", "dense_accuracy", "pruned_accuracy"}`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_efficient.pruning import compare_to_dense

    dense_model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    pruned_model = keras.models.clone_model(dense_model)
    kernel, bias = dense_model.get_weights()
    pruned_model.set_weights([np.where(abs(kernel) > 0.3, kernel, 0), bias])
    x_test = np.random.rand(64, 8).astype("float32")
    y_test = np.random.randint(0, 3, size=64)
    stats = compare_to_dense(dense_model, pruned_model, x_test, y_test,
                             eps=(0.0, 0.1), draws=2)
    print(stats["top1_agreement"], stats["softmax_l2"])
    ```
    """
    y = _check_common(x, y, draws, seed, batch_size, from_logits)
    if isinstance(eps, (str, bytes)) or np.ndim(eps) != 1:
        v.fail("eps", "a list of noise levels", eps, v.ArgumentTypeError)
    eps = [v.check_number("eps", e, min_value=0.0) for e in eps]
    pd = _probs(dense, x, batch_size, from_logits)
    pp = _probs(pruned, x, batch_size, from_logits)
    noise = [
        {
            "eps": float(e),
            "dense_accuracy": noisy_accuracy(
                dense, x, y, e, draws, seed, batch_size, from_logits
            ),
            "pruned_accuracy": noisy_accuracy(
                pruned, x, y, e, draws, seed, batch_size, from_logits
            ),
        }
        for e in eps
    ]
    return {
        "dense_accuracy": float((pd.argmax(-1) == y).mean()),
        "pruned_accuracy": float((pp.argmax(-1) == y).mean()),
        "top1_agreement": float((pd.argmax(-1) == pp.argmax(-1)).mean()),
        "softmax_l2": float(np.linalg.norm(pd - pp, axis=-1).mean()),
        "noise": noise,
    }


def prune_potential(dense_accuracy, results, delta=0.005):
    """Largest sparsity whose accuracy stays within `delta` of dense.

    Args:
        dense_accuracy: accuracy of the dense model (fraction, not %).
        results: list of `(sparsity, accuracy)` pairs (clean or noisy).
        delta: allowed drop (default 0.005 = 0.5 points).

    Returns:
        The largest qualifying sparsity, 0.0 if none qualifies.

    Example:

    >>> prune_potential(0.90, [(0.5, 0.9), (0.8, 0.897), (0.9, 0.85)])
    0.8
    """
    dense_accuracy = v.check_fraction("dense_accuracy", dense_accuracy, True)
    delta = v.check_number("delta", delta, min_value=0.0)
    if isinstance(results, (str, bytes, dict)) or not all(
        isinstance(r, (tuple, list)) and len(r) == 2 for r in results
    ):
        v.fail("results", "a list of (sparsity, accuracy) pairs", results)
    for s, a in results:
        v.check_fraction("results", s, allow_one=True)
        v.check_fraction("results", a, allow_one=True)
    ok = [float(s) for s, a in results if a >= dense_accuracy - delta]
    return max(ok, default=0.0)
