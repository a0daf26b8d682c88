"""Compress a trained Transformer: score its units, keep the best.

`compress(model, data, ffn_ratio=, head_ratio=, hidden_ratio=)` (or
`params=`, a parameter budget) scores every feed-forward neuron, head and
hidden channel on calibration data (`transformer_importance`) and returns
`shrink(model, ..., scores=...)`: the same class, narrower, with the kept
weights copied. Its quality comes
back with `distill(model, compressed, data)` (Minitron: prune, then
distil from the original).
"""

from typing import Any

import keras

from keras_efficient._validation import check_instance
from keras_efficient._validation import fail
from keras_efficient.compress.budget import ratio_for_params
from keras_efficient.compress.importance import transformer_importance
from keras_efficient.pruning.shrink import shrink
from keras_efficient.pruning.transformer_families import find_family
from keras_efficient.pruning.transformer_units import select_transformer_units


def _check_model(model):
    check_instance("model", model, keras.Model, "a keras.Model")
    if find_family(model) is None:
        fail(
            "model",
            "a `TransformerLM` or a keras-hub task or backbone that "
            "`shrink` knows (GPT-2, BERT, Llama, Mistral, Qwen3, Gemma)",
            type(model).__name__,
        )


def compress_plan(
    model: keras.Model,
    data: Any = None,
    ffn_ratio: float | None = None,
    head_ratio: float | None = None,
    hidden_ratio: float | None = None,
    importance: str = "activation",
    batch_size: int = 8,
    num_batches: int | None = None,
    loss: Any = None,
    uniform: bool = True,
    params: float | None = None,
) -> tuple[dict, dict]:
    """`(scores, plan)`: the importance and the units `compress` keeps.

    Arguments as in `compress`. `plan` is what `select_transformer_units`
    returns (`zero_transformer_units(model, plan)` is the masked model).
    """
    _check_model(model)
    widths = _widths(model, ffn_ratio, head_ratio, hidden_ratio, params)
    scores = transformer_importance(
        model, data, importance, batch_size, num_batches, loss
    )
    plan = select_transformer_units(
        model, scores=scores, uniform=uniform, **widths
    )
    return scores, plan


def _widths(model, ffn_ratio, head_ratio, hidden_ratio, params):
    """The width arguments of `shrink`: the ratios, or the budget's."""
    ratios = (ffn_ratio, head_ratio, hidden_ratio)
    if params is not None:
        if any(r is not None for r in ratios):
            fail(
                "params",
                "None when `ffn_ratio`, `head_ratio` or `hidden_ratio` is "
                "given (a budget or widths, not both)",
                params,
            )
        return {"ratio": ratio_for_params(model, params)}
    if all(r is None for r in ratios):
        fail(
            "ffn_ratio",
            "a fraction in [0, 1) (or give `head_ratio` / `hidden_ratio`, "
            "or a parameter budget `params`): compress needs at least one "
            "width to remove",
            ffn_ratio,
        )
    return dict(zip(("ffn_ratio", "head_ratio", "hidden_ratio"), ratios))


def compress(
    model: keras.Model,
    data: Any = None,
    ffn_ratio: float | None = None,
    head_ratio: float | None = None,
    hidden_ratio: float | None = None,
    importance: str = "activation",
    batch_size: int = 8,
    num_batches: int | None = None,
    loss: Any = None,
    uniform: bool = True,
    params: float | None = None,
) -> keras.Model:
    """A narrower model of the same class, its units chosen on `data`.

    Args:
        model: a trained `TransformerLM` or keras-hub task or backbone
            (GPT-2, BERT, Llama, Mistral, Qwen3, Gemma).
        data: calibration data (inputs `x`, `(x, y)`, or an iterable of
            batches; see `calibration_batches`).
        ffn_ratio: fraction of the feed-forward neurons to remove.
        head_ratio: fraction of the heads (key / value groups) to remove.
        hidden_ratio: fraction of the hidden channels to remove. Where the
            head size is `hidden_dim / num_heads` (GPT-2, BERT, Llama)
            heads and hidden go together, in the same proportion (give
            both); `TransformerLM` has its own `head_dim`.
        importance: `"activation"` (Minitron), `"taylor"` (LLM-Pruner) or
            `"magnitude"`.
        batch_size, num_batches: how `data` is read.
        loss: the loss of `"taylor"` (default: the LM loss).
        uniform: `True`: every layer loses the same share; `False` (a
            `TransformerLM`): the best-scoring units across all layers
            stay, so each layer keeps the width its importance earns
            (see `shrink`).
        params: instead of the ratios, a parameter budget: a fraction in
            (0, 1] of the parameters of `model`. The same share is removed
            of every axis the class expresses (the smallest share that
            meets the budget, see `compress/budget.py`).

    Returns:
        A new, uncompiled model of the class of `model`.

    Example:

    >>> import numpy as np
    >>> from keras_efficient.applications import TransformerLM
    >>> from keras_efficient.compress import compress
    >>> model = TransformerLM(vocabulary_size=32, sequence_length=8,
    ...     hidden_dim=16, num_layers=2, num_heads=2)
    >>> x = np.random.randint(0, 32, size=(4, 8))
    >>> small = compress(model, x, ffn_ratio=0.5)
    >>> small.intermediate_dim
    32
    >>> half = compress(model, x, params=0.5)
    >>> half.count_params() <= 0.5 * model.count_params()
    True
    """
    _check_model(model)
    widths = _widths(model, ffn_ratio, head_ratio, hidden_ratio, params)
    scores = transformer_importance(
        model, data, importance, batch_size, num_batches, loss
    )
    return shrink(model, scores=scores, uniform=uniform, **widths)
