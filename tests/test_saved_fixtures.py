"""`.keras` files saved by keras-efficient 0.1.0 (before the re-founding)
still load with `safe_mode=True` and give the outputs they gave then.

The fixtures were written by `tests/fixtures/make_v010_fixtures.py` at the
0.1.0 layout; never regenerate them from a later layout.
"""

import os

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
    model = keras.saving.load_model(
        os.path.join(HERE, filename), safe_mode=True
    )
    got = keras.ops.convert_to_numpy(model(EXPECTED[inputs]))
    np.testing.assert_allclose(got, EXPECTED[outputs], atol=1e-5, rtol=1e-5)
