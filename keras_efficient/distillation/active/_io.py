"""Teacher and student helpers of `ActiveDistillation` (private).

`TeacherIO` sends the chosen points to the teacher (write-ahead through the
`SelectionState`) and checks its answers; `StudentIO` scores the pool with
the student: probabilities, embeddings, last-layer inputs (BADGE) and
stochastic forward passes (BALD). Both are mixins of the callback and read
its attributes (`pool`, `teacher`, `state`, `model`, `batch_size`, ...).
"""

import keras
import numpy as np

from keras_efficient.distillation._common import np_probs
from keras_efficient.distillation.active.checks import check_answers
from keras_efficient.distillation.active.errors import TeacherQueryError
from keras_efficient.distillation.active.pool import ArrayPool
from keras_efficient.distillation.active.pool import concat_rows
from keras_efficient.distillation.active.pool import is_text
from keras_efficient.distillation.active.pool import num_rows
from keras_efficient.distillation.active.pool import pad_rows
from keras_efficient.distillation.active.pool import rows_of


class TeacherIO:
    """Teacher side of `ActiveDistillation` (a mixin)."""

    # ---- teacher -----------------------------------------------------------
    def _declared_or_traced_shape(self, declared):
        """The shape of one teacher output, without a query; None when
        the teacher cannot be traced (the saved state may know it)."""
        if declared is not None:
            return tuple(declared)
        try:
            return self._traced_output_shape(self._pool.head(self.batch_size))
        except Exception:
            return None

    def _placeholder(self):
        """A batch of pool inputs and zero answers, found without a query."""
        x = self._pool.head(self.batch_size)
        y = np.zeros((self.batch_size,) + self._answer_shape, "float32")
        return x, y

    def _traced_output_shape(self, x):
        spec = keras.tree.map_structure(
            lambda a: keras.KerasTensor(
                a.shape, dtype="string" if is_text(a) else str(a.dtype)
            ),
            x,
        )
        teacher = self.teacher
        if not isinstance(teacher, keras.Layer):
            teacher = keras.layers.Lambda(teacher)
        return tuple(teacher.compute_output_spec(spec).shape[1:])

    def _call_teacher(self, x):
        if isinstance(self.teacher, keras.Model):
            y = self.teacher.predict_on_batch(x)
        else:
            y = self.teacher(x)
        return np.asarray(keras.ops.convert_to_numpy(y), dtype="float32")

    def _query(self, rec):
        """Sends the unsent batches of `rec`, write-ahead; keeps answers."""
        batches = rec.batches
        todo = [k for k, sent in enumerate(rec.sent) if not sent]
        if not todo:
            return
        if self._pool.streamed:
            # One pass reads every row of the round the teacher needs.
            self._pool.take(np.concatenate([batches[k] for k in todo]))
        points = sum(len(batches[k]) for k in todo)
        bar = _progress(
            self.verbose,
            f"round {rec.index}: querying the teacher on {points} points",
            len(todo),
        )
        for k in todo:
            idx = batches[k]
            x = self._pool.take(idx)
            self.state.mark_sent(rec, k)
            try:
                y = self._call_teacher(x)
            except Exception as err:
                raise TeacherQueryError(
                    f"ActiveDistillation: the teacher raised while querying "
                    f"round {rec.index}, batch {k + 1} of {len(batches)} "
                    f"({len(idx)} points, pool indices {idx.tolist()}). "
                    "These points count as sent (the teacher may have seen "
                    "them) and are never sent again; the answers received "
                    f"so far are kept ({self.state.queries_spent} of "
                    f"{self.budget} queries spent).",
                    err,
                ) from err
            check_answers(y, len(idx), self._answer_shape, rec.index)
            _check_finite(y, idx, rec.index)
            self.state.save_answers(rec, k, y)
            bar.add(1)

    def _teacher_accuracy(self):
        if self.state.teacher_accuracy is None and self.validation is not None:
            x_val = ArrayPool(self.validation[0], "validation")
            rows = np.arange(len(x_val))
            starts = range(0, len(x_val), self.batch_size)
            bar = _progress(
                self.verbose,
                f"measuring the teacher's accuracy on {len(x_val)} "
                "validation points",
                len(starts),
            )
            answers = []
            for x in x_val.batches(rows, self.batch_size):
                y = self._call_teacher(x)
                check_answers(y, num_rows(x), self._answer_shape, None)
                answers.append(y)
                bar.add(1)
            labels = self.validation[1]
            accuracy = (np.concatenate(answers).argmax(-1) == labels).mean()
            self.state.set_teacher_accuracy(accuracy)
        return self.state.teacher_accuracy


