"""ActiveDistillation: spend a teacher-query budget on the points that help."""

import math
import os
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_efficient import _validation as v
from keras_efficient.distillation.active import _arguments
from keras_efficient.distillation.active import _io
from keras_efficient.distillation.active.checks import check_labels
from keras_efficient.distillation.active.checks import check_validation
from keras_efficient.distillation.active.context import SelectionContext
from keras_efficient.distillation.active.dataset import QueriedDataset
from keras_efficient.distillation.active.ledger import SelectionState
from keras_efficient.distillation.active.pool import as_pool
from keras_efficient.distillation.active.strategies import SelectionStrategy
from keras_efficient.distillation.active.strategies import UniformSelection
from keras_efficient.distillation.active.strategies import get


class ActiveDistillation(
    _io.TeacherIO, _io.StudentIO, keras.callbacks.Callback
):
    """Active query selection for distillation under a teacher budget.

    Round 0 (before any training) picks `queries_per_round` pool points
    uniformly; then, after every `epochs_per_round` epochs, a round scores
    the not-yet-queried pool with the student and lets `strategy` pick the
    next points, until `budget` points have been sent to the teacher. The
    teacher is queried in batches, on the chosen points only, and its
    answers join `self.dataset`, the training data `fit` reads. All work
    happens at epoch boundaries (no batch hooks, so Keras keeps its
    asynchronous batch dispatch).

    Every query is first recorded in a `SelectionState` (write-ahead: the
    round's points, then "batch about to be sent", then the answers), so
    over a whole run, interrupted anywhere, no point is sent twice and at
    most `budget` points are sent. A batch whose call failed counts as sent
    (the teacher may have seen it); the answers already received are kept.
    A teacher exception is re-raised as a `TeacherQueryError` naming the
    round and the pool indices, chained to the original.

    To survive a restart (`keras.callbacks.BackupAndRestore`, listed after
    this callback), pass `state_dir` (e.g. the backup directory): the
    ledger lives there and a resumed run replays it, ending with the same
    queried set and, on the same machine, the same student weights as an
    uninterrupted run. Without `state_dir` the state lives in memory, and
    a `fit` that resumes at an epoch > 0 with no state raises a
    `ValueError` before any query, rather than pay for the points again.

    `self.dataset` is a `keras.utils.PyDataset` of `steps_per_epoch`
    batches: pass it to `fit` as `x`, without `steps_per_epoch`. The batch
    order of epoch `e` depends only on `(seed, e)`.

    The pool may be anything `model.predict` reads: an array, a dict (or
    list) of arrays with one row count (a keras-hub model's
    `{"token_ids": ..., "padding_mask": ...}`), an array of strings (raw
    text: the teacher brings its own preprocessor, e.g. a keras-hub task,
    and the student's is `preprocessor=`), or, for a pool that does not fit
    in memory, a `tf.data.Dataset` or `keras.utils.PyDataset` of batches of
    unlabeled inputs in a fixed order. A dataset is streamed: once here (to
    count and fingerprint its rows), then per round to score it and to read
    the chosen rows back; only the chosen rows and the teacher's answers
    are kept. The saved state records the pool's fingerprint and the
    teacher's output shape and refuses to resume onto other ones.

    Args:
        pool: the unlabeled inputs (see above), `n >= 1` rows.
        teacher: a Keras model or any callable mapping a batch of pool
            inputs to outputs of shape `(batch,) + teacher_output_shape`.
        budget: total number of points sent to the teacher (<= `len(pool)`).
        queries_per_round: points per round (>= 1).
        strategy: a name in `keras_efficient.distillation.active.STRATEGIES`
            or a `SelectionStrategy`.
        epochs_per_round: epochs of training between rounds.
        validation: optional labeled `(x_val, y_val)`; the teacher's
            accuracy on it is the context's `teacher_accuracy` (measured
            only if the strategy reads it).
        batch_size: batch size for training, scoring and querying.
        steps_per_epoch: batches per epoch (default:
            `ceil(budget / batch_size)`).
        from_logits: whether the student outputs logits.
        embedding_layer: name of a layer whose output is the embedding the
            context offers (functional models); default: the probabilities.
        teacher_output_shape: shape of one teacher output, e.g. `(10,)`;
            needed only when the teacher is neither a Keras model nor a
            callable that traces symbolically on a `keras.KerasTensor` (the
            shape is needed before the first query).
        state_dir: directory for the durable selection state.
        seed: integer seed of the selection RNG and of the per-epoch data
            order (`None`: drawn once, and kept in the saved state).
        verbose: Keras's convention: 0 (silent), 1 (a
            `keras.utils.Progbar` for each pass that scores the pool with
            the student or queries the teacher) or 2 (one line per pass).
        preprocessor: None or a callable mapping a batch of pool inputs to
            the student's inputs, applied to the training batches and
            before scoring (e.g. a keras-hub preprocessor, with the
            student's own `preprocessor=None`, or a `TextVectorization`).

    Example:

    ```python
    import numpy as np, keras
    from keras_efficient.callbacks import ActiveDistillation
    pool = np.random.rand(1000, 8).astype("float32")
    teacher = lambda x: keras.ops.softmax(x[:, :3] * 5)
    student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    student.compile("adam", keras.losses.CategoricalCrossentropy(
        from_logits=True))
    active = ActiveDistillation(pool, teacher, budget=200,
                                queries_per_round=50, strategy="margin")
    student.fit(active.dataset, epochs=4, callbacks=[active], verbose=0)
    assert active.queries_used == 200
    ```
    """

    def __init__(
        self,
        pool: Any,
        teacher: Callable,
        budget: int,
        queries_per_round: int,
        strategy: str | SelectionStrategy = "robust",
        epochs_per_round: int = 1,
        validation: tuple[np.ndarray, np.ndarray] | None = None,
        batch_size: int = 256,
        steps_per_epoch: int | None = None,
        from_logits: bool = True,
        embedding_layer: str | None = None,
        teacher_output_shape: tuple[int, ...] | None = None,
        state_dir: str | os.PathLike | None = None,
        seed: int | None = 0,
        verbose: int = 0,
        preprocessor: Callable | None = None,
    ):
        super().__init__()
        self._pool = as_pool(pool)
        self.pool = pool if self._pool.streamed else self._pool.data
        self.teacher = _arguments.check_teacher(teacher)
        self.budget = v.check_int(
            "budget", budget, min_value=1, max_value=len(self._pool)
        )
        self.queries_per_round = v.check_positive_int(
            "queries_per_round", queries_per_round
        )
        self.strategy = get(strategy)
        self.epochs_per_round = v.check_positive_int(
            "epochs_per_round", epochs_per_round
        )
        self.validation = check_validation(validation, self._pool)
        self.batch_size = v.check_positive_int("batch_size", batch_size)
        if steps_per_epoch is None:
            steps_per_epoch = math.ceil(self.budget / self.batch_size)
        self.steps_per_epoch = v.check_positive_int(
            "steps_per_epoch", steps_per_epoch
        )
        self.from_logits = v.check_bool("from_logits", from_logits)
        self.embedding_layer = v.check_instance(
            "embedding_layer",
            embedding_layer,
            (str, type(None)),
            "a layer name or None",
        )
        self.state_dir = v.check_instance(
            "state_dir",
            state_dir,
            (str, os.PathLike, type(None)),
            "a path or None",
        )
        self.teacher_output_shape = _arguments.check_output_shape(
            teacher_output_shape
        )
        self.verbose = v.check_int("verbose", verbose, 0, 2)
        self.preprocessor = _arguments.check_preprocessor(preprocessor)
        # Every argument is checked before the ledger touches `state_dir`.
        _arguments.check_strategy_inputs(self.strategy, self.validation)
        shape = self._declared_or_traced_shape(self.teacher_output_shape)
        self.state = SelectionState(self._run_identity(shape), state_dir)
        self._answer_shape = self._resolve_answer_shape(shape)
        if self.validation is not None and len(self._answer_shape) == 1:
            labels = check_labels(self.validation[1], self._answer_shape[0])
            self.validation = (self.validation[0], labels)
        self.seed = self._resolve_seed(seed)
        self._initial_strategy_state = self.strategy.get_state()
        self._reset_replay()
        self.dataset = QueriedDataset(
            self.state,
            self._pool,
            self.batch_size,
            self.steps_per_epoch,
            self.seed,
            self._placeholder(),
            preprocessor=self._student_inputs,
        )
        self._epoch = None

    def _run_identity(self, output_shape):
        """What a saved selection state must match to be this run's: the
        settings, the pool's fingerprint and the teacher's output shape
        (when known before a query)."""
        identity = {
            "pool_size": len(self._pool),
            "pool_fingerprint": self._pool.fingerprint(),
            "budget": self.budget,
            "queries_per_round": self.queries_per_round,
            "epochs_per_round": self.epochs_per_round,
        }
        if output_shape is not None:
            identity["teacher_output_shape"] = list(output_shape)
        return identity

    def _resolve_answer_shape(self, shape):
        """The teacher's output shape: declared, traced, or saved."""
        if shape is None:
            shape = self.state.config.get("teacher_output_shape")
        if shape is None:
            raise ValueError(
                "ActiveDistillation needs the shape of the teacher's outputs "
                "before its first query, and could not trace the teacher on "
                "a `keras.KerasTensor`. Pass `teacher_output_shape`, e.g. "
                "`teacher_output_shape=(num_classes,)`."
            )
        self.state.update_config({"teacher_output_shape": list(shape)})
        return tuple(shape)

    def _resolve_seed(self, seed):
        if seed is not None:
            seed = v.check_int("seed", seed, min_value=0)
        saved = self.state.config.get("seed")
        if saved is not None and seed is not None and saved != seed:
            raise ValueError(
                f"`seed` must match the saved selection state's seed "
                f"{saved}. Received: seed={seed}"
            )
        if saved is None:
            if seed is None:
                seed = int(np.random.SeedSequence().entropy % (2**31))
            self.state.update_config({"seed": seed})
        return int(self.state.config["seed"])

    def _reset_replay(self):
        """Back to before round 0: the ledger is replayed from here."""
        self.rng = np.random.default_rng(self.seed)
        self.strategy.set_state(self._initial_strategy_state)
        self._applied = 0

    # ---- views -------------------------------------------------------------
    @property
    def round(self) -> int:
        """Rounds done (applied to the training data)."""
        return self._applied

    @property
    def history(self) -> list[int]:
        """Points sent to the teacher per round done."""
        return [len(r.indices) for r in self.state.rounds[: self._applied]]

    @property
    def queried(self) -> np.ndarray:
        """Pool indices answered by the teacher, in query order."""
        return self.state.training_data(self._applied)[0]

    @property
    def train_x(self) -> Any:
        """Inputs of the training set (the pool's structure)."""
        return self._pool.take(self.queried)

    @property
    def train_y(self) -> np.ndarray | None:
        return self.state.training_data(self._applied)[1]

    @property
    def queries_used(self) -> int:
        """Points answered by the teacher (the training set's size)."""
        return int(len(self.queried))

    @property
    def queries_left(self) -> int:
        return self.budget - self.state.queries_spent

    def _chosen(self):
        rounds = self.state.rounds[: self._applied]
        if not rounds:
            return np.zeros(0, np.int64)
        return np.concatenate([r.indices for r in rounds])

    def _context(self, avail, use_model):
        chosen = self._chosen()
        if not use_model:
            return SelectionContext(
                indices=avail, rng=self.rng, teacher_accuracy=None
            )
        return SelectionContext(
            probabilities=lambda: self._probabilities(avail),
            embeddings=lambda: self._embeddings(avail),
            features=lambda: self._features(avail),
            mc_probabilities=lambda: self._mc_probabilities(
                avail, getattr(self.strategy, "num_passes", 10)
            ),
            centers=lambda: self._embeddings(chosen),
            indices=avail,
            teacher_accuracy=self._teacher_accuracy,
            rng=self.rng,
        )

    # ---- rounds ------------------------------------------------------------
    def _select(self, use_model):
        """A new round's choice: `(indices, strategy)`, or None if spent."""
        b = min(self.queries_per_round, self.queries_left)
        if b <= 0:
            return None
        avail = np.setdiff1d(np.arange(len(self._pool)), self._chosen())
        strategy = self.strategy if use_model else UniformSelection()
        rel = np.asarray(
            strategy.select(self._context(avail, use_model), b), np.int64
        )
        new = avail[rel]
        if len(np.unique(new)) != b:
            raise RuntimeError(
                f"Strategy {type(strategy).__name__} returned {len(rel)} "
                f"indices with repeats for {b} points."
            )
        return new

    def _round(self, use_model=True):
        """Runs (or replays from the ledger) the next round; False if none.

        A round already in the ledger is replayed: its points, and the RNG
        and strategy state after its choice, come from the ledger; only its
        batches never sent go to the teacher.
        """
        if self._applied < len(self.state.rounds):
            rec = self.state.rounds[self._applied]
            self.rng.bit_generator.state = rec.rng
            self.strategy.set_state(rec.strategy)
        else:
            new = self._select(use_model)
            if new is None:
                return False
            rec = self.state.begin_round(
                new,
                self.batch_size,
                self.rng.bit_generator.state,
                self.strategy.get_state(),
            )
        self._query(rec)
        self._applied += 1
        return True

    def _rounds_due(self, epoch):
        """Rounds done before epoch `epoch` starts (budget permitting)."""
        return 1 + epoch // self.epochs_per_round

    def _resume(self, epoch):
        """First epoch of a `fit`: replay the ledger up to `epoch`."""
        if epoch > 0 and not self.state.rounds and self.state_dir is None:
            raise ValueError(
                f"ActiveDistillation: `fit` resumes at epoch {epoch} (e.g. "
                "`keras.callbacks.BackupAndRestore` restored a checkpoint), "
                "but this callback has no record of the teacher queries "
                "made before: querying again could exceed the budget and "
                "send points twice. Pass `state_dir=` (e.g. the "
                "BackupAndRestore `backup_dir`) to keep the selection state "
                "with the training state."
            )
        self._reset_replay()
        while self._applied < self._rounds_due(epoch):
            if not self._round(use_model=self._applied > 0):
                break

    # ---- callback hooks ----------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._epoch = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._epoch is None:
            self._resume(epoch)
            self.dataset.start(epoch)
            self.dataset.plan(epoch, self._applied)
        self._epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.epochs_per_round == 0:
            self._round()
        if logs is not None:
            logs["queries_used"] = self.queries_used
            logs["queries_left"] = self.queries_left
            logs["active_round"] = self.round
        self.dataset.plan(epoch + 1, self._applied)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._epoch = None
        self.dataset.stop()
