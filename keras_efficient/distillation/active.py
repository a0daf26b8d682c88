"""ActiveDistillation: spend a teacher-query budget on the points that help."""

import json
import math
import os
import threading

import keras
import numpy as np

from keras_efficient.distillation import strategies as selection


class QueriedDataset(keras.utils.PyDataset):
    """Training data that grows as the teacher is queried.

    Its length is fixed (`steps_per_epoch` batches) so `fit` sees the same
    number of steps on every backend. The batches of an epoch come from a
    plan the owning `ActiveDistillation` makes before the epoch's data is
    read: a snapshot of the points queried so far and a permutation of
    them drawn from `(seed, epoch)` alone, cycled to fill the epoch.

    Batches are served in the order they are requested, whatever index
    `fit` asks for: `fit(shuffle=True)` shuffles the batch indices of a
    `PyDataset` with Python's global `random`, whose state no checkpoint
    holds, so serving by index would make a resumed run train on another
    batch order. The plan is already a random permutation.
    """

    def __init__(self, owner, batch_size, steps_per_epoch):
        super().__init__()
        self._owner = owner
        self.batch_size = batch_size
        self.steps = steps_per_epoch
        self._lock = threading.Lock()
        self._plan = None  # (epoch, x, y, batch rows)
        self._served = 0

    def __len__(self):
        return self.steps

    @property
    def planned_epoch(self):
        return None if self._plan is None else self._plan[0]

    def plan(self, epoch, x, y, seed):
        """Fixes the batches of `epoch` (called by the owner)."""
        n = len(y)
        perm = np.random.default_rng([seed, 1, epoch]).permutation(n)
        total = self.steps * self.batch_size
        rows = perm[np.arange(total) % n].reshape(self.steps, -1)
        with self._lock:
            self._plan = (epoch, x, y, rows)
            self._served = 0

    def clear(self):
        with self._lock:
            self._plan = None
            self._served = 0

    def __getitem__(self, idx):
        with self._lock:
            plan = self._plan
            if plan is not None:
                k = self._served % self.steps
                self._served += 1
        if plan is None:
            # `fit` peeks at a batch (for shapes) before any callback runs:
            # the first rows of the current data, no RNG drawn.
            self._owner._start()
            x, y = self._owner.train_x, self._owner.train_y
            sel = np.arange(self.batch_size) % len(y)
            return x[sel], y[sel]
        _, x, y, rows = plan
        return x[rows[k]], y[rows[k]]


