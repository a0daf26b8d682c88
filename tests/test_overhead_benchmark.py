"""The overhead benchmark's core functions on tiny shapes, and its floor
arithmetic on hand-computed cases (no timing is asserted)."""

import os
import sys

import keras
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks import overhead_floor  # noqa: E402
from benchmarks import overhead_hlo  # noqa: E402
from benchmarks import overhead_measure  # noqa: E402
from benchmarks import overhead_models  # noqa: E402
from benchmarks import overhead_targets  # noqa: E402


def test_floor_ratio_takes_the_larger_fraction():
    f = overhead_floor.floor_ratio(100.0, 1000.0, 5.0, 20.0)
    assert f["flop_fraction"] == pytest.approx(0.05)
    assert f["byte_fraction"] == pytest.approx(0.02)
    assert f["floor"] == pytest.approx(1.05)
    assert f["strict_floor"] == pytest.approx(1.02)


def test_transformer_rw_floor_hand_computed():
    # d=4, S=2, one sequence (T=2), 1 head, 2 layers, vocabulary 256.
    cfg = {"width": 4, "seq": 2, "batch": 1, "heads": 1, "rank": 1}
    f = overhead_floor.transformer_floor("rw", cfg)
    # MACs a token: 2 * (12*16 + 2*2*4) + 256*4 = 1440; x6 x 2 tokens.
    assert f["base_flops"] == 6 * 1440 * 2
    # params 2*12*16 + 2*256*4 = 2432; activations a token
    # 2*(17*4 + 2*1*2) + 2*256 + 4 = 660.
    assert f["base_bytes"] == 4 * (4 * 660 * 2 + 6 * 2432)
    # 4 residuals of E = 8 elements: 8 flops and 2 reads an element.
    assert f["extra_flops"] == 8 * 8 * 4
    assert f["extra_bytes"] == 4 * 2 * 8 * 4
    assert f["floor"] == pytest.approx(1 + 256 / 17280)


def test_loss_and_resnet_floors_hand_computed():
    cfg = {"width": 8, "batch": 2}
    f = overhead_floor.loss_floor("debiased", cfg)
    params = 40 * 8 + 8 * 8 + 8 * 10
    assert f["base_flops"] == 6 * params * 2
    assert f["extra_flops"] == (2 * 10 + 40) * 2
    # ResNet20 at d=64 on 8x8: 9 blocks, stages of 16/32/64 filters.
    convs, blocks, last = overhead_floor.resnet_layout(64)
    assert last == 64 and len(blocks) == 9
    assert blocks[0] == (16, 64) and blocks[3] == (32, 16)
    assert blocks[-1] == (64, 4)
    assert len(convs) == 1 + 18 + 2  # stem, 2 a block, 2 projections
    cfg = {"width": 64, "batch": 1, "rank": 2}
    rw = overhead_floor.resnet_floor("rw", cfg)
    elements = 3 * (16 * 64 + 32 * 16 + 64 * 4)
    assert rw["extra_flops"] == 8 * elements
    lr = overhead_floor.resnet_floor("rw+lr", cfg)
    assert lr["extra_flops"] > rw["extra_flops"]
    assert lr["floor"] > rw["floor"] > 1.0


def test_hlo_counts_parses_entry_and_fusions():
    text = "\n".join(
        [
            "HloModule m",
            "%fused_computation (p: f32[4]) -> f32[4] {",
            "  %p = f32[4]{0} parameter(0)",
            "  %c = bf16[4]{0} convert(f32[4]{0} %p)",
            "  ROOT %r = f32[4]{0} convert(bf16[4]{0} %c)",
            "}",
            "ENTRY %main (a: f32[4]) -> (f32[4], f32[4]) {",
            "  %a = f32[4]{0} parameter(0)",
            "  %f = f32[4]{0} fusion(f32[4]{0} %a), kind=kLoop",
            "  %k = f32[4]{0} copy(f32[4]{0} %f)",
            "  ROOT %t = (f32[4]{0}, f32[4]{0}) tuple(%f, %k)",
            "}",
        ]
    )
    counts = overhead_hlo.hlo_counts(text)
    assert counts["entry"]["fusion"] == 1
    assert counts["entry"]["copy"] == 1
    assert counts["entry"]["convert"] == 0
    assert counts["entry"]["instructions"] == 3
    assert counts["all"]["convert"] == 2
    assert counts["all"]["instructions"] == 5


