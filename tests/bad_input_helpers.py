"""Shared pieces of the bad-input table (`tests/test_bad_input_*.py`).

Each case is a callable that must raise `ValueError` or `TypeError`
(`keras_efficient._validation.ArgumentTypeError` is both) with a message
naming the offending argument. Nothing in the table may train, return or
save silently.
"""

import json
import math
import os
import tempfile
import zipfile

import keras
import numpy as np
import pytest

ERRORS = (ValueError, TypeError)

# Bad values for the common kinds of argument: (label, value).
NAN = float("nan")
INF = float("inf")
BAD_POSITIVE_INT = [
    ("str", "abc"),
    ("numeric_str", "3"),
    ("bool", True),
    ("none", None),
    ("float", 2.5),
    ("list", [2]),
    ("negative", -1),
    ("zero", 0),
]
BAD_NUMBER = [
    ("str", "0.5"),
    ("bool", True),
    ("list", [0.5]),
    ("nan", NAN),
    ("inf", INF),
]
BAD_CHOICE = [("typo", "nope"), ("none", None), ("int", 1)]
BAD_BOOL = [("str", "True"), ("int", 1), ("none", None)]
# Every real number type is a number.
GOOD_NUMBERS = [
    ("int", 2),
    ("float", 2.0),
    ("np_float32", np.float32(2.0)),
    ("np_int64", np.int64(2)),
    ("np_0d", np.array(2.0)),
]
GOOD_INTS = [("int", 3), ("np_int64", np.int64(3)), ("np_0d", np.array(3))]
GOOD_FRACTIONS = [
    ("float", 0.5),
    ("np_float32", np.float32(0.5)),
    ("np_0d", np.array(0.5)),
    ("int_zero", 0),
]


def case(case_id, fn, match, error=ERRORS, xfail=None):
    """One table row; `xfail` is the reason for a known, strict failure."""
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(fn, error, match, id=case_id, marks=marks)


def sweep(prefix, make, name, bad_values, match=None, xfail=None):
    """Rows calling `make(**{name: value})` for each bad value."""
    rows = []
    for label, value in bad_values:

        def fn(value=value):
            return make(**{name: value})

        reason = xfail.get(label) if isinstance(xfail, dict) else xfail
        rows.append(
            case(f"{prefix}-{name}-{label}", fn, match or name, xfail=reason)
        )
    return rows


def check_case(fn, error, match):
    with pytest.raises(error, match=match) as info:
        result = fn()
        # Only reached when nothing was raised: say what came back.
        pytest.fail(f"returned silently: {result!r}")
    return info


def tamper_keras_file(model, edit):
    """Save `model`, apply `edit(config_dict)` to the `.keras` file's
    config and load it back (`safe_mode=True`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        edited = os.path.join(tmp, "edited.keras")
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(edited, "w") as dst:
            for item in src.infolist():
                data = src.read(item.filename)
                if item.filename == "config.json":
                    config = json.loads(data)
                    edit(config)
                    data = json.dumps(config).encode()
                dst.writestr(item, data)
        return keras.saving.load_model(edited, safe_mode=True)


def set_in_layer(class_name, key, value):
    """An `edit` for `tamper_keras_file`: set `config[key] = value` in the
    first nested object whose `class_name` is `class_name`."""

    def edit(node):
        found = []

        def walk(obj):
            if isinstance(obj, dict):
                if obj.get("class_name") == class_name and not found:
                    obj["config"][key] = value
                    found.append(True)
                    return
                for v in obj.values():
                    walk(v)
            elif isinstance(obj, list):
                for v in obj:
                    walk(v)

        walk(node)
        assert found, f"no {class_name} in the saved config"

    return edit


def is_nan(x):
    return isinstance(x, float) and math.isnan(x)