class ActiveDistillation(keras.callbacks.Callback):
    """Active query selection for distillation under a teacher budget.

    Each round scores the not-yet-queried pool with the current student
    (batched `predict`), picks `queries_per_round` points with `strategy`,
    queries the teacher on those points only (batched) and adds them to
    `self.dataset`, the training data `fit` reads. Round 0 runs before any
    training (so it is uniform), then one round after every
    `epochs_per_round` epochs (at the epoch's last train batch) until
    `budget` queries are spent. A point is never queried twice and the
    budget is never exceeded. If the teacher raises, nothing of that round
    is added and a `RuntimeError` names the round. With `state_dir` the
    state (queried indices and teacher outputs, round, strategy state,
    selection RNG, seed) is written after every epoch and reloaded on
    resume, so an interrupted run resumed in a new process with
    `keras.callbacks.BackupAndRestore` (listed after this callback) ends
    with the same queried set and, on the same machine, the same student
    weights as an uninterrupted run.

    `self.dataset` is a `keras.utils.PyDataset` of fixed length
    (`steps_per_epoch` batches) that draws its batches from the points
    queried so far: pass it to `fit` as `x`, without `steps_per_epoch`.
    The batch order of epoch `e` depends only on `(seed, e)`, not on
    `fit`'s `shuffle` (which would reorder the batches with Python's global
    `random`, a state no checkpoint restores).

    Args:
        pool: array `(n, ...)` of unlabeled inputs.
        teacher: a Keras model or any callable mapping a batch to outputs.
        budget: total number of teacher queries (<= `len(pool)`).
        queries_per_round: queries per round (>= 1).
        strategy: a name in `keras_efficient.selection.STRATEGIES` or a
            `SelectionStrategy`.
        epochs_per_round: epochs of training between rounds.
        validation: optional `(x_val, y_val)` labeled set; sets
            `RobustSelection.teacher_accuracy` from the teacher when unset.
        batch_size: batch size for training, scoring and querying.
        steps_per_epoch: batches per epoch (default:
            `ceil(budget / batch_size)`).
        from_logits: whether the student outputs logits.
        embedding_layer: name of a layer whose output is the embedding for
            `coreset` (functional models); default: the probabilities.
        state_dir: directory for the resumable state (e.g. the
            `BackupAndRestore` directory).
        seed: integer seed of the selection RNG and of the per-epoch data
            order (`None`: drawn once, and kept in the saved state).
        verbose: 1 prints progress bars when scoring or querying.

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
    student.fit(active.dataset, epochs=4, callbacks=[active])
    ```
    """

    def __init__(
        self,
        pool,
        teacher,
        budget,
        queries_per_round,
        strategy="robust",
        epochs_per_round=1,
        validation=None,
        batch_size=256,
        steps_per_epoch=None,
        from_logits=True,
        embedding_layer=None,
        state_dir=None,
        seed=0,
        verbose=0,
    ):
        super().__init__()
        pool = np.asarray(pool)
        n = len(pool)
        if int(budget) != budget or budget < 1 or budget > n:
            raise ValueError(
                f"`budget` must be an integer in [1, len(pool)={n}]. "
                f"Received: budget={budget}"
            )
        if int(queries_per_round) != queries_per_round or queries_per_round < 1:
            raise ValueError(
                "`queries_per_round` must be an integer >= 1. Received: "
                f"queries_per_round={queries_per_round}"
            )
        if epochs_per_round < 1:
            raise ValueError(
                "`epochs_per_round` must be >= 1. Received: "
                f"epochs_per_round={epochs_per_round}"
            )
        self.pool = pool
        self.teacher = teacher
        self.budget = int(budget)
        self.queries_per_round = int(queries_per_round)
        self.strategy = selection.get(strategy)
        self.epochs_per_round = int(epochs_per_round)
        self.validation = validation
        self.batch_size = int(batch_size)
        self.from_logits = from_logits
        self.embedding_layer = embedding_layer
        self.state_dir = state_dir
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**31))
        if int(seed) != seed or seed < 0:
            raise ValueError(
                f"`seed` must be a non-negative integer or None. Received: "
                f"seed={seed}"
            )
        self.seed = int(seed)
        self.verbose = verbose
        self.rng = np.random.default_rng(self.seed)
        self.queried = np.zeros((0,), dtype=np.int64)
        self.train_x = pool[:0]
        self.train_y = None
        self.round = 0
        self.history = []  # queries per round
        steps = steps_per_epoch or math.ceil(self.budget / self.batch_size)
        self.dataset = QueriedDataset(self, self.batch_size, steps)
        self._epoch = None  # the epoch being trained, None outside fit
        self._round_epoch = None  # last epoch whose round has run
        self._loaded_epoch = None

    # ---- state -----------------------------------------------------------
    @property
    def queries_used(self):
        return int(len(self.queried))

    @property
    def queries_left(self):
        return self.budget - self.queries_used

    def _state_path(self, epoch):
        return os.path.join(self.state_dir, f"active_state_{epoch}")

    def _saved_epochs(self):
        if not self.state_dir or not os.path.isdir(self.state_dir):
            return []
        out = []
        for f in os.listdir(self.state_dir):
            if f.startswith("active_state_") and f.endswith(".json"):
                out.append(int(f[len("active_state_") : -len(".json")]))
        return sorted(out)

    def _save_state(self, epoch):
        if not self.state_dir:
            return
        os.makedirs(self.state_dir, exist_ok=True)
        path = self._state_path(epoch)
        np.savez(path + ".npz", queried=self.queried, y=self.train_y)
        meta = {
            "epoch": epoch,
            "round": self.round,
            "history": self.history,
            "seed": self.seed,
            "round_epoch": self._round_epoch,
            "rng": self.rng.bit_generator.state,
            "strategy": self.strategy.get_state(),
            "teacher_accuracy": getattr(
                self.strategy, "teacher_accuracy", None
            ),
        }
        tmp = path + ".json.tmp"
        with open(tmp, "w") as f:
            json.dump(meta, f)
        os.replace(tmp, path + ".json")  # the JSON marks the state complete
        for old in self._saved_epochs():  # keep this epoch and the one before
            if old < epoch - 1:
                self._remove_state(old)

    def _remove_state(self, epoch):
        for ext in (".json", ".npz"):  # JSON first: it marks completeness
            path = self._state_path(epoch) + ext
            if os.path.exists(path):
                os.remove(path)

    def _load_state(self, epoch):
        path = self._state_path(epoch)
        with open(path + ".json") as f:
            meta = json.load(f)
        arrays = np.load(path + ".npz", allow_pickle=False)
        self.queried = arrays["queried"].astype(np.int64)
        self.train_y = arrays["y"]
        self.train_x = self.pool[self.queried]
        self.round = meta["round"]
        self.history = meta["history"]
        self.seed = meta["seed"]
        self._round_epoch = meta["round_epoch"]
        self.rng.bit_generator.state = meta["rng"]
        self.strategy.set_state(meta["strategy"])
        if hasattr(self.strategy, "teacher_accuracy"):
            self.strategy.teacher_accuracy = meta["teacher_accuracy"]
        self._loaded_epoch = epoch

    # ---- teacher and student ---------------------------------------------
    def _progbar(self, n, what):
        if self.verbose:
            print(f"ActiveDistillation round {self.round}: {what}")
            return keras.utils.Progbar(n)
        return None

    def _call_teacher(self, x):
        outs, bar = [], self._progbar(len(x), "querying the teacher")
        for s in range(0, len(x), self.batch_size):
            xb = x[s : s + self.batch_size]
            if isinstance(self.teacher, keras.Model):
                yb = self.teacher.predict_on_batch(xb)
            else:
                yb = self.teacher(xb)
            outs.append(np.asarray(keras.ops.convert_to_numpy(yb)))
            if bar is not None:
                bar.update(min(s + self.batch_size, len(x)))
        return np.concatenate(outs, axis=0)

    def _score(self, idx):
        x = self.pool[idx]
        if self.verbose:
            print(f"ActiveDistillation round {self.round}: scoring {len(x)}")
        out = self._predict(self.model, x, self.verbose)
        out = np.asarray(out, dtype=np.float64)
        if self.from_logits:
            out = out - out.max(axis=1, keepdims=True)
            out = np.exp(out)
            out /= out.sum(axis=1, keepdims=True)
        return out

    def _embed(self, idx):
        model = self.model
        cached = getattr(self, "_embedder", None)
        if cached is None or cached[0] is not model:
            # Built once per student: a new model every round would be
            # traced and compiled again every round.
            sub = keras.Model(
                model.inputs, model.get_layer(self.embedding_layer).output
            )
            self._embedder = cached = (model, sub)
        return self._predict(cached[1], self.pool[idx], 0)

    def _predict(self, model, x, verbose):
        # Pad to whole batches: the pool shrinks every round, and a last
        # batch of a new size would make the backend compile `predict` for
        # that shape again, every round.
        n = len(x)
        pad = -n % self.batch_size
        if pad:
            x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)], axis=0)
        out = model.predict(x, batch_size=self.batch_size, verbose=verbose)
        return keras.tree.map_structure(lambda a: np.asarray(a)[:n], out)

    def _set_teacher_accuracy(self):
        if self.validation is None:
            return
        if getattr(self.strategy, "teacher_accuracy", 1) is not None:
            return
        xv, yv = self.validation
        tv = self._call_teacher(np.asarray(xv))
        yv = np.asarray(yv)
        if yv.ndim > 1:
            yv = yv.argmax(-1)
        self.strategy.teacher_accuracy = float((tv.argmax(-1) == yv).mean())

    def query_round(self, use_model=True):
        """Runs one selection + query round; returns the new pool indices."""
        b = min(self.queries_per_round, self.queries_left)
        if b <= 0:
            return np.zeros((0,), dtype=np.int64)
        self._set_teacher_accuracy()
        avail = np.setdiff1d(
            np.arange(len(self.pool)), self.queried, assume_unique=True
        )
        if self.strategy.name == "uniform" or not use_model:
            scores = np.full((len(avail), 2), 0.5)
        else:
            scores = self._score(avail)
        if len(scores) != len(avail):
            raise ValueError(
                f"pool and scores have different lengths: {len(avail)} "
                f"available points, {len(scores)} scores"
            )
        context = {"indices": avail}
        if self.strategy.name == "coreset":
            if self.embedding_layer:
                emb = self._embed(np.arange(len(self.pool)))
            else:
                emb = np.zeros((len(self.pool),) + scores.shape[1:])
                emb[avail] = scores
                if len(self.queried):
                    emb[self.queried] = self._score(self.queried)
            context["embeddings"] = emb[avail]
            context["centers"] = emb[self.queried]
        rel = np.asarray(self.strategy.select(scores, b, self.rng, **context))
        new = avail[rel]
        if len(np.unique(new)) != b or np.isin(new, self.queried).any():
            raise RuntimeError(
                f"Strategy {self.strategy.name!r} returned repeated or "
                "already-queried points."
            )
        try:
            y_new = self._call_teacher(self.pool[new])
        except Exception as e:
            raise RuntimeError(
                f"ActiveDistillation: the teacher raised while querying "
                f"round {self.round} ({b} points); nothing of this round was "
                f"added ({self.queries_used} queries used so far)."
            ) from e
        if len(y_new) != b:
            raise ValueError(
                f"The teacher returned {len(y_new)} outputs for {b} inputs."
            )
        # Commit atomically, after the teacher answered for the whole round.
        self.train_y = (
            y_new
            if self.train_y is None
            else np.concatenate([self.train_y, y_new], axis=0)
        )
        self.queried = np.concatenate([self.queried, new])
        self.train_x = self.pool[self.queried]
        self.round += 1
        self.history.append(int(b))
        return new

    def _start(self):
        """First data: resume from the latest saved state or run round 0."""
        if self.train_y is not None:
            return
        saved = self._saved_epochs()
        if saved:
            self._load_state(saved[-1])
            return
        strategy = self.strategy
        self.strategy = selection.UniformSelection()
        try:
            self.query_round(use_model=False)
        finally:
            self.strategy = strategy

    def _plan(self, epoch):
        self.dataset.plan(epoch, self.train_x, self.train_y, self.seed)

    def _finish_epoch_training(self, epoch):
        """After the last train step of `epoch`: round, then next plan.

        Runs before `fit` creates the next epoch's data iterator (which on
        TensorFlow starts prefetching at once, before `on_epoch_end`), so
        every batch of epoch `epoch + 1` comes from the data after this
        round, on every backend.
        """
        if self._round_epoch == epoch:
            return
        if (epoch + 1) % self.epochs_per_round == 0 and self.queries_left:
            self.query_round()
        self._round_epoch = epoch
        self._plan(epoch + 1)

    # ---- callback hooks --------------------------------------------------
    def on_train_begin(self, logs=None):
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        first = self._epoch is None
        self._epoch = epoch
        if first:
            # First epoch of this `fit`: resume from the state saved at the
            # end of the previous epoch (BackupAndRestore restored the
            # model's weights and optimizer from that same point).
            if epoch > 0 and self.state_dir:
                if not os.path.exists(self._state_path(epoch - 1) + ".json"):
                    raise ValueError(
                        f"Resuming at epoch {epoch} but no ActiveDistillation "
                        f"state for epoch {epoch - 1} in {self.state_dir!r}."
                    )
                self._load_state(epoch - 1)
            self._start()
        if first or self.dataset.planned_epoch != epoch:
            self._plan(epoch)

    def on_train_batch_end(self, batch, logs=None):
        steps = (self.params or {}).get("steps") or self.dataset.steps
        if self._epoch is not None and batch + 1 >= steps:
            self._finish_epoch_training(self._epoch)

    def on_epoch_end(self, epoch, logs=None):
        # Normally done at the last batch; this covers epochs cut short.
        self._finish_epoch_training(epoch)
        if logs is not None:
            logs["queries_used"] = self.queries_used
            logs["queries_left"] = self.queries_left
            logs["active_round"] = self.round
        self._save_state(epoch)

    def on_train_end(self, logs=None):
        self._epoch = None
        self.dataset.clear()
        for e in self._saved_epochs():
            self._remove_state(e)