def test_spread_and_diff():
    s = common.spread([1.0, 1.2, 1.1, 1.4])
    assert s["median"] == pytest.approx(1.15)
    assert s["min"] == 1.0 and s["max"] == 1.4
    diff = overhead_hlo.hlo_diff(
        {"entry": {"fusion": 5, "copy": 2}, "xla_flops": 3.0},
        {"entry": {"fusion": 3, "copy": 2}, "xla_flops": 2.0},
    )
    assert diff["entry"] == {"fusion": 2, "copy": 0}
    assert diff["xla_flops_ratio"] == pytest.approx(1.5)
    assert overhead_hlo.describe_diff(diff) == "+2 fusion"


def test_quick_core_on_tiny_shapes():
    cfg = {"width": 8, "batch": 8}
    teacher = overhead_models.make_teacher(64)
    res, compiles, params, steps = overhead_measure.time_family(
        "loss", cfg, steps=1, repeats=1, teacher=teacher
    )
    assert steps == 1  # quick sizes keep their steps
    assert set(res) == {"cross_entropy", "slam", "debiased"}
    assert len(res["slam"]["ratios"]) == len(res["slam"]["cpu_ratios"]) == 1
    assert params["slam"] == params["cross_entropy"]
    assert all(r["minor_faults_per_step"] >= 0 for r in res.values())
    if keras.backend.backend() == "jax":
        assert compiles["train_step"] == 0
        counts = overhead_hlo.train_step_hlo("loss", "debiased", cfg, teacher)
        assert counts["entry"]["instructions"] > 0
        assert counts["xla_flops"] > 0


def test_tiny_models_build_with_the_methods_arguments():
    # Symbolic construction only (no call), the fewest models that reach
    # every argument the builders receive: LAuReL rank, AltUp, Recycled.
    resnet = {"width": 8, "batch": 2, "rank": 1}
    plain, _ = overhead_models.build("resnet", "plain", resnet)
    laurel, _ = overhead_models.build("resnet", "rw+lr", resnet)
    assert laurel.count_params() > plain.count_params()
    lm = {"width": 16, "seq": 4, "batch": 2, "heads": 1, "rank": 2}
    recycled, _ = overhead_models.build("transformer", "recycled2", lm)
    assert any("altup" in layer.name for layer in recycled.layers)
    x, y = overhead_models.make_data("transformer", lm, 3)
    assert x.shape == y.shape == (3, 4)


def test_checks_family_differs_only_by_the_id_check():
    import numpy as np

    cfg = overhead_floor.transformer_config(32, quick=True)
    checked, _ = overhead_models.build("checks", "id_check", cfg)
    unchecked, _ = overhead_models.build("checks", "unchecked", cfg)
    assert checked.count_params() == unchecked.count_params()
    bad = np.full((1, 4), overhead_floor.VOCAB, "int32")
    with pytest.raises(ValueError, match=r"`inputs` must be in \[0, 256\)"):
        checked(bad)
    try:  # the baseline skips our check (torch's gather may raise its own)
        unchecked(bad)
    except Exception as error:
        assert "`inputs` must be" not in str(error)
    f = overhead_floor.checks_floor("id_check", cfg)
    assert 1.0 < f["floor"] < 1.001


def test_targets_by_backend_and_width(tmp_path):
    # JAX: the targets are set at d = 512 only for the Transformer.
    assert overhead_targets.target_for("transformer", "rw+lr", 512, "jax") == (
        1.04,
        "target",
    )
    assert (
        overhead_targets.target_for("transformer", "rw+lr", 128, "jax")[0]
        is None
    )
    # The losses keep their own target on every backend.
    assert overhead_targets.target_for("loss", "slam", 256, "torch")[0] == 1.05
    # The models on TF / torch: within 0.05 of the recorded JAX ratio.
    jax = {"transformer/altup2/d512": 1.031}
    threshold, basis = overhead_targets.target_for(
        "transformer", "altup2", 512, "tensorflow", jax
    )
    assert abs(threshold - 1.081) < 1e-9 and "1.031" in basis
    threshold, _ = overhead_targets.target_for(
        "transformer", "altup2", 512, "torch"
    )
    assert abs(threshold - 1.10) < 1e-9  # no JAX run: its target + 0.05
    path = tmp_path / "overhead.jax.json"
    path.write_text('{"figures": [{"name": "a/b/d1", "median": 1.5}]}')
    assert overhead_targets.jax_medians(str(path)) == {"a/b/d1": 1.5}
    assert overhead_targets.jax_medians(str(tmp_path / "missing.json")) == {}
