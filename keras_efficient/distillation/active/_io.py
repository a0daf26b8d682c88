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
from keras_efficient.distillation.active.errors import TeacherQueryError


class TeacherIO:
    """Teacher side of `ActiveDistillation` (a mixin)."""

    # ---- teacher -----------------------------------------------------------
    def _placeholder(self, output_shape):
        """A zero batch of the teacher's output shape, found without a query."""
        x = self.pool[np.arange(self.batch_size) % len(self.pool)]
        _, answers = self.state.training_data(len(self.state.rounds))
        if answers is not None:
            shape = answers.shape[1:]
        elif output_shape is not None:
            shape = tuple(output_shape)
        else:
            shape = self._traced_output_shape(x)
        return x, np.zeros((self.batch_size,) + tuple(shape), "float32")

    def _traced_output_shape(self, x):
        spec = keras.KerasTensor(x.shape, dtype=str(x.dtype))
        teacher = self.teacher
        if not isinstance(teacher, keras.Layer):
            teacher = keras.layers.Lambda(teacher)
        try:
            return tuple(teacher.compute_output_spec(spec).shape[1:])
        except Exception as err:
            raise ValueError(
                "ActiveDistillation needs the shape of the teacher's outputs "
                "before its first query, and could not trace the teacher on "
                "a `keras.KerasTensor`. Pass `teacher_output_shape`, e.g. "
                "`teacher_output_shape=(num_classes,)`."
            ) from err

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
        points = sum(len(batches[k]) for k in todo)
        bar = _progress(
            self.verbose,
            f"round {rec.index}: querying the teacher on {points} points",
            len(todo),
        )
        for k in todo:
            idx = batches[k]
            self.state.mark_sent(rec, k)
            try:
                y = self._call_teacher(self.pool[idx])
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
            if len(y) != len(idx):
                raise ValueError(
                    f"The teacher returned {len(y)} outputs for {len(idx)} "
                    f"inputs (round {rec.index}, batch {k + 1})."
                )
            _check_finite(y, idx, rec.index)
            self.state.save_answers(rec, k, y)
            bar.add(1)

    def _teacher_accuracy(self):
        if self.state.teacher_accuracy is None and self.validation is not None:
            xv, yv = np.asarray(self.validation[0]), self.validation[1]
            starts = range(0, len(xv), self.batch_size)
            bar = _progress(
                self.verbose,
                f"measuring the teacher's accuracy on {len(xv)} validation "
                "points",
                len(starts),
            )
            answers = []
            for s in starts:
                answers.append(self._call_teacher(xv[s : s + self.batch_size]))
                bar.add(1)
            yv = np.asarray(yv)
            if yv.ndim > 1:
                yv = yv.argmax(-1)
            accuracy = (np.concatenate(answers).argmax(-1) == yv).mean()
            self.state.set_teacher_accuracy(accuracy)
        return self.state.teacher_accuracy


class StudentIO:
    """Student side of `ActiveDistillation` (a mixin)."""

    def _predict(self, model, x):
        # Pad to whole batches: the pool shrinks every round, and a last
        # batch of a new size would make the backend compile `predict` for
        # that shape again, every round.
        n = len(x)
        if self.verbose:
            print(f"ActiveDistillation: scoring {n} pool points")
        pad = -n % self.batch_size
        if pad:
            x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)], axis=0)
        out = model.predict(x, batch_size=self.batch_size, verbose=self.verbose)
        return keras.tree.map_structure(lambda a: np.asarray(a)[:n], out)

    def _probabilities(self, idx):
        return np_probs(
            self._predict(self.model, self.pool[idx]), self.from_logits
        )

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
        return self._predict(cached[1], self.pool[idx])

    def _features(self, idx):
        """Inputs of the student's last layer (BADGE), or the embeddings."""
        if self.embedding_layer:
            return self._embeddings(idx)
        cached = getattr(self, "_featurizer", None)
        if cached is None or cached[0] is not self.model:
            sub = keras.Model(self.model.inputs, self.model.layers[-1].input)
            self._featurizer = cached = (self.model, sub)
        return self._predict(cached[1], self.pool[idx])

    def _mc_probabilities(self, idx, num_passes):
        """`(T, n, C)` probabilities from T passes with `training=True`.

        Dropout samples the weights; the student's non-trainable variables
        (BatchNormalization statistics) are restored afterwards. Each batch
        runs through one compiled function (jitted on JAX, a `tf.function`
        on TensorFlow; eager on torch).
        """
        saved = [np.array(w) for w in self.model.non_trainable_variables]
        x = self.pool[idx]
        starts = range(0, len(x), self.batch_size)
        bar = _progress(
            self.verbose,
            f"scoring {len(x)} pool points with {num_passes} stochastic "
            "passes of the student",
            num_passes * len(starts),
        )
        forward = _stochastic_forward(self.model)
        out = []
        try:
            for _ in range(num_passes):
                parts = []
                for s in starts:
                    y = forward(x[s : s + self.batch_size])
                    parts.append(keras.ops.convert_to_numpy(y))
                    bar.add(1)
                out.append(np_probs(np.concatenate(parts), self.from_logits))
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
