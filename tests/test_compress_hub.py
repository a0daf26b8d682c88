"""Activation importance and `compress` on keras-hub decoders and encoders.

The scores are checked against a NumPy forward pass written from the
published architectures (GPT-2: pre-norm LayerNorm, tanh GELU; BERT:
post-norm, segment embeddings; Llama: RMS norm, rotary, grouped-query
attention, SwiGLU), with a padding mask whose zero tokens must drop out
of the means.
"""

import keras
import numpy as np
import pytest

from keras_efficient.compress import compress
from keras_efficient.compress import compress_plan
from keras_efficient.compress import transformer_importance
from keras_efficient.compress.budget import counts_at
from keras_efficient.compress.budget import parameters_at
from keras_efficient.compress.budget import ratio_for_params
from keras_efficient.pruning import shrink
from keras_efficient.pruning import zero_transformer_units
from keras_efficient.pruning.transformer_families import Layout

keras_hub = pytest.importorskip("keras_hub")

VOCAB, LENGTH, D, FFN, LAYERS = 32, 8, 16, 32, 2


def _perturb(model, seed):
    """Larger weights than the initialiser's, so units differ clearly."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(v.numpy() + rng.normal(0, 0.3, v.shape).astype(v.dtype))
    return model


def gpt2(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=4, hidden_dim=D,
        intermediate_dim=FFN, max_sequence_length=LENGTH,
    )  # fmt: skip
    model = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    return _perturb(model, seed)


def bert(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=4, hidden_dim=D,
        intermediate_dim=FFN, max_sequence_length=LENGTH,
    )  # fmt: skip
    model = keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=None
    )
    return _perturb(model, seed)


def llama(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, hidden_dim=D,
        intermediate_dim=FFN, num_query_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    model = keras_hub.models.LlamaCausalLM(backbone, preprocessor=None)
    return _perturb(model, seed)


def _inputs(n=6, seed=1, segments=False):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (n, LENGTH)).astype("int32")
    mask = np.ones_like(ids)
    mask[0, 5:] = 0  # trailing padding: left out of the means
    mask[1, 3:] = 0
    x = {"token_ids": ids, "padding_mask": mask}
    if segments:
        x["segment_ids"] = (np.arange(LENGTH)[None] >= 4).astype("int32")
        x["segment_ids"] = np.repeat(x["segment_ids"], n, axis=0)
    return x


def _weights(model):
    return {
        v.path: keras.ops.convert_to_numpy(v).astype("float64")
        for v in model.weights
    }


def _layer_norm(x, w, name, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[name + "/gamma"] + w[
        name + "/beta"
    ]


def _rms_norm(x, w, name, eps=1e-6):
    return (
        x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w[name + "/scale"]
    )


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _rotary(x):
    half = x.shape[-1] // 2
    inverse = 10000.0 ** -(np.arange(half) * 2.0 / x.shape[-1])
    angles = np.arange(x.shape[1])[:, None] * inverse[None, :]
    cos, sin = np.cos(angles)[None, :, None], np.sin(angles)[None, :, None]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def _attention(q, k, v, mask, causal):
    """Per-head outputs `(b, t, heads, dim)`; `k`, `v` already repeated."""
    t = q.shape[1]
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    allowed = mask[:, None, None, :] > 0
    if causal:
        allowed = allowed & (np.tril(np.ones((t, t))) > 0)[None, None]
    logits = np.where(allowed, logits, -1e9)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


def _dense(x, w, name, bias=True):
    kernel = w[name + "/kernel"]
    out = np.tensordot(x, kernel, axes=1)
    return out + w[name + "/bias"] if bias else out


class _Means:
    """Masked means over tokens, accumulated like the importance."""

    def __init__(self, mask):
        self.m = mask.astype("float64")
        self.ffn, self.heads, self.hidden = [], [], 0.0

    def mean(self, value):
        return np.einsum("bt,bt...->...", self.m, value) / self.m.sum()

    def add_heads(self, out, group=1):
        norms = np.linalg.norm(out, axis=-1)  # (b, t, query heads)
        norms = norms.reshape(*norms.shape[:2], -1, group).sum(-1)
        self.heads.append(self.mean(norms))

    def result(self):
        return {"ffn": self.ffn, "heads": self.heads, "hidden": self.hidden}


def numpy_gpt2(model, x):
    w, mask = _weights(model), x["padding_mask"]
    ids = x["token_ids"]
    out = _Means(mask)
    h = (
        w["token_embedding/embeddings"][ids]
        + w["position_embedding/embeddings"][: ids.shape[1]]
    )
    for i in range(LAYERS):
        p = f"transformer_layer_{i}/"
        a = p + "self_attention/"
        n1 = _layer_norm(h, w, p + "self_attention_layer_norm", 1e-5)
        q, k, v = (_dense(n1, w, a + s) for s in ("query", "key", "value"))
        heads = _attention(q, k, v, mask, causal=True)
        out.add_heads(heads)
        h = h + np.einsum(
            "bthd,hdo->bto", heads, w[a + "attention_output/kernel"]
        )
        h = h + w[a + "attention_output/bias"]
        n2 = _layer_norm(h, w, p + "feedforward_layer_norm", 1e-5)
        neurons = _gelu(_dense(n2, w, p + "feedforward_intermediate_dense"))
        out.ffn.append(out.mean(np.abs(neurons)))
        out.hidden = out.hidden + out.mean(np.abs(n1)) + out.mean(np.abs(n2))
        h = h + _dense(neurons, w, p + "feedforward_output_dense")
    final = _layer_norm(h, w, "layer_norm", 1e-5)
    out.hidden = out.hidden + out.mean(np.abs(final))
    return out.result()


def numpy_bert(model, x):
    w, mask = _weights(model), x["padding_mask"]
    ids = x["token_ids"]
    out = _Means(mask)
    h = (
        w["token_embedding/embeddings"][ids]
        + w["position_embedding/embeddings"][: ids.shape[1]]
        + w["segment_embedding/embeddings"][x["segment_ids"]]
    )
    h = _layer_norm(h, w, "embeddings_layer_norm", 1e-12)
    out.hidden = out.mean(np.abs(h))
    for i in range(LAYERS):
        p = f"transformer_layer_{i}/"
        a = p + "self_attention_layer/"
        q, k, v = (_dense(h, w, a + s) for s in ("query", "key", "value"))
        heads = _attention(q, k, v, mask, causal=False)
        out.add_heads(heads)
        h = h + np.einsum(
            "bthd,hdo->bto", heads, w[a + "attention_output/kernel"]
        )
        h = h + w[a + "attention_output/bias"]
        h = _layer_norm(h, w, p + "self_attention_layer_norm", 1e-12)
        neurons = _gelu(_dense(h, w, p + "feedforward_intermediate_dense"))
        out.ffn.append(out.mean(np.abs(neurons)))
        out.hidden = out.hidden + out.mean(np.abs(h))
        h = h + _dense(neurons, w, p + "feedforward_output_dense")
        h = _layer_norm(h, w, p + "feedforward_layer_norm", 1e-12)
        out.hidden = out.hidden + out.mean(np.abs(h))
    return out.result()


def numpy_llama(model, x):
    w, mask = _weights(model), x["padding_mask"]
    out = _Means(mask)
    h = w["token_embedding/embeddings"][x["token_ids"]]
    for i in range(LAYERS):
        p = f"transformer_layer_{i}/"
        a = p + "self_attention/"
        n1 = _rms_norm(h, w, p + "self_attention_layernorm")
        q = _rotary(_dense(n1, w, a + "query", bias=False))
        k = _rotary(_dense(n1, w, a + "key", bias=False))
        v = _dense(n1, w, a + "value", bias=False)
        k, v = np.repeat(k, 2, axis=2), np.repeat(v, 2, axis=2)
        heads = _attention(q, k, v, mask, causal=True)
        out.add_heads(heads, group=2)  # 4 query heads, 2 key / value heads
        h = h + np.einsum(
            "bthd,hdo->bto", heads, w[a + "attention_output/kernel"]
        )
        n2 = _rms_norm(h, w, p + "feedforward_layernorm")
        gate = _dense(n2, w, p + "feedforward_gate_dense", bias=False)
        up = _dense(n2, w, p + "feedforward_intermediate_dense", bias=False)
        neurons = gate / (1 + np.exp(-gate)) * up
        out.ffn.append(out.mean(np.abs(neurons)))
        out.hidden = out.hidden + out.mean(np.abs(n1)) + out.mean(np.abs(n2))
        h = h + _dense(neurons, w, p + "feedforward_output_dense", bias=False)
    final = _rms_norm(h, w, "sequence_output_layernorm")
    out.hidden = out.hidden + out.mean(np.abs(final))
    return out.result()


FAMILIES = {
    "gpt2": (gpt2, numpy_gpt2, {}),
    "bert": (bert, numpy_bert, {"segments": True}),
    "llama": (llama, numpy_llama, {}),
}


def _check_scores(got, want):
    for axis in ("ffn", "heads"):
        assert len(got[axis]) == LAYERS
        for i in range(LAYERS):
            np.testing.assert_allclose(
                got[axis][i], want[axis][i], rtol=2e-4, atol=1e-5
            )
    np.testing.assert_allclose(got["hidden"], want["hidden"], rtol=2e-4)


@pytest.mark.parametrize(
    "family",
    ["gpt2", "bert", pytest.param("llama", marks=pytest.mark.slow)],
)
def test_activation_importance_matches_numpy(family):
    make, reference, options = FAMILIES[family]
    model = make()
    x = _inputs(**options)
    got = transformer_importance(model, x, "activation", batch_size=3)
    want = reference(model, x)
    _check_scores(got, want)
    # Padded tokens are left out: counting them changes the scores.
    unmasked = dict(x, padding_mask=np.ones_like(x["padding_mask"]))
    assert not np.allclose(reference(model, unmasked)["ffn"][0], got["ffn"][0])
    # The units really differ, so a permutation would be caught.
    assert np.ptp(want["ffn"][0]) > 0.1 * np.mean(want["ffn"][0])


def _equal_to_shrink_of_masked(model, x, ratios):
    small = compress(model, x, importance="activation", **ratios)
    assert type(small) is type(model)
    scores, plan = compress_plan(model, x, importance="activation", **ratios)
    masked = zero_transformer_units(model, plan)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(small(x)),
        keras.ops.convert_to_numpy(masked(x)),
        rtol=1e-4,
        atol=1e-4,
    )
    by_shrink = shrink(model, scores=scores, **ratios)
    for a, b in zip(small.weights, by_shrink.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Activation importance keeps other units than the weight norms do.
    magnitude = compress_plan(model, importance="magnitude", **ratios)[1]
    assert any(
        not np.array_equal(a, b) for a, b in zip(plan["ffn"], magnitude["ffn"])
    )
    return small


def test_compress_gpt2_equals_shrink_of_the_masked_model():
    # Heads go with hidden channels here (head size = hidden / heads), and
    # hidden removal changes the norms: feed-forward width is what a
    # masked model reproduces exactly.
    small = _equal_to_shrink_of_masked(gpt2(), _inputs(), dict(ffn_ratio=0.5))
    assert small.backbone.intermediate_dim == FFN // 2


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_compress_equals_shrink_of_the_masked_model(family):
    make, _, options = FAMILIES[family]
    _equal_to_shrink_of_masked(make(), _inputs(**options), dict(ffn_ratio=0.5))


@pytest.mark.slow
def test_compress_keras_hub_hidden_width_follows_the_scores():
    # Removing hidden channels changes every norm's statistics, so the
    # masked model is no reference there: the result is `shrink` with the
    # same scores, and the channels kept are the highest scored.
    model = bert()
    x = _inputs(segments=True)
    ratios = dict(head_ratio=0.5, hidden_ratio=0.5)
    small = compress(model, x, **ratios)
    scores, plan = compress_plan(model, x, **ratios)
    by_shrink = shrink(model, scores=scores, **ratios)
    for a, b in zip(small.weights, by_shrink.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    best = np.sort(np.argsort(scores["hidden"])[-D // 2 :])
    np.testing.assert_array_equal(np.sort(plan["hidden"]), best)
    assert small.backbone.hidden_dim == D // 2


def test_parameter_budget_on_grouped_query_attention():
    model = llama()
    layout = Layout(model)
    for ratio in (0.25, 0.5):
        want = shrink(model, ratio=ratio).count_params()
        assert parameters_at(layout, counts_at(layout, ratio)) == want
    small = compress(model, importance="magnitude", params=0.6)
    assert type(small) is type(model)
    assert small.count_params() <= 0.6 * model.count_params()
    # Two key / value groups: keeping both keeps every hidden channel
    # (head size = hidden / heads), which is over budget; one is the step.
    ratio = ratio_for_params(model, 0.6)
    over = parameters_at(layout, counts_at(layout, ratio - 1e-6))
    assert over > 0.6 * model.count_params()
    assert small.backbone.num_key_value_heads == 1
