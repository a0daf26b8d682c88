"""Pruning and distillation of a keras-hub LM under `ModelParallel`.

JAX only: the script runs in a subprocess so that
`--xla_force_host_platform_device_count=8` is set before JAX starts. A
tiny random-init `GemmaCausalLM` (grouped-query attention) is distilled
from a teacher's logits with `KnowledgeDistillationLoss` while
`MagnitudePruning(structure="transformer")` zeroes whole heads and
feed-forward neurons, once on one device and once on a 4 x 2 mesh laid out
by the backbone's own `get_layout_map`: the losses, weights and masks must
equal the one-device run, and every mask must be sharded like its kernel.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.harness import BACKEND

SCRIPT = textwrap.dedent(
    """
    import json
    import os

    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_force_host_platform_device_count=8"
    )
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras
    import keras_hub
    import numpy as np

    from keras_efficient.callbacks import MagnitudePruning
    from keras_efficient.losses import KnowledgeDistillationLoss
    from keras_efficient.pruning import ConstantSparsity

    VOCAB, LENGTH = 64, 8

    def make_model(seed):
        keras.utils.set_random_seed(seed)
        backbone = keras_hub.models.GemmaBackbone(
            vocabulary_size=VOCAB, num_layers=2, hidden_dim=16,
            intermediate_dim=32, head_dim=8, num_query_heads=4,
            num_key_value_heads=2,
        )
        return keras_hub.models.GemmaCausalLM(backbone, preprocessor=None)

    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (32, LENGTH)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    teacher = make_model(1)
    y = keras.ops.convert_to_numpy(teacher.predict(x, verbose=0))
    initial = make_model(0).get_weights()

    def run():
        student = make_model(0)
        student.set_weights(initial)
        student.compile(
            optimizer=keras.optimizers.Adam(0.01),
            loss=KnowledgeDistillationLoss(temperature=2.0),
            weighted_metrics=[],  # the task's token accuracy needs ids
            jit_compile=True,
        )
        pruning = MagnitudePruning(
            ConstantSparsity(0.5, begin_step=0, frequency=2),
            structure="transformer",
        )
        history = student.fit(x, y, batch_size=8, epochs=2, shuffle=False,
                              verbose=0, callbacks=[pruning])
        return student, pruning, history.history["loss"]

    plain, plain_pruning, plain_loss = run()
    mesh = keras.distribution.DeviceMesh(
        (4, 2), ["batch", "model"], keras.distribution.list_devices()
    )
    layout_map = keras_hub.models.GemmaBackbone.get_layout_map(mesh)
    dist = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )
    with dist.scope():
        sharded, sharded_pruning, sharded_loss = run()

    def spec(variable):
        return [str(a) for a in variable.value.sharding.spec]

    pairs = list(zip(
        sharded_pruning.target_weights.values(),
        sharded_pruning.mask_variables,
    ))
    np_ = keras.ops.convert_to_numpy
    print(json.dumps({
        "num_devices": jax.device_count(),
        "plain_loss": plain_loss,
        "sharded_loss": sharded_loss,
        "masks": len(pairs),
        "masks_equal": bool(all(
            np.array_equal(np_(a), np_(b)) for a, b in zip(
                plain_pruning.mask_variables, sharded_pruning.mask_variables
            )
        )),
        "pruned": float(np.mean([
            np_(m).mean() for m in sharded_pruning.mask_variables
        ])),
        "specs": {k.path: [spec(k), spec(m)] for k, m in pairs},
        "mask_devices": [len(m.value.sharding.device_set) for _, m in pairs],
        "weights_close": bool(all(
            np.allclose(a, b, atol=1e-5)
            for a, b in zip(plain.get_weights(), sharded.get_weights())
        )),
    }))
    """
)


@pytest.mark.skipif(BACKEND != "jax", reason="8 virtual CPU devices: JAX")
def test_prune_and_distil_gemma_on_a_mesh_equals_one_device():
    pytest.importorskip("keras_hub")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, KERAS_BACKEND="jax")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["num_devices"] == 8
    assert len(out["plain_loss"]) == 2
    for a, b in zip(out["plain_loss"], out["sharded_loss"]):
        assert abs(a - b) <= 1e-5 * max(abs(a), 1.0), (a, b)
    assert out["masks_equal"]
    assert out["weights_close"]
    assert out["masks"] > 0 and 0.3 < out["pruned"] < 0.9
    # Every mask is laid out like its kernel, over all 8 devices, and the
    # layout map shards some of them over "model".
    sharded_over_model = 0
    for path, (kernel_spec, mask_spec) in out["specs"].items():
        assert mask_spec == kernel_spec, path
        sharded_over_model += "model" in kernel_spec
    assert sharded_over_model >= 4, out["specs"]
    assert set(out["mask_devices"]) == {8}
