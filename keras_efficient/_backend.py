"""Backend probes and fast-path dispatch (private).

Layers are written with `keras.ops`. Where a faster path exists (e.g.
`jax.lax.ragged_dot` for grouped expert matmuls, a hand-written gradient
for LAuReL's RW+LR merge), the layer keeps its `keras.ops` reference path
and picks between the two through `resolve_implementation`, from its
`implementation` (a constructor argument of `MixtureOfExperts`; a plain
attribute of `LaurelResidual`, whose config stays as in 0.1.0); a test
compares the fast path with the reference on the same inputs. To add one:
write it beside the reference in the layer's module, say here where it runs
and where `"auto"` takes it (`FAST_PATHS`), and add the comparison test.

Functions without an `implementation` (a loss's helpers) pick theirs
through `dispatch`: the module registers a backend's version with
`register_fast_path` and calls `dispatch(name, reference)`;
`fast_paths(name)` lists them for the comparison test.
"""

import functools
import re

import keras

# implementation name -> (backends it runs on, {backend: platforms where
# "auto" takes it}).
FAST_PATHS = {
    # ragged_dot is a grouped GEMM on GPU / TPU; on CPU XLA lowers it to a
    # slower loop than the padded batched matmul, so "auto" skips it there.
    "ragged": (("jax",), {"jax": ("gpu", "tpu")}),
    # LAuReL's RW and RW+LR merges with hand-written gradients
    # (layers/laurel_ops.py): RW+LR stores only `A x`; with softmax
    # weights both take the weights' gradient in one reduction and keep
    # no `f(x)`. JAX's compiled step at d = 512 moves 17 MB (RW) and
    # 67 MB (RW+LR) less a step (benchmarks/laurel_profile.py).
    # TensorFlow and torch run them when asked (tests/test_laurel_ops.py)
    # but have no timing yet.
    "fused": (
        ("jax", "tensorflow", "torch"),
        {"jax": ("cpu", "gpu", "tpu")},
    ),
}


# name -> {backend name: function}: filled by `register_fast_path`.
_REGISTERED = {}


def register_fast_path(name, backend_name):
    """Decorator: `fn` is `name`'s fast path on `backend_name`."""

    def register(fn):
        _REGISTERED.setdefault(name, {})[backend_name] = fn
        return fn

    return register


def dispatch(name, reference):
    """`name`'s fast path on the backend in use, else `reference` (the
    `keras.ops` function, which every fast path must match)."""
    return _REGISTERED.get(name, {}).get(backend(), reference)


def fast_paths(name):
    """`{backend name: function}` registered for `name`."""
    return dict(_REGISTERED.get(name, {}))


@functools.lru_cache(maxsize=64)
def torch_constant(value, device):
    """`value` as a float32 0-d torch tensor on `device`, made once.

    For torch fast paths: a Python number in a torch operation is wrapped
    in a tensor and copied to the other operand's dtype on every call (4
    aten calls); a float32 tensor gives the same value with none.
    """
    import torch

    return torch.tensor(value, dtype=torch.float32, device=device)


def backend():
    """The name of the Keras backend in use."""
    return keras.backend.backend()


def jax_platform():
    """`"cpu"`, `"gpu"` or `"tpu"`: the platform of JAX's default device."""
    import jax

    return jax.devices()[0].platform


def resolve_implementation(implementation, paths, name="implementation"):
    """Maps `"auto"` to the fastest of `paths` here; checks an explicit
    choice.

    `"reference"` (the `keras.ops` path) runs everywhere. A fast path named
    in `FAST_PATHS` runs only on its backends; `"auto"` takes it where its
    platform list says it is faster.
    """
    allowed = ("auto", "reference", *paths)
    if implementation not in allowed:
        raise ValueError(
            f"`{name}` must be one of {allowed}. Received: "
            f"{name}={implementation!r}"
        )
    if implementation in ("auto", "reference"):
        for fast in paths:
            platforms = FAST_PATHS[fast][1].get(backend(), ())
            if implementation == "auto" and _platform() in platforms:
                return fast
        return "reference"
    runs_on = FAST_PATHS[implementation][0]
    if backend() not in runs_on:
        raise ValueError(
            f"`{name}={implementation!r}` needs the backend "
            f"{' or '.join(map(repr, runs_on))}; use 'reference' or 'auto'. "
            f"Received: {name}={implementation!r} on backend {backend()!r}"
        )
    return implementation


def _platform():
    """The device platform of the backend in use (`"cpu"` off JAX)."""
    return jax_platform() if backend() == "jax" else "cpu"


def is_concrete(x):
    """Whether `x` holds values now (eager), not a symbolic trace."""
    if isinstance(x, keras.KerasTensor):
        return False
    name = backend()
    if name == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    if name == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if name == "torch":
        import torch

        return not torch.compiler.is_compiling()
    return True


def scope_safe_name(name):
    """`name` with every character TensorFlow rejects in a name scope
    (anything but letters, digits, `_`, `.` and `-`) replaced by `_`.

    >>> from keras_efficient._backend import scope_safe_name
    >>> scope_safe_name("resnet_rw+lr")
    'resnet_rw_lr'
    """
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def read_tensor(value, dtype):
    """`value` (a tensor or a Keras variable) as a tensor of `dtype`.

    On TensorFlow a variable is read into a tensor: `tf.cast` and Keras'
    `convert_to_tensor` hand back the `tf.Variable` itself, which a
    `tf.custom_gradient` function may not take as an input.
    """
    if backend() == "tensorflow":
        import tensorflow as tf

        return tf.cast(tf.identity(keras.ops.convert_to_tensor(value)), dtype)
    return keras.ops.convert_to_tensor(value, dtype)
