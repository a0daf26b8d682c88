"""Sparse lookup tables and LSH mixture of experts: speed and quality.

Three comparisons, each in one process:

1. Table size. A byte-level LM block (embedding, MLP, table, MLP, head)
   with a `SparseLookupTable` of 2**16 entries against the same model with
   2**10 entries (parameters of the table x64), for the `token_id` lookup
   (hashed byte bigrams) and the `lsh` lookup. Figures: train step-time
   ratio (Adam, and SGD to separate the optimizer's dense update of the
   whole table from the lookup; `row_adam`: the table updates its read
   rows itself, `table_optimizer="adam"`) and forward-only (predict) time
   ratio.
2. Experts. The same LM block with a `MixtureOfExperts` of 16 experts
   (top-1, capacity factor 1.25) in place of its dense MLP of equal active
   width. Figure: step-time ratio, per router and grouped-matmul path.
3. Quality at equal active FLOPs on the LSH paper's synthetic task (a random
   degree-4 polynomial in 8 dimensions, inputs uniform in [-1, 1]^8, target
   scaled to unit variance): a dense one-hidden-layer MLP against an
   LSH-routed mixture of 16 such MLPs and against the dense MLP plus an LSH
   lookup table of scalars (2048 buckets per table). Figure: test MSE over
   seeds.

4. Scale (`--scale`, issue 16's targets): a dropless top-2 MoE of 16
   experts against the dense FFN of equal active width (step time) and
   its dropped fraction on clustered tokens; tables of 2**20 against 2**12
   entries of width 64 at 4,096 tokens a step (1,024 with `--quick`):
   token-id and router lookups with `table_optimizer="adam"`, the token-id
   table with `LazyAdam` on its dense gradient for contrast, the router
   against the default 2**12 router (dense scores) and against a 2**12
   product-key router; and the peak resident memory of a fresh process
   training each 2**20 table.

Router choices (dropless vs capacity, z-loss, shared expert) are compared
on quality in `benchmarks/moe_quality.py`; tasks and builders shared with it
live in `benchmarks/moe_tasks.py`.

Step times are compiled train steps (`jit_compile=True` on JAX and
TensorFlow; Adam unless the name says sgd), measured in interleaved rounds
after warm-up (median ratio per round).

    KERAS_BACKEND=jax python benchmarks/lookup_moe.py            # full
    KERAS_BACKEND=jax python benchmarks/lookup_moe.py --quick    # CI smoke
    KERAS_BACKEND=jax python benchmarks/lookup_moe.py --scale    # issue 16
    KERAS_BACKEND=tensorflow python benchmarks/lookup_moe.py --timing-only \
        --skip-moe-timing
"""

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import Progress  # noqa: E402
from benchmarks.common import compare_step_times  # noqa: E402
from benchmarks.common import figure  # noqa: E402
from benchmarks.common import median  # noqa: E402
from benchmarks.common import parse_args  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from benchmarks.moe_tasks import NUM_EXPERTS  # noqa: E402
from benchmarks.moe_tasks import POLY_DIM  # noqa: E402
from benchmarks.moe_tasks import POLY_HIDDEN  # noqa: E402
from benchmarks.moe_tasks import dense_flops  # noqa: E402
from benchmarks.moe_tasks import lm_data  # noqa: E402
from benchmarks.moe_tasks import mlp  # noqa: E402
from benchmarks.moe_tasks import peak_rss_gb  # noqa: E402
from benchmarks.moe_tasks import polynomial_task  # noqa: E402
from benchmarks.moe_tasks import table_model  # noqa: E402
from benchmarks.moe_tasks import train_regression  # noqa: E402
from keras_efficient.layers import MixtureOfExperts  # noqa: E402
from keras_efficient.layers import SparseLookupTable  # noqa: E402

