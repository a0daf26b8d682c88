"""Run-time checks of the models and layers the user passes.

`shrink` / `zero_units` on a subclassed model, `sparsity_report` on an
unbuilt one, and built layers called on another width: each error is
ours, names the argument or the user's layer, and says what is allowed.
"""

import keras
import numpy as np
import pytest

from keras_efficient.applications import TransformerLM
from keras_efficient.layers import AltUp
from keras_efficient.layers import AltUpReadout
from keras_efficient.layers import MixtureOfExperts
from keras_efficient.layers import SequenceAltUp
from keras_efficient.layers import SparseLookupTable
from keras_efficient.pruning import shrink
from keras_efficient.pruning import sparsity_report
from keras_efficient.pruning.graph import UnreadableGraphError
from keras_efficient.pruning.shrink import zero_units


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8)
        self.head = keras.layers.Dense(2)

    def call(self, x):
        return self.head(self.hidden(x))


def _subclassed(built=True):
    model = _Subclassed(name="my_subclassed")
    if built:
        model(np.zeros((1, 4), "float32"))
    return model


@pytest.mark.parametrize("built", [True, False])
@pytest.mark.parametrize(
    "call",
    [lambda m: shrink(m, 0.5), lambda m: zero_units(m, 0.5), shrink],
    ids=["shrink_ratio", "zero_units", "shrink_masked"],
)
def test_shrink_refuses_a_subclassed_model_in_our_words(call, built):
    with pytest.raises(
        UnreadableGraphError,
        match=r"`model` must be a functional or Sequential model with known "
        r"inputs.*model='my_subclassed' of class _Subclassed",
    ):
        call(_subclassed(built))


def test_unreadable_graph_error_is_a_value_error():
    with pytest.raises(ValueError, match=r"`model` must be a functional"):
        shrink(_subclassed(), 0.5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.Sequential(
            [keras.layers.Dense(8), keras.layers.Dense(2)], name="unbuilt"
        ),
        lambda: _Subclassed(name="unbuilt"),
    ],
    ids=["sequential", "subclassed"],
)
def test_sparsity_report_refuses_an_unbuilt_model(make):
    with pytest.raises(
        ValueError,
        match=r"`model` must be built before `sparsity_report`.*"
        r"model='unbuilt'",
    ):
        sparsity_report(make())


@pytest.mark.parametrize("built", ["call", "build"])
def test_sparsity_report_of_a_built_model_counts_both_kernels(built):
    model = keras.Sequential([keras.layers.Dense(8), keras.layers.Dense(2)])
    if built == "call":
        model(np.zeros((1, 4), "float32"))
    else:
        model.build((None, 4))
    model.layers[0].kernel.assign(np.zeros((4, 8), "float32"))
    report = sparsity_report(model)
    assert len(report["layers"]) == 2
    assert report["params"] == 4 * 8 + 8 * 2
    assert report["sparsity"] == pytest.approx(32 / 48)


# ---------------------------------------------------------------- widths


def _width_cases():
    return [
        ("altup", lambda: AltUp(keras.layers.Dense(16), num_blocks=2,
                                name="user_altup"), (2, 3, 2)),
        ("sequence_altup", lambda: SequenceAltUp(
            keras.layers.Dense(16), stride=2, name="user_sequence_altup"),
            (2, 4)),
        ("moe", lambda: MixtureOfExperts(num_experts=2, hidden_dim=8,
                                         name="user_moe"), (2, 3)),
        ("moe_softmax", lambda: MixtureOfExperts(
            num_experts=2, hidden_dim=8, router="softmax",
            name="user_moe_softmax"), (2, 3)),
        ("readout_projection", lambda: AltUpReadout(
            2, mode="projection", name="user_readout"), (2, 3, 2)),
        ("readout_mean", lambda: AltUpReadout(
            2, mode="mean", name="user_readout_mean"), (2, 3, 2)),
        ("lookup_lsh", lambda: SparseLookupTable(
            16, lookup="lsh", name="user_table"), (2, 3)),
        ("lookup_router", lambda: SparseLookupTable(
            16, lookup="router", top_k=2, name="user_router_table"), (2, 3)),
    ]  # fmt: skip


CASES = _width_cases()


@pytest.mark.parametrize("new_width", [8, 32])
@pytest.mark.parametrize(
    "make, lead", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_width_change_after_build_names_the_users_layer(make, lead, new_width):
    layer = make()
    out = layer(np.ones(lead + (16,), "float32"))
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))
    with pytest.raises(
        ValueError,
        match=rf"Layer `{layer.name}` \({type(layer).__name__}\) was built "
        rf"for `inputs` of width 16.*width {new_width}.*Received: "
        rf"inputs.shape=\(.*{new_width}\)",
    ):
        layer(np.ones(lead + (new_width,), "float32"))


def test_width_check_holds_after_a_save_and_load(tmp_path):
    inputs = keras.Input((3, 16))
    outputs = MixtureOfExperts(num_experts=2, hidden_dim=8, name="moe")(inputs)
    path = str(tmp_path / "moe.keras")
    keras.Model(inputs, outputs).save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    layer = loaded.get_layer("moe")
    with pytest.raises(ValueError, match=r"Layer `moe` \(MixtureOfExperts\)"):
        layer(np.ones((2, 3, 32), "float32"))


def test_transformer_lm_refuses_a_longer_sequence():
    model = TransformerLM(
        vocabulary_size=16,
        sequence_length=8,
        hidden_dim=8,
        num_layers=1,
        num_heads=1,
    )
    with pytest.raises(
        ValueError, match=r"`inputs` must have at most `sequence_length`.*9"
    ):
        model(np.zeros((1, 9), "int32"))
