import os

# The README's test command works with nothing set: JAX when KERAS_BACKEND is
# unset (Keras's own default, TensorFlow, may not be installed: the `test`
# extra holds no backend). Set before Keras is imported; the header says so.
_BACKEND_WAS_SET = bool(os.environ.get("KERAS_BACKEND"))
if not _BACKEND_WAS_SET:
    os.environ["KERAS_BACKEND"] = "jax"

# Keep TensorFlow quiet and on the CPU; these machines have no accelerator.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests check numbers, not speed, and compiling is most of a small test's
# time: XLA's CPU backend skips its expensive LLVM optimisations here (JAX
# suite about a third faster). Benchmarks and examples run without this.
os.environ["XLA_FLAGS"] = " ".join(
    [
        os.environ.get("XLA_FLAGS", ""),
        "--xla_backend_optimization_level=0",
        "--xla_llvm_disable_expensive_passes=true",
    ]
).strip()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_report_header(config):
    backend = keras.backend.backend()
    if _BACKEND_WAS_SET:
        return f"keras backend: {backend} (from KERAS_BACKEND)"
    return f"keras backend: {backend} (KERAS_BACKEND unset: the tests use jax)"


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32, a cleared session and fixed seeds."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1337)
    np.random.seed(1337)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)
