"""Data checks inside TensorFlow graphs, XLA-compiled ones included
(private; `_data_checks.raise_if` dispatches here).

A `tf.function` graph runs `tf.debugging.Assert`. XLA does not: with
`jit_compile=True` it compiles an assertion to nothing, and it has no
other way to stop a step from the device. Keras compiles only the step
itself with XLA (`one_step_on_data`); the `tf.function` that calls it
(`multi_step_on_iterator`, or a loop over several steps) is a plain graph.
So a check traced in an XLA function is split in two:

- in the step (XLA), the predicates of the checks of one output and the
  values their messages show are written to one float64 status variable
  (created outside the model: not in any layer's weights, not saved),
  packed in one fused kernel; values given as a function are computed
  only when a check fails;
- in the calling graph, right after the call of the step, the status is
  read and, if a check failed, the first failed one raises through
  `tf.debugging.Assert`. The read is added when the calling graph
  finishes tracing (a scope-exit callback of its `FuncGraph`), so it can
  depend on the call, and it is made one of the graph's control outputs,
  so it runs on every call.

A clean step pays the reductions (fused into the step) and, outside XLA,
one read of the status and one `tf.cond` per checked output (a status
per check made the loss MLP step of `benchmarks/overhead_models.py`
write 13 variables and run three `tf.cond`s after it). The error names
the argument, the values and what is allowed, in the message of the
`InvalidArgumentError` that TensorFlow raises from the step that saw the
batch (whose update is already applied, as on JAX). An XLA function
called with no enclosing graph (a `tf.function(jit_compile=True)` called
eagerly) has nowhere to raise: the check warns at trace time instead,
naming what goes unchecked.
"""

import re
import sys
import warnings
import weakref
from typing import Any

import numpy as np

_CALL_OPS = ("StatefulPartitionedCall", "PartitionedCall")
# Status variables, kept alive as long as the XLA function graph that
# writes them (a function outliving them would read a freed resource).
_STATUS = weakref.WeakKeyDictionary()


def template(message: str, count: int) -> tuple:
    """`message` with `{0}`, `{1}`, ... as `tf.strings.format`'s `{}`, and
    the order in which its placeholders read the values."""
    order = [int(i) for i in re.findall(r"\{(\d+)\}", message)]
    text = re.sub(r"\{\d+\}", "{}", message) if count else message
    return text, order


def _fail_unless_clean(bad, message, read_values):
    """A `tf.cond` that runs a failing assertion with the formatted
    message when `bad`; the values are read only in that branch."""
    import tensorflow as tf

    def fail():
        values = read_values()
        text, order = template(message, len(values))
        shown = tf.strings.format(text, [values[i] for i in order], summarize=8)
        check = tf.debugging.Assert(False, [shown])
        with tf.control_dependencies([check]):
            return tf.constant(False)

    return tf.cond(bad, fail, lambda: tf.constant(True))


def in_xla(graph: Any = None) -> bool:
    """Whether TensorFlow is tracing `graph` (default: the current one)
    inside an XLA-compiled function."""
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    graph = graph or tf.compat.v1.get_default_graph()
    return control_flow_util.GraphOrParentsInXlaContext(graph)


def assert_in_graph(bad: Any, message: str, values: Any) -> Any:
    """A failing-on-`bad` check in a (non-XLA) `tf.function` graph; returns
    the op later ops take as a control dependency."""
    import tensorflow as tf

    bad = tf.convert_to_tensor(bad)

    def read_values():
        return [tf.convert_to_tensor(v) for v in _values(values)]

    return _fail_unless_clean(bad, message, read_values).op


def _values(values):
    return tuple(values() if callable(values) else values)


def _xla_function_and_caller(graph):
    """The graph of the XLA-compiled function being traced and the graph
    that calls it (the one TensorFlow marks as in an XLA context while
    the call is traced; the global graph for a call from eager code)."""
    from tensorflow.python.ops import control_flow_util

    function = None
    while not control_flow_util.InXlaContext(graph):
        function, graph = graph, graph.outer_graph
    return function, graph


