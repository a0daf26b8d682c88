"""Every public signature is typed (the package ships `py.typed`)."""

import importlib
import inspect
import os
import pkgutil

import keras_efficient
from keras_efficient.distillation import active

# Keras's own hooks keep Keras's signatures; their types are Keras's.
KERAS_HOOKS = {
    "build",
    "get_config",
    "from_config",
    "compute_output_shape",
    "compute_output_spec",
}


def _public_modules():
    for info in pkgutil.walk_packages(
        keras_efficient.__path__, "keras_efficient."
    ):
        if not any(p.startswith("_") for p in info.name.split(".")[1:]):
            yield importlib.import_module(info.name)


def _public_callables():
    seen = set()
    for module in _public_modules():
        names = getattr(module, "__all__", None) or [
            n for n in dir(module) if not n.startswith("_")
        ]
        for name in names:
            obj = getattr(module, name, None)
            home = getattr(obj, "__module__", "") or ""
            if not home.startswith("keras_efficient") or id(obj) in seen:
                continue
            if any(p.startswith("_") for p in home.split(".")[1:]):
                continue
            seen.add(id(obj))
            if inspect.isfunction(obj):
                yield f"{home}.{obj.__qualname__}", obj
            elif inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    public = not attr.startswith("_") or attr in (
                        "__init__",
                        "__call__",
                    )
                    if (
                        public
                        and attr not in KERAS_HOOKS
                        and inspect.isfunction(member)
                    ):
                        yield f"{home}.{obj.__qualname__}.{attr}", member


def _unannotated(fn):
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        name
        for name, p in inspect.signature(fn).parameters.items()
        if name not in ("self", "cls")
        and p.kind not in skip
        and p.annotation is inspect.Parameter.empty
    ]


def test_every_public_parameter_is_annotated():
    missing = {
        label: params
        for label, fn in _public_callables()
        if (params := _unannotated(fn))
    }
    report = "\n".join(f"{k}: {v}" for k, v in sorted(missing.items()))
    assert not missing, report


def test_the_scan_sees_the_whole_api():
    labels = {label for label, _ in _public_callables()}
    # A few names from each subpackage, so an import change that hides
    # modules from the scan fails here instead of passing vacuously.
    for expected in (
        "keras_efficient.layers.laurel.LaurelResidual.__init__",
        "keras_efficient.distillation.slam.SLaMLoss.__init__",
        "keras_efficient.pruning.callback.MagnitudePruning.__init__",
        "keras_efficient.pruning.shrink.shrink",
    ):
        assert expected in labels
    assert len(labels) > 150


def test_py_typed_is_shipped():
    root = os.path.dirname(keras_efficient.__file__)
    assert os.path.exists(os.path.join(root, "py.typed"))


# --- layers, applications, optimizers: config <-> signature ---------------

# Keras base-class keys every layer / model / optimizer config carries.
BASE_CONFIG_KEYS = {"name", "trainable", "dtype"}


def _area_instances():
    """One instance of every public class of layers/, applications/ and
    optimizers/ (constructed with small, valid arguments)."""
    import keras

    from keras_efficient import applications
    from keras_efficient import layers
    from keras_efficient import optimizers

    def dense():
        return keras.layers.Dense(8)

    return [
        layers.AltUp(dense(), coefficients="routed", output_scale=True),
        layers.AltUpStack([dense(), dense()]),
        layers.AltUpInput(2),
        layers.AltUpEmbedding(16, 8),
        layers.AltUpReadout(2),
        layers.LaurelResidual("rw+lr+pa", rank=2),
        layers.LaurelBlock(dense(), variant="rw+pa", rank=2),
        layers.LaurelStack([dense(), dense()], variant="rw+lr", rank=2),
        layers.SparseLookupTable(64, table_optimizer="adam"),
        layers.LSHHash(num_tables=2, num_bits=4, seed=0),
        layers.MixtureOfExperts(num_experts=2, hidden_dim=8),
        layers.SequenceAltUp(dense(), stride=2),
        applications.TransformerLM(
            vocabulary_size=16,
            sequence_length=8,
            hidden_dim=8,
            num_layers=1,
            num_heads=2,
            moe=2,
        ),
        optimizers.LazyAdam(),
        optimizers.LazySGD(momentum=0.9),
    ]


def test_every_config_key_is_a_named_argument_and_an_attribute():
    """`get_config` returns only named constructor arguments (plus Keras's
    base keys), and each named argument is kept as an attribute."""
    import inspect

    problems = []
    for obj in _area_instances():
        cls = type(obj)
        params = inspect.signature(cls.__init__).parameters
        named = {
            n
            for n, p in params.items()
            if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
        config = obj.get_config()
        # What `**kwargs` forwards: the arguments of the Keras base classes.
        base_params = set()
        for base in cls.__mro__[1:]:
            if base.__module__.startswith("keras.") and "__init__" in vars(
                base
            ):
                base_params |= set(inspect.signature(base.__init__).parameters)
        for key in config:
            if key not in named and key not in BASE_CONFIG_KEYS | base_params:
                problems.append(f"{cls.__name__}: config key {key!r}")
        for name in named:
            if name not in config:
                problems.append(f"{cls.__name__}: {name!r} not in config")
            if not hasattr(obj, name):
                problems.append(f"{cls.__name__}: no attribute {name!r}")
    assert not problems, "\n".join(problems)


def test_laurel_and_lm_signatures_show_their_options():
    import inspect

    from keras_efficient.applications import TransformerLM
    from keras_efficient.layers import LaurelBlock
    from keras_efficient.layers import LaurelResidual
    from keras_efficient.layers import LaurelStack
    from keras_efficient.layers.laurel_options import OPTIONS

    for cls in (LaurelResidual, LaurelBlock, LaurelStack):
        params = inspect.signature(cls.__init__).parameters
        assert set(OPTIONS) <= set(params), cls.__name__
        assert params["rank"].default == 16
    params = inspect.signature(TransformerLM.__init__).parameters
    assert len([p for p in params if p not in ("self", "kwargs")]) == 24
    assert params["altup"].annotation is int


# ---- distillation: explicit signatures that cover the config ---------------
# Arguments a class of the distillation area needs to be built (the others
# are built with their defaults).
_DISTILLATION_REQUIRED = {
    "DistillationLossAdapter": lambda: {
        "loss": keras_efficient.losses.KnowledgeDistillationLoss()
    },
}


def _distillation_api():
    names = set(keras_efficient.distillation.__all__) | set(active.__all__)
    for name in sorted(names):
        obj = getattr(active, name, None) or getattr(
            keras_efficient.distillation, name
        )
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield name, obj


def test_distillation_signatures_are_explicit():
    """No `*args` / `**kwargs`: nothing of the distillation area passes
    arguments on to a Keras base class, so every argument is named."""
    hidden = {
        name: [
            p.name
            for p in inspect.signature(obj).parameters.values()
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        for name, obj in _distillation_api()
    }
    hidden = {k: v for k, v in hidden.items() if v}
    assert not hidden, hidden


def test_distillation_config_keys_are_signature_parameters():
    checked = 0
    for name, cls in _distillation_api():
        if not inspect.isclass(cls) or not hasattr(cls, "get_config"):
            continue
        kwargs = _DISTILLATION_REQUIRED.get(name, dict)()
        config = cls(**kwargs).get_config()
        params = set(inspect.signature(cls).parameters)
        assert set(config) <= params, (name, sorted(set(config) - params))
        checked += 1
    assert checked >= 15  # 5 losses, the estimator, 9 strategies, ...
