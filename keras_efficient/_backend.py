"""Backend probes and fast-path dispatch (private).

Layers are written with `keras.ops`. Where one backend has a faster kernel
(e.g. `jax.lax.ragged_dot` for grouped expert matmuls), the layer keeps its
`keras.ops` reference path and picks between the two through
`resolve_implementation`; a test compares the fast path with the reference
on the same inputs. To add a fast path: write it beside the reference in the
layer's module, list it in the layer's `IMPLEMENTATIONS`, say here which
backends and devices have it (`FAST_PATHS`), and add the comparison test.
LAuReL's RW+LR merge has no constructor argument (its config stays as in
0.1.0): `laurel_merge_implementation` picks its path from the layer's
`implementation` attribute (tests/test_laurel_ops.py compares the two).

Functions without a user-facing `implementation` argument (a loss's
helpers) pick theirs through `dispatch`: the module registers a backend's
version with `register_fast_path` and calls `dispatch(name, reference)`;
`fast_paths(name)` lists them for the comparison test.
"""

import re

import keras

# implementation name -> (backend it needs, platforms where "auto" takes it)
FAST_PATHS = {
    # ragged_dot is a grouped GEMM on GPU / TPU; on CPU XLA lowers it to a
    # slower loop than the padded batched matmul, so "auto" skips it there.
    "ragged": ("jax", ("gpu", "tpu")),
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


def backend():
    """The name of the Keras backend in use."""
    return keras.backend.backend()


def jax_platform():
    """`"cpu"`, `"gpu"` or `"tpu"`: the platform of JAX's default device."""
    import jax

    return jax.devices()[0].platform


def resolve_implementation(implementation, name="implementation"):
    """Maps `"auto"` to the fastest path here; checks an explicit choice.

    `"reference"` (the `keras.ops` path) runs everywhere. A fast path named
    in `FAST_PATHS` runs only on its backend; `"auto"` takes it where its
    platform list says it is faster.
    """
    if implementation in ("auto", "reference"):
        for fast, (needs, platforms) in FAST_PATHS.items():
            if (
                implementation == "auto"
                and backend() == needs
                and jax_platform() in platforms
            ):
                return fast
        return "reference"
    needs = FAST_PATHS[implementation][0]
    if backend() != needs:
        raise ValueError(
            f"`{name}={implementation!r}` needs the {needs!r} backend; use "
            f"'reference' or 'auto'. Received: {name}={implementation!r} on "
            f"backend {backend()!r}"
        )
    return implementation


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


# LAuReL's RW+LR merge (`layers/laurel_ops.py`): the backends on which
# "auto" takes the hand-written gradient ("fused") over the keras.ops
# reference. JAX: its compiled step moves 51 MB less a step at d = 512
# (benchmarks/laurel_profile.py); TensorFlow and torch run it when asked
# (tests/test_laurel_ops.py) but have no timing yet.
LAUREL_MERGE_FAST = ("jax",)


def laurel_merge_implementation(implementation="auto"):
    """`"reference"` or `"fused"`: how `LaurelResidual` computes the RW+LR
    merge `alpha f + beta (x + B(A x))` here.

    `"reference"` is the `keras.ops` expression with its autodiff gradient;
    `"fused"` the same values with a hand-written gradient
    (`keras.ops.custom_gradient`, every backend). `"auto"` takes `"fused"`
    on the backends in `LAUREL_MERGE_FAST` (JAX).
    """
    if implementation not in ("auto", "reference", "fused"):
        raise ValueError(
            "`implementation` must be one of 'auto', 'reference', 'fused'. "
            f"Received: implementation={implementation!r}"
        )
    if implementation == "auto":
        return "fused" if backend() in LAUREL_MERGE_FAST else "reference"
    return implementation