def raise_after_step(problems: list) -> None:
    """Checks `problems` (`(bad, message, values, error)` each) traced
    inside an XLA function: the step writes one status, the graph calling
    the step raises (see the module docstring)."""
    import tensorflow as tf
    from tensorflow.python.ops import resource_variable_ops

    function, caller = _xla_function_and_caller(
        tf.compat.v1.get_default_graph()
    )
    if function is None or not getattr(caller, "building_function", False):
        for problem in problems:
            _warn_unchecked(problem[1])
        return
    bads = [tf.reshape(tf.cast(p[0], tf.bool), ()) for p in problems]
    failed = tf.reduce_any(tf.stack(bads))
    # One float64 vector: [failed, each problem's flag, the values shown
    # (tensors), the values shown (functions)], exact for every float and
    # for integers below 2^53. The values of a function are computed only
    # when a check fails (a clean step writes zeros there).
    shown = [v for p in problems if not callable(p[2]) for v in p[2]]
    head = [_pack([failed, *bads, *shown])]

    def computed_values():
        return tf.concat(
            [_flat(v) for p in problems if callable(p[2]) for v in p[2]()], 0
        )

    # The shapes and dtypes of the values shown, from a trace whose ops
    # are unused (XLA drops them).
    layout = [
        [(v.shape, v.dtype) for v in _tensors(_values(p[2]))] for p in problems
    ]
    computed = sum(_size(s) for p, s in zip(problems, layout) if callable(p[2]))
    if computed:
        head.append(
            tf.cond(
                failed,
                computed_values,
                lambda: tf.zeros((computed,), tf.float64),
            )
        )
    status = tf.concat(head, 0)
    with tf.init_scope():
        # Made directly (not through `tf.Variable`): the variable creator
        # of the `tf.function` being traced refuses new variables after
        # its first trace, and it belongs to no model.
        variable = resource_variable_ops.ResourceVariable(
            tf.zeros(status.shape, tf.float64), trainable=False
        )
    _STATUS.setdefault(function, []).append(variable)
    variable.assign(status)
    handle = variable.handle

    def check_after_the_step():
        if sys.exc_info()[0] is not None:  # the trace failed; it raises
            return
        internal = dict(
            (id(external), internal) for external, internal in caller.captures
        )
        read = internal.get(id(handle))
        calls = [
            op
            for op in caller.get_operations()
            if op.type in _CALL_OPS and any(t is read for t in op.inputs)
        ]
        if read is None or not calls:
            for problem in problems:
                _warn_unchecked(problem[1])
            return
        with tf.control_dependencies(calls):
            status = tf.raw_ops.ReadVariableOp(resource=read, dtype=tf.float64)
        check = tf.cond(
            status[0] > 0,
            lambda: _raise_first_failed(status, problems, layout),
            lambda: tf.constant(True),
        )
        caller.control_outputs.append(check.op)

    caller._add_scope_exit_callback(check_after_the_step)


def _tensors(values):
    import tensorflow as tf

    return [tf.convert_to_tensor(v) for v in values]


def _size(spec):
    """The number of entries of the values of `spec` (`(shape, dtype)`s)."""
    return sum(int(np.prod(shape)) for shape, _ in spec)


def _pack(tensors):
    """The entries of `tensors` as one float64 vector, built by selects:
    XLA CPU fuses them into one kernel (a concatenation of scalars is a
    kernel per scalar)."""
    import tensorflow as tf

    entries = []
    for tensor in tensors:
        flat = _flat(tensor)
        entries += [flat[i] for i in range(flat.shape[0])]
    index = tf.range(len(entries))
    packed = tf.zeros((len(entries),), tf.float64)
    for i, entry in enumerate(entries):
        packed = tf.where(tf.equal(index, i), entry, packed)
    return packed


def _flat(value):
    import tensorflow as tf

    return tf.reshape(tf.cast(value, tf.float64), (-1,))


def _raise_first_failed(status, problems, layout):
    """In the calling graph, on a failed step's `status`: an assertion per
    problem, in order, so the first failed check raises with its message
    and values."""
    import tensorflow as tf

    # Where the values of tensors, and of functions, start in `status`.
    offsets = {False: 1 + len(problems)}
    offsets[True] = offsets[False] + sum(
        _size(s) for p, s in zip(problems, layout) if not callable(p[2])
    )
    checks = []
    for j, (problem, spec) in enumerate(zip(problems, layout)):
        values = []
        for shape, dtype in spec:
            n, start = int(np.prod(shape)), offsets[callable(problem[2])]
            flat = status[start : start + n]
            values.append(tf.cast(tf.reshape(flat, shape), dtype))
            offsets[callable(problem[2])] += n
        text, order = template(problem[1], len(values))
        with tf.control_dependencies(checks):
            shown = tf.strings.format(
                text, [values[i] for i in order], summarize=8
            )
            checks.append(
                tf.debugging.Assert(tf.equal(status[1 + j], 0.0), [shown])
            )
    with tf.control_dependencies(checks):
        return tf.constant(False)


def _warn_unchecked(message):
    allowed = message.split(". Received")[0]
    warnings.warn(
        f"This XLA-compiled TensorFlow function is not called from a "
        f"graph that can check its data, so this is not checked: "
        f"{allowed}. Check it with `jit_compile=False` (a first epoch "
        "will do) or by calling the model eagerly on a batch.",
        stacklevel=4,
    )
