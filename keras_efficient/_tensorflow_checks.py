"""Data checks inside TensorFlow graphs, XLA-compiled ones included
(private; `_data_checks.raise_if` dispatches here).

A `tf.function` graph runs `tf.debugging.Assert`. XLA does not: with
`jit_compile=True` it compiles an assertion to nothing, and it has no
other way to stop a step from the device. Keras compiles only the step
itself with XLA (`one_step_on_data`); the `tf.function` that calls it
(`multi_step_on_iterator`, or a loop over several steps) is a plain graph.
So a check traced in an XLA function is split in two:

- in the step (XLA), the predicate and the values the message shows are
  written to a few scalar status variables (created outside the model:
  not in any layer's weights, not saved);
- in the calling graph, right after the call of the step, the status is
  read and a failed check raises through `tf.debugging.Assert`. The read
  is added when the calling graph finishes tracing (a scope-exit callback
  of its `FuncGraph`), so it can depend on the call, and it is made one of
  the graph's control outputs, so it runs on every call.

A clean step pays the reductions (fused into the step) and, outside XLA,
one read of a boolean and a `tf.cond`. The error names the argument, the
values and what is allowed, in the message of the `InvalidArgumentError`
that TensorFlow raises from the step that saw the batch (whose update is
already applied, as on JAX). An XLA function called with no enclosing
graph (a `tf.function(jit_compile=True)` called eagerly) has nowhere to
raise: the check warns at trace time instead, naming what goes unchecked.
"""

import re
import sys
import warnings
import weakref
from typing import Any

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


def raise_after_step(bad: Any, message: str, values: Any) -> None:
    """Checks `bad` traced inside an XLA function: the step writes the
    status, the graph calling the step raises (see the module docstring)."""
    import tensorflow as tf
    from tensorflow.python.ops import resource_variable_ops

    function, caller = _xla_function_and_caller(
        tf.compat.v1.get_default_graph()
    )
    if function is None or not getattr(caller, "building_function", False):
        _warn_unchecked(message)
        return
    bad = tf.convert_to_tensor(bad)
    values = [tf.convert_to_tensor(v) for v in _values(values)]
    tensors = [bad, *values]
    with tf.init_scope():
        # Made directly (not through `tf.Variable`): the variable creator
        # of the `tf.function` being traced refuses new variables after
        # its first trace, and these belong to no model.
        status = [
            resource_variable_ops.ResourceVariable(
                tf.zeros(t.shape, t.dtype), trainable=False
            )
            for t in tensors
        ]
    _STATUS.setdefault(function, []).append(status)
    for variable, tensor in zip(status, tensors):
        variable.assign(tensor)
    handles = [v.handle for v in status]

    def check_after_the_step():
        if sys.exc_info()[0] is not None:  # the trace failed; it raises
            return
        internal = dict(
            (id(external), internal) for external, internal in caller.captures
        )
        reads = [internal.get(id(h)) for h in handles]
        calls = [
            op
            for op in caller.get_operations()
            if op.type in _CALL_OPS and any(t is reads[0] for t in op.inputs)
        ]
        if reads[0] is None or not calls:
            _warn_unchecked(message)
            return

        def read(i):
            return tf.raw_ops.ReadVariableOp(
                resource=reads[i], dtype=tensors[i].dtype
            )

        with tf.control_dependencies(calls):
            failed = read(0)
        check = _fail_unless_clean(
            failed,
            message,
            lambda: [read(i) for i in range(1, len(reads))],
        )
        caller.control_outputs.append(check.op)

    caller._add_scope_exit_callback(check_after_the_step)


def _warn_unchecked(message):
    allowed = message.split(". Received")[0]
    warnings.warn(
        f"This XLA-compiled TensorFlow function is not called from a "
        f"graph that can check its data, so this is not checked: "
        f"{allowed}. Check it with `jit_compile=False` (a first epoch "
        "will do) or by calling the model eagerly on a batch.",
        stacklevel=4,
    )
