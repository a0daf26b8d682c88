import os

# Keep TensorFlow quiet and on the CPU; these machines have no accelerator.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32, a cleared session and fixed seeds."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1337)
    np.random.seed(1337)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
