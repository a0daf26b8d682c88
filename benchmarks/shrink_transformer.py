"""Transformer width removal: parameters, FLOPs and forward latency.

A small random-init keras-hub GPT-2 (`GPT2CausalLM`, no preset) and the
package's `TransformerLM`, each shrunk two ways with `shrink`:

- **ffn**: half the feed-forward neurons of every layer
  (`ffn_ratio=0.5`);
- **ffn+heads**: half the neurons and half the heads (`ratio=0.5`; both
  classes derive the head size from `hidden_dim / num_heads`, so half the
  hidden channels go with the heads).

FLOPs per token are counted from the weights: `2 *` every projection
kernel (the tied output head included) plus the two attention products,
`4 * T * heads * head_dim` per layer. Latency: one forward of a batch
through `predict_on_batch` (compiled), the original and its shrunk copies
interleaved round by round, after two untimed calls each; median and
10th / 90th percentiles over the rounds, and the median of the per-round
speed-ups (original / shrunk) with its 10th / 90th percentiles.

    KERAS_BACKEND=jax python benchmarks/shrink_transformer.py [--quick]
"""

import json
import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras_hub  # noqa: E402

from benchmarks.common import RESULTS_DIR  # noqa: E402
from benchmarks.common import machine_description  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from keras_efficient.applications import TransformerLM  # noqa: E402
from keras_efficient.pruning import shrink  # noqa: E402
from keras_efficient.pruning import transformer_widths  # noqa: E402


def _models(size):
    hidden, layers, heads, length, vocab = size
    gpt2 = keras_hub.models.GPT2CausalLM(
        keras_hub.models.GPT2Backbone(
            vocabulary_size=vocab, num_layers=layers, num_heads=heads,
            hidden_dim=hidden, intermediate_dim=4 * hidden,
            max_sequence_length=length,
        ),
        preprocessor=None,
    )  # fmt: skip
    lm = TransformerLM(
        vocabulary_size=vocab, sequence_length=length, hidden_dim=hidden,
        num_layers=layers, num_heads=heads, positions="learned",
    )  # fmt: skip
    return {"gpt2": gpt2, "transformer_lm": lm}


def flops_per_token(model, length):
    """2 x every projection kernel + the attention products, per token."""
    backbone = getattr(model, "backbone", model)
    config = backbone.get_config()
    names = [v.path.split("/")[-1] for v in model.weights]
    matmul = sum(
        int(np.prod(v.shape))
        for v, name in zip(model.weights, names)
        if name in ("kernel", "reverse_embeddings")
    )
    if "reverse_embeddings" not in names and hasattr(model, "backbone"):
        matmul += config["vocabulary_size"] * config["hidden_dim"]  # tied
    heads = transformer_widths(model)["heads"]
    head_dim = config.get("head_dim") or (
        config["hidden_dim"] // config["num_heads"]
    )
    attention = sum(4 * length * h * head_dim for h in heads)
    return 2 * matmul + attention


def interleaved_latency(models, x, rounds):
    """Per-model forward times (ms), the models timed in turn each round."""
    for model in models:
        model.predict_on_batch(x)
        model.predict_on_batch(x)
    times = [[] for _ in models]
    for _ in range(rounds):
        for t, model in zip(times, models):
            start = time.perf_counter()
            model.predict_on_batch(x)
            t.append(1000.0 * (time.perf_counter() - start))
    return [np.array(t) for t in times]


def _summary(values):
    return {
        "median": float(np.median(values)),
        "p10": float(np.percentile(values, 10)),
        "p90": float(np.percentile(values, 90)),
    }


def main():
    args = parse_args(__doc__.splitlines()[0])
    size = (64, 2, 4, 64, 256) if args.quick else (256, 4, 8, 128, 1024)
    batch = 4 if args.quick else 16
    rounds = 5 if args.quick else 40
    hidden, layers, heads, length, vocab = size
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, (batch, length)).astype("int32")
    results = {}
    for name, model in _models(size).items():
        x = ids if name == "transformer_lm" else {
            "token_ids": ids, "padding_mask": np.ones_like(ids),
        }  # fmt: skip
        variants = {
            "original": model,
            "ffn": shrink(model, ffn_ratio=0.5),
            "ffn+heads": shrink(model, ratio=0.5),
        }
        times = interleaved_latency(list(variants.values()), x, rounds)
        base = times[0]
        out = {}
        for (key, m), t in zip(variants.items(), times):
            out[key] = {
                "params": int(m.count_params()),
                "flops_per_token": int(flops_per_token(m, length)),
                "widths": transformer_widths(m),
                "latency_ms": _summary(t),
                "speedup_per_round": _summary(base / t),
            }
        for key in out:
            out[key]["params_ratio"] = (
                out[key]["params"] / out["original"]["params"]
            )
            out[key]["flops_ratio"] = (
                out[key]["flops_per_token"] / out["original"]["flops_per_token"]
            )
            print(
                f"{name:15s} {key:10s} params {out[key]['params']:>9,d} "
                f"({out[key]['params_ratio']:.2f}x) flops/token "
                f"{out[key]['flops_ratio']:.2f}x latency "
                f"{out[key]['latency_ms']['median']:.2f} ms "
                f"[{out[key]['latency_ms']['p10']:.2f}, "
                f"{out[key]['latency_ms']['p90']:.2f}] speed-up "
                f"{out[key]['speedup_per_round']['median']:.2f}x "
                f"[{out[key]['speedup_per_round']['p10']:.2f}, "
                f"{out[key]['speedup_per_round']['p90']:.2f}]"
            )
        results[name] = out
    backend = keras.backend.backend()
    suffix = ".quick" if args.quick else ""
    path = args.output or os.path.join(
        RESULTS_DIR, f"shrink_transformer.{backend}{suffix}.json"
    )
    payload = {
        "benchmark": "shrink_transformer",
        "command": "python " + " ".join(sys.argv),
        "mode": "quick" if args.quick else "full",
        "machine": machine_description(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {
            "hidden_dim": hidden,
            "num_layers": layers,
            "num_heads": heads,
            "sequence_length": length,
            "vocabulary_size": vocab,
            "batch_size": batch,
            "rounds": rounds,
        },  # fmt: skip
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