FULL = dict(
    width=128,
    sequence_length=64,
    batch_size=32,
    timing_steps=10,
    timing_repeats=5,
    poly_train=16384,
    poly_test=8192,
    poly_epochs=15,
    seeds=3,
    table_width=64,
)
QUICK = dict(
    width=64,
    sequence_length=32,
    batch_size=16,
    timing_steps=4,
    timing_repeats=3,
    poly_train=4096,
    poly_test=2048,
    poly_epochs=4,
    seeds=1,
    table_width=64,
)
LSH_BITS = 11  # 2048 buckets per table
LSH_TABLES = 4


# ---------------------------------------------------------------- timing


def lm_block(
    config,
    table=None,
    ffn="dense",
    router="softmax",
    impl="auto",
    optimizer="adam",
    table_optimizer=None,
):
    """Embedding -> MLP -> [table] -> FFN -> head, on byte ids."""
    s, d = config["sequence_length"], config["width"]
    ids = keras.Input((s,), dtype="int32", name="ids")
    bigrams = keras.Input((s,), dtype="int32", name="bigrams")
    x = keras.layers.Embedding(256, d, name="embed")(ids)
    x = x + mlp(x, d, 4 * d, "mlp1")
    if table is not None:
        num_entries, lookup = table
        layer = SparseLookupTable(
            num_entries,
            lookup=lookup,
            token_mapping="hash",
            seed=0,
            table_optimizer=table_optimizer,
        )
        x = layer(x, bigrams) if lookup == "token_id" else layer(x)
    if ffn == "dense":
        x = x + mlp(x, d, 4 * d, "ffn")
    else:
        x = x + MixtureOfExperts(
            NUM_EXPERTS,
            4 * d,
            router=router,
            capacity_factor=1.25,
            implementation=impl,
            seed=0,
        )(x)
    logits = keras.layers.Dense(256, name="head")(x)
    model = keras.Model([ids, bigrams], logits)
    model.compile(
        optimizer=keras.optimizers.get(optimizer),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=keras.backend.backend() != "torch",
    )
    return model


