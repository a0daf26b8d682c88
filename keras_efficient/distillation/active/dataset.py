"""The growing training set that `ActiveDistillation` feeds to `fit`."""

import threading
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_efficient.distillation.active.ledger import SelectionState
from keras_efficient.distillation.active.pool import as_pool


class QueriedDataset(keras.utils.PyDataset):
    """Training data that grows as the teacher is queried.

    Its length is fixed (`steps_per_epoch` batches) so `fit` sees the same
    number of steps on every backend. The batches of epoch `e` come from a
    plan made by `ActiveDistillation` from the `SelectionState` once the
    rounds due before `e` are done: the points answered so far and a
    permutation of them drawn from `(seed, e)` alone, cycled to fill the
    epoch.

    Batches are served in the order they are requested, whatever index
    `fit` asks for (`fit(shuffle=True)` reorders `PyDataset` indices with
    Python's global `random`, whose state no checkpoint holds; the plan is
    already a random permutation). A request for an epoch whose plan is
    not made yet (TensorFlow's prefetching starts reading epoch `e + 1`
    before `on_epoch_end(e)`) waits for it in its background thread.
    Before training starts (`fit` peeks at a batch for shapes), a
    placeholder batch is served: the peek never reaches the teacher.

    The chosen inputs are read back from the pool by index (for a
    streamed pool, once per round, then kept in memory: the training set
    is the budget's size, not the pool's); `preprocessor`, when given,
    maps each batch of pool inputs to the student's inputs (e.g. raw text
    to token ids).

    Args:
        state: the `SelectionState` to read the answers from.
        pool: the unlabeled pool: an array, a dict of arrays, an array of
            strings, a `tf.data.Dataset` or a `keras.utils.PyDataset`.
        batch_size: rows per batch.
        steps_per_epoch: batches per epoch.
        seed: seed of the per-epoch permutations.
        placeholder: `(x, y)` batch served before training starts (raw
            pool inputs, like the pool's).
        preprocessor: None or a callable applied to each batch's inputs.
    """

    _WAIT_S = 600.0

    def __init__(
        self,
        state: SelectionState,
        pool: np.ndarray,
        batch_size: int,
        steps_per_epoch: int,
        seed: int,
        placeholder: tuple[Any, np.ndarray],
        preprocessor: Callable | None = None,
    ):
        super().__init__()
        self.state = state
        self.pool = pool
        self._pool = as_pool(pool)
        self.preprocessor = preprocessor
        self.batch_size = batch_size
        self.steps = steps_per_epoch
        self.seed = seed
        self.placeholder = placeholder
        self._cond = threading.Condition()
        self._plans = {}  # epoch -> (x, y, rows)
        self._cursor = None  # (generation, epoch, step) of the next request
        self._generation = 0

    def __len__(self):
        return self.steps

    def start(self, epoch: int) -> None:
        """A `fit` starts at `epoch`: requests count from there."""
        with self._cond:
            self._generation += 1
            self._plans = {}
            self._cursor = (self._generation, epoch, 0)
            self._cond.notify_all()

    def stop(self) -> None:
        """Training ended: waiting requests get the placeholder."""
        with self._cond:
            self._generation += 1
            self._cursor = None
            self._plans = {}
            self._cond.notify_all()

    def plan(self, epoch: int, num_rounds: int) -> None:
        """Fixes the batches of `epoch` from the first `num_rounds` rounds."""
        idx, y = self.state.training_data(num_rounds)
        n = len(idx)
        if n == 0:
            raise RuntimeError(
                "ActiveDistillation has no teacher answers to train on."
            )
        perm = np.random.default_rng([self.seed, 1, epoch]).permutation(n)
        total = self.steps * self.batch_size
        rows = perm[np.arange(total) % n].reshape(self.steps, -1)
        with self._cond:
            self._plans = {
                e: p for e, p in self._plans.items() if e >= epoch - 1
            }
            self._plans[epoch] = (self._pool.take(idx), y, rows)
            self._cond.notify_all()

    def _take(self):
        with self._cond:
            if self._cursor is None:
                return None
            gen, epoch, step = self._cursor
            nxt = (gen, epoch, step + 1)
            if step + 1 >= self.steps:
                nxt = (gen, epoch + 1, 0)
            self._cursor = nxt
            on_main = threading.current_thread() is threading.main_thread()
            wait = 0.0 if on_main else self._WAIT_S
            self._cond.wait_for(
                lambda: epoch in self._plans or self._generation != gen,
                timeout=wait,
            )
            if self._generation != gen:
                return None
            if epoch not in self._plans:
                # Served on the main thread, so `fit` is reading the epoch
                # now: training on a placeholder would be silently wrong.
                raise RuntimeError(
                    f"QueriedDataset: epoch {epoch} has no plan. Pass the "
                    "dataset to `fit` with its `ActiveDistillation` in "
                    "`callbacks`, without `steps_per_epoch`."
                )
            return self._plans[epoch], step

    def __getitem__(self, idx):
        taken = self._take()
        if taken is None:
            x, y = self.placeholder
        else:
            (x, y, rows), step = taken
            x = keras.tree.map_structure(lambda a: a[rows[step]], x)
            y = y[rows[step]]
        if self.preprocessor is not None:
            x = self.preprocessor(x)
        return x, y
