"""Step timing shared by the benchmarks: interleaved train-step times of
several models (wall time, or host CPU time and wall time), the compiled
JAX train step with XLA's cost analysis, a counter of compilations while
timing, and the 1-minute load average to record beside a timing.

Models are always timed in one process, taking turns, so slow drifts of a
shared machine hit all of them alike.
"""

import logging
import os
import time

from benchmarks.progress import Progress


def load_average():
    """The 1-minute load average, or None where the OS has none."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def fit_time_per_step(model, x, y, batch_size, steps):
    """Seconds per train step of one `model.fit` epoch of `steps` steps."""
    n = batch_size * steps
    xs = _take(x, n)
    ys = _take(y, n)
    start = time.perf_counter()
    model.fit(xs, ys, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return (time.perf_counter() - start) / steps


def _timed_epoch(model, x, y, batch_size, steps):
    """Wall and process CPU seconds per train step of one `fit` epoch.

    CPU time counts every thread of this process. On TensorFlow (XLA) it
    is the steadier figure on this 2-core machine: whole epochs there run
    either with the runtime's two worker threads in parallel or one after
    the other (1.9x the wall time, the same CPU time; docs/benchmarks.md).
    """
    cpu = time.process_time()
    wall = fit_time_per_step(model, x, y, batch_size, steps)
    return wall, (time.process_time() - cpu) / steps


def _take(data, n):
    import keras

    return keras.tree.map_structure(lambda a: a[:n], data)


def compare_step_times(
    models, x, y, batch_size, steps=20, repeats=7, baseline=None, verbose=None
):
    """Median train-step times of compiled models, interleaved.

    Each model runs one warm-up epoch (compilation), then the models take
    turns for `repeats` rounds so slow drifts of the machine hit all of them
    alike. Odd rounds run the models in reverse order (ABBA), so a penalty
    on whichever model runs first or last in a round (a cold cache, the
    previous model's memory being freed) does not fall on one of them.

    Args:
        models: dict name -> compiled model, all fed the same `x`, `y`.
        x, y: training data with at least `batch_size * steps` examples.
        batch_size: batch size.
        steps: steps per timed epoch.
        repeats: timed rounds per model.
        baseline: name of the model the ratios are relative to; default the
            first.
        verbose: progress over the rounds (see `Progress`).

    Returns:
        dict name -> {"step_seconds", "ratios", "cpu_step_seconds",
        "cpu_ratios": [per round]}: wall and process CPU seconds a step;
        ratios are per round against the baseline's time in the same round.
    """
    names = list(models)
    baseline = baseline or names[0]
    for name in names:
        fit_time_per_step(models[name], x, y, batch_size, min(steps, 3))
        fit_time_per_step(models[name], x, y, batch_size, steps)
    times = {name: [] for name in names}
    cpu_times = {name: [] for name in names}
    for r in Progress(range(repeats), "round", verbose):
        for name in names if r % 2 == 0 else names[::-1]:
            wall, cpu = _timed_epoch(models[name], x, y, batch_size, steps)
            times[name].append(wall)
            cpu_times[name].append(cpu)
    return {
        name: {
            "step_seconds": times[name],
            "ratios": _ratios(times[name], times[baseline]),
            "cpu_step_seconds": cpu_times[name],
            "cpu_ratios": _ratios(cpu_times[name], cpu_times[baseline]),
        }
        for name in names
    }


def _ratios(times, baseline_times):
    # A clock too coarse for a baseline epoch gives no ratio, not a crash.
    return [t / b if b else float("nan") for t, b in zip(times, baseline_times)]


def interleaved_cpu_times(models, x, y, batch, steps, repeats, baseline):
    """Per-step host CPU time and wall time of one `fit` epoch per model,
    models taking turns (ABBA) for `repeats` rounds after two warm-up
    epochs each; ratios per round against `baseline`.

    CPU time (`time.process_time`, all threads of this process) is the
    primary figure: on a machine shared with other jobs, wall time mostly
    measures the scheduler.

    Returns:
        dict name -> {"cpu", "wall": [per round], "cpu_ratios",
        "wall_ratios": [per round]}.
    """
    times = {name: {"cpu": [], "wall": []} for name in models}
    for model in models.values():
        for _ in range(2):
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    names = list(models)
    for r in range(repeats):
        # ABBA order, so a systematic penalty on whichever model runs
        # second in a round does not fall on one of them.
        for name in names if r % 2 == 0 else names[::-1]:
            model = models[name]
            cpu, wall = time.process_time(), time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            times[name]["cpu"].append((time.process_time() - cpu) / steps)
            times[name]["wall"].append((time.perf_counter() - wall) / steps)
    base = times[baseline]
    for t in times.values():
        t["cpu_ratios"] = [a / b for a, b in zip(t["cpu"], base["cpu"])]
        t["wall_ratios"] = [a / b for a, b in zip(t["wall"], base["wall"])]
    return times


class CompileCounter:
    """Compilations while timing (a context manager): JAX "Compiling ..."
    log records, all of them (`all`) and those of a train step
    (`train_step`), and on every backend the rebuilds of the `models`'
    `train_function` (`rebuilds`, counted on exit).

    Args:
        models: optional dict name -> compiled model.
    """

    def __init__(self, models=None):
        self.models = models or {}
        self.all = self.train_step = self.rebuilds = 0
        self.functions = {}
        self.handler = None

    def __enter__(self):
        import keras

        self.functions = {k: m.train_function for k, m in self.models.items()}
        if keras.backend.backend() == "jax":
            import jax

            counter = self

            class Handler(logging.Handler):
                def emit(self, record):
                    message = record.getMessage()
                    if message.startswith("Compiling"):
                        counter.all += 1
                        counter.train_step += "train_step" in message

            self.handler = Handler()
            logging.getLogger("jax").addHandler(self.handler)
            jax.config.update("jax_log_compiles", True)
        return self

    def __exit__(self, *exc):
        if self.handler is not None:
            import jax

            jax.config.update("jax_log_compiles", False)
            logging.getLogger("jax").removeHandler(self.handler)
            self.handler = None
        self.rebuilds = sum(
            m.train_function is not self.functions[k]
            for k, m in self.models.items()
        )


def jitted_train_step(model, loss_fn, x, y):
    """The jitted stateless SGD train step of `model` (JAX) and its
    arguments `[trainable, non_trainable, x, y]`; it returns the new
    trainable values, the updated non-trainable ones and the loss."""
    import jax

    model(x[:1])  # builds the weights
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def step(trainable, non_trainable, x, y):
        def loss(trainable):
            pred, updated = model.stateless_call(
                trainable, non_trainable, x, training=True
            )
            return loss_fn(y, pred), updated

        (value, updated), grads = jax.value_and_grad(loss, has_aux=True)(
            trainable
        )
        new = [w - 1e-3 * g for w, g in zip(trainable, grads)]
        return new, updated, value

    return jax.jit(step), [trainable, non_trainable, x, y]


def compiled_train_step(model, loss_fn, x, y):
    """The jitted stateless SGD train step of `model` on `(x, y)`, lowered
    and compiled (JAX), and XLA's cost analysis of it as a dict."""
    step, args = jitted_train_step(model, loss_fn, x, y)
    compiled = step.lower(*args).compile()
    cost = compiled.cost_analysis()
    return compiled, cost[0] if isinstance(cost, (list, tuple)) else cost