def predict_ratio(models, x, lookup, repeats):
    """Forward-only (inference) time ratio, large table / small table."""
    batch = [a[: len(a) // 2] for a in x]
    for model in models.values():
        model.predict_on_batch(batch)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(5):
                model.predict_on_batch(batch)
            times[name].append((time.perf_counter() - start) / 5)
    ratios = [a / b for a, b in zip(times["large"], times["small"])]
    return figure(
        f"predict_time_ratio/table_2^16_vs_2^10/{lookup}",
        median(ratios),
        unit="x",
        note=f"forward only, median of {len(ratios)} rounds "
        f"{np.round(ratios, 3)}",
    )


def timing_figures(config, moe=True):
    n = config["batch_size"] * config["timing_steps"]
    x, y = lm_data(config, n)
    run = dict(
        batch_size=config["batch_size"],
        steps=config["timing_steps"],
        repeats=config["timing_repeats"],
    )
    figures = []
    # Adam is the headline; SGD (no slots) shows how much of the gap is the
    # optimizer's dense update of the whole table; "row_adam" tables update
    # their read rows themselves (`table_optimizer="adam"`).
    setups = (
        ("token_id", "adam"),
        ("token_id", "row_adam"),
        ("lsh", "adam"),
        ("lsh", "row_adam"),
        ("lsh", "sgd"),
    )
    for lookup, opt in setups:
        keras.utils.set_random_seed(0)
        block = dict(
            optimizer="adam" if opt == "row_adam" else opt,
            table_optimizer="adam" if opt == "row_adam" else None,
        )
        models = {
            "small": lm_block(config, table=(2**10, lookup), **block),
            "large": lm_block(config, table=(2**16, lookup), **block),
        }
        params = {k: m.count_params() for k, m in models.items()}
        if opt == "adam":
            figures.append(predict_ratio(models, x, lookup, run["repeats"]))
        times = compare_step_times(models, x, y, baseline="small", **run)
        ratios = times["large"]["ratios"]
        figures.append(
            figure(
                f"step_time_ratio/table_2^16_vs_2^10/{lookup}_{opt}",
                median(ratios),
                target=("<=", 1.15),
                unit="x",
                note=(
                    f"median of {len(ratios)} rounds {np.round(ratios, 3)}; "
                    f"params {params['small']:,} -> {params['large']:,}; "
                    f"small step "
                    f"{1e3 * median(times['small']['step_seconds']):.1f} ms"
                ),
            )
        )
        print_table(figures[-2 if opt == "adam" else -1 :])
    if not moe:
        return figures

    keras.utils.set_random_seed(0)
    models = {"dense": lm_block(config)}
    variants = [("softmax", "auto"), ("lsh", "auto")]
    if keras.backend.backend() == "jax":
        variants += [("softmax", "ragged")]
    for router, impl in variants:
        models[f"moe_{router}_{impl}"] = lm_block(
            config, ffn="moe", router=router, impl=impl
        )
    times = compare_step_times(models, x, y, baseline="dense", **run)
    dense_ms = 1e3 * median(times["dense"]["step_seconds"])
    for name in models:
        if name == "dense":
            continue
        ratios = times[name]["ratios"]
        figures.append(
            figure(
                f"step_time_ratio/moe{NUM_EXPERTS}_vs_dense/{name[4:]}",
                median(ratios),
                target=("<=", 1.5),
                unit="x",
                note=(
                    f"median of {len(ratios)} rounds {np.round(ratios, 3)}; "
                    f"dense step {dense_ms:.1f} ms; top-1, capacity 1.25"
                ),
            )
        )
    print_table(figures[-len(models) + 1 :])
    return figures


# ---------------------------------------------------------------- quality


def regression_models():
    """name -> (builder, active FLOPs per example)."""
    h = POLY_HIDDEN
    hash_flops = 2 * POLY_DIM * LSH_BITS * LSH_TABLES
    # The table model gives up hidden units to pay for its hashing.
    h_table = h - math.ceil(hash_flops / dense_flops(1))
    moe_hash = 2 * POLY_DIM * int(math.log2(NUM_EXPERTS))
    h_moe = h - math.ceil(moe_hash / dense_flops(1))

    def dense():
        x = keras.Input((POLY_DIM,))
        return keras.Model(x, mlp(x, 1, h, "mlp"))

    def lsh_table():
        x = keras.Input((POLY_DIM,))
        table = SparseLookupTable(
            LSH_TABLES * 2**LSH_BITS,
            dim=1,
            lookup="lsh",
            consume="concat",
            num_tables=LSH_TABLES,
            embeddings_initializer="zeros",
            seed=0,
        )(x)
        entry = table[:, POLY_DIM:]
        return keras.Model(x, mlp(x, 1, h_table, "mlp") + entry)

    def lsh_moe():
        x = keras.Input((POLY_DIM,))
        y = MixtureOfExperts(
            NUM_EXPERTS,
            h_moe,
            router="lsh",
            output_dim=1,
            capacity_factor=None,
            seed=0,
        )(x)
        return keras.Model(x, y)

    return {
        "dense": (dense, dense_flops(h)),
        "lsh_table": (lsh_table, dense_flops(h_table) + hash_flops),
        "lsh_moe": (lsh_moe, dense_flops(h_moe) + moe_hash),
    }


def quality_figures(config):
    models = regression_models()
    mse = {name: [] for name in models}
    params = {}
    runs = Progress(
        [(s, n) for s in range(config["seeds"]) for n in models], "run"
    )
    for seed, name in runs:
        if name == next(iter(models)):  # a new seed
            n_train, n_test = config["poly_train"], config["poly_test"]
            data = polynomial_task(n_train, n_test, seed)
        builder, _ = models[name]
        start = time.perf_counter()
        value, params[name], _ = train_regression(
            builder, data, config["poly_epochs"], seed
        )
        mse[name].append(value)
        runs.log(
            f"seed {seed} {name}: test MSE {value:.4f} "
            f"({time.perf_counter() - start:.0f} s)"
        )
    figures = []
    for name, (_, flops) in models.items():
        target = (
            None if name == "dense" else ("<", float(np.mean(mse["dense"])))
        )
        figures.append(
            figure(
                f"poly_mse/{name}",
                mse[name],
                target=target,
                note=f"{flops:,} active FLOPs/example, {params[name]:,} params",
            )
        )
    print_table(figures, "test MSE at equal active FLOPs")
    return figures


# Table configurations of the scale figures: name -> (lookup, model
# optimizer, table arguments). "row" tables update themselves in the
# backward pass (`table_optimizer`); "dense" ones get the model optimizer's
# dense table-sized gradient (LazyAdam: the row-masked update).
TABLE_SETUPS = {
    "token_id_row_adam": ("token_id", "adam", {"table_optimizer": "adam"}),
    "token_id_lazyadam_dense_gradient": ("token_id", "lazyadam", {}),
    "router_row_adam": ("router", "adam", {"table_optimizer": "adam"}),
    "router_product_keys_row_adam": (
        "router",
        "adam",
        {"table_optimizer": "adam", "router_type": "product_keys"},
    ),
}


def _table_model(setup, num_entries, tokens, width):
    from keras_efficient.optimizers import LazyAdam

    lookup, optimizer, table_args = TABLE_SETUPS[setup]
    optimizer = LazyAdam() if optimizer == "lazyadam" else optimizer
    return table_model(
        num_entries, lookup, tokens, width, optimizer, **table_args
    )


def _table_tokens(config):
    return 1024 if config.get("quick") else 4096


def table_peak_memory(setup, bits, config):
    """Peak RSS (GiB) of a fresh process training one table model 4 steps.

    Runs this script again with `--peak-memory-of`, so the figure is the
    whole process (Python, the backend runtime, the model and its optimizer
    state, the compiled step's buffers) and nothing else.
    """
    import subprocess

    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--peak-memory-of",
        f"{setup}:{bits}",
    ] + (["--quick"] if config.get("quick") else [])
    out = subprocess.run(
        command, capture_output=True, text=True, check=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def _print_peak_memory(spec, config):
    setup, bits = spec.split(":")
    tokens = _table_tokens(config)
    ids = np.random.default_rng(0).integers(0, 256, (4, tokens))
    model = _table_model(setup, 2 ** int(bits), tokens, config["table_width"])
    model.fit(ids, ids, batch_size=1, epochs=1, verbose=0)
    print(peak_rss_gb())


def scale_figures(config):
    """Dropless MoE vs dense, clustered drops, 2**20 tables (issue 16)."""
    d, s = config["width"], config["sequence_length"]
    n = config["batch_size"] * config["timing_steps"]
    x, y = lm_data(config, n)
    steps, reps = config["timing_steps"], config["timing_repeats"]
    bs = config["batch_size"]

    def moe_lm(dense):
        ids = keras.Input((s,), dtype="int32")
        h = keras.layers.Embedding(256, d)(ids)
        h = h + (mlp(h, d, 8 * d, "ffn") if dense else MixtureOfExperts(
            NUM_EXPERTS, 4 * d, router="softmax", top_k=2)(h))
        m = keras.Model(ids, keras.layers.Dense(256)(h))
        m.compile("adam", keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), jit_compile=keras.backend.backend() != "torch")
        return m

    figs = []
    if not config.get("skip_moe"):
        res = compare_step_times(
            {"dense": moe_lm(True), "moe": moe_lm(False)}, x[0], y, bs,
            steps, reps)
        figs.append(figure(
            "moe_dropless_top2_vs_dense_equal_active/step_ratio",
            res["moe"]["ratios"], ("<=", 1.3), "x",
            note=f"dense step {median(res['dense']['step_seconds']) * 1e3:.1f}"
            " ms"))
        moe = MixtureOfExperts(NUM_EXPERTS, 16, router="softmax", top_k=2)
        clustered = np.ones((4096, d), "float32") + np.random.default_rng(
            0).normal(scale=0.01, size=(4096, d)).astype("float32")
        moe(clustered)
        figs.append(figure("moe_dropless/clustered_dropped_fraction",
                           float(moe.dropped_fraction), ("<=", 0.0)))
    tokens, d = _table_tokens(config), config["table_width"]
    ids = np.random.default_rng(0).integers(0, 256, (8, tokens))
    # name -> (setup of the 2**20 table, setup of its 2**12 baseline, target)
    comparisons = {
        "table_token_id_row_adam": (
            "token_id_row_adam", "token_id_row_adam", 1.1),
        "table_token_id_lazyadam_dense_gradient": (
            "token_id_lazyadam_dense_gradient",
            "token_id_lazyadam_dense_gradient", 1.1),
        "table_router_row_adam_vs_default_2^12": (
            "router_row_adam", "router_row_adam", 1.2),
        "table_router_row_adam_vs_product_keys_2^12": (
            "router_row_adam", "router_product_keys_row_adam", 1.2),
    }
    for name, (big, small, target) in comparisons.items():
        if config.get("quick") and "dense_gradient" in name:
            continue  # ~0.4 s a step at 2**20; full mode only
        models = {
            "2^12": _table_model(small, 2**12, tokens, d),
            "2^20": _table_model(big, 2**20, tokens, d),
        }
        res = compare_step_times(models, ids, ids, 1, 4, reps)
        small_ms = median(res["2^12"]["step_seconds"]) * 1e3
        big_ms = median(res["2^20"]["step_seconds"]) * 1e3
        figs.append(figure(
            f"{name}/2^20_vs_2^12_step_ratio", res["2^20"]["ratios"],
            ("<=", target), "x",
            note=f"{tokens} tokens/step; 2^12 [{small}] {small_ms:.1f} ms, "
            f"2^20 [{big}] {big_ms:.1f} ms"))
        del models
    for setup in ("token_id_row_adam", "router_row_adam"):
        figs.append(figure(
            f"table_{setup}/2^20_peak_rss_gb",
            table_peak_memory(setup, 20, config), ("<", 2.0), "GiB",
            note=f"whole process, fresh, {tokens} tokens/step, 4 steps; "
            f"table + 2 Adam moments {3 * 2**20 * d * 4 / 2**30:.2f} GiB"))
    return figs


def main():
    def extra(parser):
        parser.add_argument(
            "--scale", action="store_true",
            help="only the dropless-MoE / 2**20-table scale figures",
        )
        parser.add_argument(
            "--timing-only", action="store_true", help="skip the MSE part"
        )
        parser.add_argument(
            "--peak-memory-of",
            help="internal: SETUP:BITS, train one table model, print peak RSS",
        )
        parser.add_argument(
            "--skip-moe-timing",
            action="store_true",
            help="skip the MoE step times (on TensorFlow with XLA the MoE "
            "model's first step did not finish in minutes on a 2-core CPU)",
        )

    args = parse_args(__doc__.splitlines()[0], extra)
    config = dict(QUICK if args.quick else FULL)
    if args.seeds:
        config["seeds"] = args.seeds
    start = time.perf_counter()
    config["quick"] = args.quick
    config["skip_moe"] = args.skip_moe_timing
    if args.peak_memory_of:
        _print_peak_memory(args.peak_memory_of, config)
        return
    if args.scale:
        figures = scale_figures(config)
        print_table(figures, f"lookup / MoE scale ({keras.backend.backend()})")
        write_results("lookup_moe.scale", figures, args,
                      extra={"config": config})
        return
    figures = timing_figures(config, moe=not args.skip_moe_timing)
    if not args.timing_only:
        figures += quality_figures(config)
    print_table(figures, f"lookup / MoE ({keras.backend.backend()})")
    write_results(
        "lookup_moe",
        figures,
        args,
        extra={
            "config": config,
            "seconds": round(time.perf_counter() - start, 1),
        },
    )


if __name__ == "__main__":
    main()
