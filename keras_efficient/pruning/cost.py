"""Parameters, FLOPs and measured latency of a model, before and after.

FLOPs are counted from layer shapes (one multiply-add = 2 FLOPs): Dense
and EinsumDense, convolutions (plain, depthwise, separable) and
`MultiHeadAttention` (projections and the two attention products). Other
layers with weights (e.g. a Transformer block) count `2 * params` per
output position, a lower bound that ignores their attention products.
Element-wise layers are not counted.
"""

import time

import keras
import numpy as np

from keras_efficient._validation import check_instance
from keras_efficient._validation import check_positive_int
from keras_efficient.pruning import graph

L = keras.layers


def _positions(shape):
    """Output positions (all axes but batch and channels)."""
    return int(np.prod([d or 1 for d in shape[1:-1]])) if len(shape) > 2 else 1


def _attention_flops(layer):
    q_shape = layer.query_dense.kernel.shape  # (dim, heads, key_dim)
    o_shape = layer.output_dense.kernel.shape  # (heads, value_dim, out)
    tokens = _positions(layer.output.shape)
    projections = sum(
        int(np.prod(d.kernel.shape))
        for d in (layer.query_dense, layer.key_dense, layer.value_dense)
    )
    products = q_shape[1] * tokens * (q_shape[2] + o_shape[1])
    return 2 * tokens * (projections + int(np.prod(o_shape)) + products)


def layer_flops(layer: keras.Layer) -> float:
    """FLOPs of one call of `layer` for one example (0 if not counted)."""
    if not layer.weights:
        return 0
    try:
        out_shape = layer.output.shape
    except (AttributeError, ValueError):
        return 0
    if isinstance(layer, L.MultiHeadAttention):
        return _attention_flops(layer)
    if isinstance(layer, L.Embedding):
        return 0
    if isinstance(layer, graph.SEPARABLE):
        size = int(np.prod(layer.depthwise_kernel.shape))
        size += int(np.prod(layer.pointwise_kernel.shape))
        return 2 * size * _positions(out_shape)
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D) + graph.DEPTHWISE):
        return 2 * int(np.prod(layer.kernel.shape)) * _positions(out_shape)
    if isinstance(layer, (L.Dense, L.EinsumDense)):
        return 2 * int(np.prod(layer.kernel.shape)) * _positions(out_shape)
    if isinstance(layer, L.BatchNormalization):
        return 0
    params = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    return 2 * params * _positions(out_shape)


def _timer(model, x):
    if keras.backend.backend() == "torch":
        import torch

        def run():
            with torch.no_grad():
                keras.ops.convert_to_numpy(model(x, training=False))

        return run
    return lambda: model.predict_on_batch(x)


def measure_latency(
    models: dict[str, keras.Model],
    input_shape: tuple[int, ...] | None,
    batch_size: int = 64,
    rounds: int = 30,
    seed: int = 0,
) -> list[dict]:
    """Median and spread of inference latency (ms), models interleaved.

    Each round times one batch on every model in turn (A, B, A, B, ...),
    so a slow moment of a shared machine hits all of them alike. The
    first call of each model (compilation) is not timed. JAX and
    TensorFlow run `predict_on_batch` (compiled); torch runs the eager
    model under `torch.no_grad()`.

    Returns:
        A list with one dict per model: `median_ms`, `p10_ms`, `p90_ms`.
    """
    rounds = check_positive_int("rounds", rounds)
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size,) + tuple(input_shape)).astype("float32")
    runs = [_timer(m, x) for m in models]
    for run in runs:
        run()
        run()
    times = [[] for _ in runs]
    for _ in range(rounds):
        for t, run in zip(times, runs):
            start = time.perf_counter()
            run()
            t.append(1000.0 * (time.perf_counter() - start))
    return [
        {
            "median_ms": float(np.median(t)),
            "p10_ms": float(np.percentile(t, 10)),
            "p90_ms": float(np.percentile(t, 90)),
        }
        for t in times
    ]


def model_cost(
    model: keras.Model,
    input_shape: tuple[int, ...] | None = None,
    batch_size: int = 64,
    rounds: int = 30,
) -> dict:
    """Parameters, FLOPs per example and inference latency of a model.

    Args:
        model: a built `keras.Model`.
        input_shape: shape of one example (no batch axis) for the latency
            measurement; `None` skips it (e.g. integer token inputs).
        batch_size: batch of the latency measurement.
        rounds: timed batches (the median is reported).

    Returns:
        A dict: `params`, `flops` (per example) and, with `input_shape`,
        `latency_ms` (median) and `latency_p10_ms` / `latency_p90_ms`.

    Example:

    ```python
    import keras
    from keras_efficient.pruning.cost import model_cost

    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    cost = model_cost(model, (8,), batch_size=2, rounds=2)
    assert cost["params"] == 36 and cost["flops"] == 64
    ```
    """
    check_instance("model", model, keras.Model, "a keras.Model")
    batch_size = check_positive_int("batch_size", batch_size)
    cost = {
        "params": int(model.count_params()),
        "flops": int(sum(layer_flops(layer) for layer in model.layers)),
    }
    if input_shape is not None:
        t = measure_latency([model], input_shape, batch_size, rounds)[0]
        cost["latency_ms"] = t["median_ms"]
        cost["latency_p10_ms"] = t["p10_ms"]
        cost["latency_p90_ms"] = t["p90_ms"]
    return cost


def compare_cost(
    dense: keras.Model,
    pruned: keras.Model,
    input_shape: tuple[int, ...] | None,
    batch_size: int = 64,
    rounds: int = 30,
) -> dict:
    """`model_cost` of two models with interleaved latency rounds, and the
    ratios `pruned / dense` (`params_ratio`, `flops_ratio`) and the speed-up
    `dense / pruned` latency.

    Example:

    ```python
    import keras
    from keras_efficient.pruning.cost import compare_cost

    inputs = keras.Input((8,))
    a = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    report = compare_cost(a, a, (8,), batch_size=2, rounds=2)
    assert report["params_ratio"] == 1.0
    ```
    """
    t = measure_latency([dense, pruned], input_shape, batch_size, rounds)
    out = {}
    for key, model, times in (("dense", dense, t[0]), ("pruned", pruned, t[1])):
        cost = model_cost(model)
        cost.update({f"latency_{k}": v for k, v in times.items()})
        out[key] = cost
    out["params_ratio"] = out["pruned"]["params"] / out["dense"]["params"]
    out["flops_ratio"] = out["pruned"]["flops"] / max(out["dense"]["flops"], 1)
    out["speedup"] = (
        out["dense"]["latency_median_ms"] / out["pruned"]["latency_median_ms"]
    )
    return out
