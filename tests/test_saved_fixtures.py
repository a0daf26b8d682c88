"""`.keras` files saved by keras-efficient 0.1.0 (before the re-founding)
still load with `safe_mode=True` and give the outputs they gave then.

The fixtures were written by `tests/fixtures/make_v010_fixtures.py` at the
0.1.0 layout; never regenerate them from a later layout.
"""

import os
import warnings

import keras
import numpy as np
import pytest

import keras_efficient  # noqa: F401 (registers the serializable classes)

HERE = os.path.join(os.path.dirname(__file__), "fixtures")
EXPECTED = np.load(os.path.join(HERE, "v010_expected.npz"))

CASES = [
    ("v010_layers.keras", "x", "y1"),
    ("v010_transformer_lm.keras", "lm_ids", "y2"),
    ("v010_resnet.keras", "rn_x", "y3"),
]


@pytest.mark.parametrize("filename,inputs,outputs", CASES)
def test_v010_file_loads_with_same_outputs(filename, inputs, outputs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.saving.load_model(
            os.path.join(HERE, filename), safe_mode=True
        )
    # v010_layers.keras was compiled with Adam but never trained, so its
    # optimizer was saved before Adam created its moments: 2 variables
    # (iterations, learning rate). Loading compiles the model and builds an
    # Adam with moments for every weight, so Keras skips the 2 saved
    # variables and warns. Nothing is lost: the optimizer had not stepped
    # (the fixture must not be regenerated, see the module docstring).
    for warning in caught:
        message = str(warning.message)
        if message.startswith("Skipping variable loading for optimizer"):
            assert filename == "v010_layers.keras", message
            assert "saved optimizer has 2 variables" in message, message
            iterations = model.optimizer.iterations
            assert int(keras.ops.convert_to_numpy(iterations)) == 0
        else:
            warnings.warn_explicit(
                warning.message,
                warning.category,
                warning.filename,
                warning.lineno,
            )
    got = keras.ops.convert_to_numpy(model(EXPECTED[inputs]))
    np.testing.assert_allclose(got, EXPECTED[outputs], atol=1e-5, rtol=1e-5)