class StudentIO:
    """Student side of `ActiveDistillation` (a mixin)."""

    def _student_inputs(self, x):
        """A batch of pool inputs as the student reads them."""
        if self.preprocessor is None:
            return x
        out = self.preprocessor(x)
        if isinstance(out, tuple):
            out = keras.utils.unpack_x_y_sample_weight(out)[0]
        return keras.tree.map_structure(
            lambda a: np.asarray(keras.ops.convert_to_numpy(a)), out
        )

    def _map_batches(self, fn, batches, bar):
        """`fn` over whole batches of raw inputs, outputs concatenated.

        Batches are padded to `batch_size`: the pool shrinks every round,
        and a last batch of a new size would make the backend compile the
        student for that shape again, every round.
        """
        parts = []
        for x in batches:
            n = num_rows(x)
            pad = self.batch_size - n
            if pad > 0:
                x = pad_rows(x, pad)
            y = keras.tree.map_structure(
                keras.ops.convert_to_numpy, fn(self._student_inputs(x))
            )
            parts.append(rows_of(y, slice(None, n)))
            bar.add(1)
        return concat_rows(parts)

    def _predict(self, model, x):
        """`model` on in-memory inputs `x`, in padded batches."""
        pool = ArrayPool(x)
        rows = np.arange(len(pool))
        bar = self._bar(f"scoring {len(pool)} pool points", len(pool))
        return self._map_batches(
            model.predict_on_batch, pool.batches(rows, self.batch_size), bar
        )

    def _bar(self, title, num_points, passes=1):
        steps = passes * -(-num_points // self.batch_size)
        return _progress(self.verbose, title, steps)

    def _score(self, model, idx):
        """`model` on the pool points `idx`, in padded batches."""
        bar = self._bar(f"scoring {len(idx)} pool points", len(idx))
        batches = self._pool.batches(idx, self.batch_size)
        return self._map_batches(model.predict_on_batch, batches, bar)

    def _probabilities(self, idx):
        return np_probs(self._score(self.model, idx), self.from_logits)

    def _embeddings(self, idx):
        if not self.embedding_layer:
            return self._probabilities(idx)
        cached = getattr(self, "_embedder", None)
        if cached is None or cached[0] is not self.model:
            # Built once per student: a new model every round would be
            # traced and compiled again every round.
            sub = keras.Model(
                self.model.inputs,
                self.model.get_layer(self.embedding_layer).output,
            )
            self._embedder = cached = (self.model, sub)
        return self._score(cached[1], idx)

    def _features(self, idx):
        """Inputs of the student's last layer (BADGE), or the embeddings."""
        if self.embedding_layer:
            return self._embeddings(idx)
        cached = getattr(self, "_featurizer", None)
        if cached is None or cached[0] is not self.model:
            sub = keras.Model(self.model.inputs, self.model.layers[-1].input)
            self._featurizer = cached = (self.model, sub)
        return self._score(cached[1], idx)

    def _mc_probabilities(self, idx, num_passes):
        """`(T, n, C)` probabilities from T passes with `training=True`.

        Dropout samples the weights; the student's non-trainable variables
        (BatchNormalization statistics) are restored afterwards. Each batch
        runs through one compiled function (jitted on JAX, a `tf.function`
        on TensorFlow; eager on torch).
        """
        saved = [np.array(w) for w in self.model.non_trainable_variables]
        forward = _stochastic_forward(self.model)
        bar = self._bar(
            f"scoring {len(idx)} pool points with {num_passes} stochastic "
            "passes of the student",
            len(idx),
            num_passes,
        )
        out = []
        try:
            for _ in range(num_passes):
                batches = self._pool.batches(idx, self.batch_size)
                y = self._map_batches(forward, batches, bar)
                out.append(np_probs(y, self.from_logits))
        finally:
            for w, value in zip(self.model.non_trainable_variables, saved):
                w.assign(value)
        return np.stack(out)


def _progress(verbose, title, target):
    """A `keras.utils.Progbar` of `target` batches after a title line
    (both silent at `verbose=0`)."""
    if verbose:
        print(f"ActiveDistillation: {title}")
    return keras.utils.Progbar(target, verbose=verbose, unit_name="batch")


def _check_finite(y, idx, round_index):
    bad = ~np.isfinite(y.reshape(len(y), -1)).all(axis=1)
    if bad.any():
        raise ValueError(
            f"ActiveDistillation: the teacher returned non-finite outputs "
            f"(NaN or inf) in round {round_index} for pool indices "
            f"{np.asarray(idx)[bad].tolist()}. These points count as sent "
            "and are never sent again; nothing of this batch was kept."
        )


def _stochastic_forward(model):
    """`x -> model(x, training=True)`, compiled where the backend allows.

    The returned function advances the dropout seeds (and any other
    non-trainable state) like an eager call, so passes differ.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        @jax.jit
        def step(trainable, non_trainable, x):
            return model.stateless_call(
                trainable, non_trainable, x, training=True
            )

        def forward(x):
            y, non_trainable = step(
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
                x,
            )
            for variable, value in zip(
                model.non_trainable_variables, non_trainable
            ):
                variable.assign(value)
            return y

        return forward
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: model(x, training=True))
    return lambda x: model(x, training=True)
