"""Evaluation beyond test accuracy ("Lost in Pruning", MLSys 2021).

As the authors' code computes it (torchprune, `paper/lost`): every input
gets `draws` uniform noise draws `x + eps * (2u - 1)`, `u ~ U[0, 1)`, at
each noise level (the paper: 100 draws, levels up to 0.7); the same noise
goes to the dense and the pruned model. Each metric (accuracy, top-1
agreement, L2 distance of the softmax outputs) is averaged over the inputs
of one draw, then summarised over the draws (mean and standard deviation);
the prune potential is found per draw, then summarised.

Draws are batched: one `predict` call runs as many draws as fit a budget
of about 16M input values, so 100 draws cost a few large calls, not 100
small ones. Noise at a level comes from `np.random.default_rng(seed)`,
`u = rng.random((draws, *x.shape), "float32")` (the same `u` at every
level, scaled by `eps`: common random numbers, which lowers the variance
of a comparison across levels without changing any expectation).
"""

import keras
import numpy as np

from keras_efficient import _validation as v

_BUDGET = 2**24  # input values per predict call (64 MB of float32)


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


def noisy_outputs(
    models: list,
    x: np.ndarray,
    eps: float,
    draws: int = 100,
    seed: int = 0,
    batch_size: int = 256,
    from_logits: bool = True,
) -> list[np.ndarray]:
    """Softmax outputs of each model on the same `draws` noisy copies of
    `x`, each of shape `(draws, n, classes)` (float64).

    At `eps == 0` every draw is the clean input: it is run once and
    repeated.
    """
    x = np.asarray(x, "float32")
    if eps == 0.0:
        outs = [_probs(m, x, batch_size, from_logits) for m in models]
        return [np.broadcast_to(o, (draws,) + o.shape) for o in outs]
    rng = np.random.default_rng(seed)
    per_call = max(1, _BUDGET // max(x.size, 1))
    parts = [[] for _ in models]
    for start in range(0, draws, per_call):
        count = min(per_call, draws - start)
        u = rng.random((count,) + x.shape, dtype="float32")
        noisy = (x + np.float32(eps) * (2 * u - 1)).reshape(
            (count * len(x),) + x.shape[1:]
        )
        for part, model in zip(parts, models):
            p = _probs(model, noisy, batch_size, from_logits)
            part.append(p.reshape((count, len(x)) + p.shape[1:]))
    return [np.concatenate(part) for part in parts]


def _lower_median(values):
    """The median, the lower middle value for an even count (as
    `torch.median`, which the authors' code uses)."""
    return float(np.sort(values)[(values.size - 1) // 2])


def _std(per_draw):
    """Standard deviation over draws (unbiased, as `torch.std`); 0 for one."""
    return float(np.std(per_draw, ddof=1)) if per_draw.size > 1 else 0.0


def noisy_accuracy(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    draws: int = 100,
    seed: int = 0,
    batch_size: int = 256,
    from_logits: bool = True,
) -> float:
    """Accuracy under uniform noise `x + eps * (2u - 1)`, `u ~ U[0, 1)`.

    The mean over `draws` noise draws (default 100, the paper's) of the
    accuracy over the inputs; the same draws as `compare_to_dense` with the
    same `seed`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_efficient.pruning import noisy_accuracy

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    x = np.random.rand(32, 8).astype("float32")
    y = np.random.randint(0, 3, size=32)
    print(noisy_accuracy(model, x, y, eps=0.1, draws=5))
    ```
    """
    y = _check_common(x, y, draws, seed, batch_size, from_logits)
    eps = v.check_number("eps", eps, min_value=0.0)
    (p,) = noisy_outputs([model], x, eps, draws, seed, batch_size, from_logits)
    return float((p.argmax(-1) == y).mean(axis=1).mean())


def _level_stats(pd, pp, y, eps):
    """The row of one noise level from outputs `(draws, n, classes)`."""
    per_draw = {
        "dense_accuracy": (pd.argmax(-1) == y).mean(axis=1),
        "pruned_accuracy": (pp.argmax(-1) == y).mean(axis=1),
        "top1_agreement": (pd.argmax(-1) == pp.argmax(-1)).mean(axis=1),
        "softmax_l2": np.linalg.norm(pd - pp, axis=-1).mean(axis=1),
    }
    row = {"eps": float(eps)}
    for name, values in per_draw.items():
        row[name] = float(values.mean())
        row[f"{name}_std"] = _std(values)
    row["dense_accuracy_draws"] = per_draw["dense_accuracy"]
    row["pruned_accuracy_draws"] = per_draw["pruned_accuracy"]
    return row


def compare_to_dense(
    dense: keras.Model,
    pruned: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    eps: tuple = (0.0, 0.1, 0.3, 0.5, 0.7),
    draws: int = 100,
    seed: int = 0,
    batch_size: int = 256,
    from_logits: bool = True,
) -> dict:
    """Compare a pruned model with its dense parent on `(x, y)`, clean and
    at every noise level, as the Lost in Pruning authors do.

    Args:
        dense: the dense parent model.
        pruned: the pruned model.
        x: inputs (a NumPy array).
        y: integer labels, shape `(n,)`.
        eps: noise levels for `x + eps * (2u - 1)`.
        draws: noise draws per level (default 100, the paper's).
        seed: noise seed (the same noise for both models, and for every
            call with the same seed and `x`).
        batch_size: prediction batch size.
        from_logits: whether the models output logits (softmax applied).

    Returns:
        A dict. Clean inputs: `dense_accuracy`, `pruned_accuracy`,
        `top1_agreement` (fraction of inputs with the same predicted
        class), `softmax_l2` (mean L2 distance of the softmax outputs).
        `noise`: one row per level, `{"eps", "dense_accuracy",
        "pruned_accuracy", "top1_agreement", "softmax_l2"}` (each averaged
        over the inputs of a draw, then over the draws), the same names
        with `_std` (standard deviation over the draws), and
        `dense_accuracy_draws` / `pruned_accuracy_draws` (NumPy arrays
        `(draws,)`, for `noisy_prune_potential`).

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
                             eps=(0.0, 0.1), draws=4)
    print(stats["top1_agreement"], stats["noise"][1]["softmax_l2"])
    ```
    """
    y = _check_common(x, y, draws, seed, batch_size, from_logits)
    if isinstance(eps, (str, bytes)) or np.ndim(eps) != 1:
        v.fail("eps", "a list of noise levels", eps, v.ArgumentTypeError)
    eps = [v.check_number("eps", e, min_value=0.0) for e in eps]
    models = [dense, pruned]
    pd, pp = noisy_outputs(models, x, 0.0, 1, seed, batch_size, from_logits)
    clean = _level_stats(pd, pp, y, 0.0)
    noise = []
    for e in eps:
        if e == 0.0:
            pd_e = np.broadcast_to(pd, (draws,) + pd.shape[1:])
            pp_e = np.broadcast_to(pp, (draws,) + pp.shape[1:])
        else:
            pd_e, pp_e = noisy_outputs(
                models, x, e, draws, seed, batch_size, from_logits
            )
        noise.append(_level_stats(pd_e, pp_e, y, e))
    names = ("dense_accuracy", "pruned_accuracy", "top1_agreement")
    return {
        **{name: clean[name] for name in names + ("softmax_l2",)},
        "noise": noise,
    }


def potential_per_draw(
    dense_draws: np.ndarray,
    sparsities: np.ndarray,
    accuracy_draws: np.ndarray,
    delta: float = 0.005,
) -> np.ndarray:
    """Prune potential of each draw: for draw `d`, the largest sparsity
    `s_i` with `accuracy_draws[i, d] - dense_draws[d] + delta > 0` (the
    authors' strict test), 0.0 if none. Shapes `(D,)`, `(S,)`, `(S, D)`.
    """
    gain = np.asarray(accuracy_draws, "float64") - np.asarray(dense_draws)
    ok = gain + delta > 0.0
    levels = np.where(ok, np.asarray(sparsities, "float64")[:, None], 0.0)
    return levels.max(axis=0, initial=0.0)


def prune_potential(
    dense_accuracy: float,
    results: list,
    delta: float = 0.005,
) -> float:
    """Largest sparsity whose accuracy stays within `delta` of dense.

    One draw (clean test accuracy); `noisy_prune_potential` gives it per
    noise draw. As the authors' code, a sparsity qualifies when
    `accuracy - dense_accuracy + delta > 0` (strictly), and the largest
    qualifying one counts even if a smaller one does not qualify.

    Args:
        dense_accuracy: accuracy of the dense model (fraction, not %).
        results: `(sparsity, accuracy)` pairs (any iterable of them).
        delta: allowed drop (default 0.005 = 0.5 points).

    Returns:
        The largest qualifying sparsity, 0.0 if none qualifies.

    Example:

    >>> prune_potential(0.90, [(0.5, 0.9), (0.8, 0.897), (0.9, 0.85)])
    0.8
    """
    dense_accuracy = v.check_fraction("dense_accuracy", dense_accuracy, True)
    delta = v.check_number("delta", delta, min_value=0.0)
    if isinstance(results, (str, bytes, dict)):
        v.fail("results", "a list of (sparsity, accuracy) pairs", results)
    results = list(results)
    if not all(isinstance(r, (tuple, list)) and len(r) == 2 for r in results):
        v.fail("results", "a list of (sparsity, accuracy) pairs", results)
    for s, a in results:
        v.check_fraction("results", s, allow_one=True)
        v.check_fraction("results", a, allow_one=True)
    if not results:
        return 0.0
    sparsities = np.array([float(s) for s, _ in results])
    accuracies = np.array([[float(a)] for _, a in results])
    (potential,) = potential_per_draw(
        np.array([dense_accuracy]), sparsities, accuracies, delta
    )
    return float(potential)


def _check_stats_results(results):
    """`(sparsities, noise rows per result)`, checked to share the noise."""
    what = "a list of (sparsity, compare_to_dense stats) pairs"
    if isinstance(results, (str, bytes, dict)):
        v.fail("results", what, results)
    results = list(results)
    if not results or not all(
        isinstance(r, (tuple, list))
        and len(r) == 2
        and isinstance(r[1], dict)
        and "noise" in r[1]
        for r in results
    ):
        v.fail("results", what, results)
    sparsities = np.array(
        [v.check_fraction("results", s, allow_one=True) for s, _ in results]
    )
    rows = [stats["noise"] for _, stats in results]
    for level, first in enumerate(rows[0]):
        if not all(
            len(r) == len(rows[0])
            and r[level]["eps"] == first["eps"]
            and np.array_equal(
                r[level]["dense_accuracy_draws"],
                first["dense_accuracy_draws"],
            )
            for r in rows
        ):
            raise ValueError(
                "`results` must come from `compare_to_dense` runs with the "
                "same dense model, `x`, `eps`, `draws` and `seed` (the same "
                "noise): their noise levels or dense accuracies per draw "
                "differ."
            )
    return sparsities, rows


def noisy_prune_potential(results: list, delta: float = 0.005) -> list[dict]:
    """Prune potential at every noise level, per draw, then summarised.

    Args:
        results: `(sparsity, stats)` pairs, `stats` from `compare_to_dense`
            of the model pruned to `sparsity` against the same dense model,
            with the same `x`, `eps`, `draws` and `seed` (so the same
            noise).
        delta: allowed accuracy drop (default 0.005 = 0.5 points).

    Returns:
        One dict per noise level: `eps`, `prune_potential` (mean over the
        draws of each draw's potential, see `potential_per_draw`),
        `prune_potential_std`, `prune_potential_mad` (median absolute
        deviation from that mean, the lower median for an even number of
        draws: what the authors report) and `draws` (the per-draw
        potentials).
    """
    delta = v.check_number("delta", delta, min_value=0.0)
    sparsities, rows = _check_stats_results(results)
    out = []
    for level, first in enumerate(rows[0]):
        dense = first["dense_accuracy_draws"]
        acc = np.stack([r[level]["pruned_accuracy_draws"] for r in rows])
        draws = potential_per_draw(dense, sparsities, acc, delta)
        mean = float(draws.mean())
        out.append(
            {
                "eps": first["eps"],
                "prune_potential": mean,
                "prune_potential_std": _std(draws),
                "prune_potential_mad": _lower_median(np.abs(draws - mean)),
                "draws": draws,
            }
        )
    return out
