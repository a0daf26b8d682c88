"""The budgeted selection state of `ActiveDistillation`, kept durably.

`SelectionState` is the ledger of every teacher query: per round, the pool
indices chosen (in order), the RNG and strategy state right after the
choice, and per batch of the round whether it was sent to the teacher and
the answers received. With a `directory` every change is written to disk
*before* the step that depends on it (write-ahead), each file atomically
(`os.replace`):

1. `round_R.json`: the round's indices and post-selection state, written
   before any of its points goes to the teacher;
2. `round_R_batch_K.sent`: written just before batch K goes to the teacher;
3. `round_R_batch_K.npy`: the teacher's answers, written as soon as they
   arrive.

A batch marked sent without answers (the process died, or the teacher
raised, during the call) is counted as spent and never sent again: the
teacher may have seen it. A round recorded but not finished is finished
on resume with the same indices, so a crash anywhere never sends a point
twice nor exceeds the budget.
"""

import json
import os

import numpy as np

_SUBDIR = "active_distillation"


def _atomic_write(path, write):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path, obj):
    _atomic_write(path, lambda f: f.write(json.dumps(obj).encode()))


class RoundRecord:
    """One round: indices in order, batches, post-selection state."""

    def __init__(
        self,
        index: int,
        indices: np.ndarray,
        batch_size: int,
        rng: dict,
        strategy: dict,
    ):
        self.index = int(index)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.rng = rng
        self.strategy = strategy
        nb = -(-len(self.indices) // self.batch_size)
        self.sent = [False] * nb
        self.answers = [None] * nb

    @property
    def batches(self) -> list[np.ndarray]:
        bs = self.batch_size
        return [
            self.indices[k * bs : (k + 1) * bs] for k in range(len(self.sent))
        ]

    @property
    def complete(self) -> bool:
        return all(self.sent)

    def answered(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(indices, answers) of the answered batches, in order."""
        pairs = [
            (idx, y)
            for idx, y in zip(self.batches, self.answers)
            if y is not None
        ]
        return pairs

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "indices": self.indices.tolist(),
            "batch_size": self.batch_size,
            "rng": self.rng,
            "strategy": self.strategy,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "RoundRecord":
        return cls(
            d["index"], d["indices"], d["batch_size"], d["rng"], d["strategy"]
        )


class SelectionState:
    """Ledger of the teacher queries of an active-distillation run.

    Args:
        config: dict identifying the run (pool size, budget, ...); a saved
            state with another config is refused.
        directory: where to keep the ledger (a subfolder
            `active_distillation/` is used), or None for memory only.

    Example:

    ```python
    import numpy as np
    from keras_efficient.distillation.active import SelectionState
    state = SelectionState({"budget": 4})
    rec = state.begin_round([3, 1], batch_size=2, rng={}, strategy={})
    state.mark_sent(rec, 0)
    state.save_answers(rec, 0, np.ones((2, 3), "float32"))
    assert state.queries_spent == 2 and state.to_dict()["rounds"] == 1
    ```
    """

    def __init__(
        self, config: dict, directory: str | os.PathLike | None = None
    ):
        self.config = dict(config)
        self.teacher_accuracy = None
        self.rounds = []
        self.directory = None
        if directory is not None:
            self.directory = os.path.join(os.fspath(directory), _SUBDIR)
            self._load()

    # ---- derived views ---------------------------------------------------
    @property
    def queries_spent(self) -> int:
        """Points that may have reached the teacher (the budget's count)."""
        return sum(
            len(idx)
            for r in self.rounds
            for idx, sent in zip(r.batches, r.sent)
            if sent
        )

    @property
    def queries_recorded(self) -> int:
        """Points chosen in recorded rounds (sent or about to be)."""
        return sum(len(r.indices) for r in self.rounds)

    def lost_indices(self) -> np.ndarray:
        """Points sent without an answer kept (they count as spent)."""
        out = [
            idx
            for r in self.rounds
            for idx, sent, y in zip(r.batches, r.sent, r.answers)
            if sent and y is None
        ]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def training_data(
        self, num_rounds: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(pool indices, answers) of the first `num_rounds` rounds."""
        pairs = [p for r in self.rounds[:num_rounds] for p in r.answered()]
        if not pairs:
            return np.zeros(0, np.int64), None
        return (
            np.concatenate([p[0] for p in pairs]),
            np.concatenate([p[1] for p in pairs]),
        )

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "teacher_accuracy": self.teacher_accuracy,
            "rounds": len(self.rounds),
        }

    # ---- write-ahead updates ---------------------------------------------
    def _path(self, name):
        return os.path.join(self.directory, name)

    def set_teacher_accuracy(self, value: float) -> None:
        """Records the teacher's measured accuracy (written at once)."""
        self.teacher_accuracy = float(value)
        self._save_meta()

    def update_config(self, values: dict) -> None:
        """Adds `values` (e.g. a drawn seed) to the run's config and writes
        it before anything depends on them.

        The config a saved state is checked against stays the one given at
        construction; keys added here are kept and restored, not compared.
        """
        self.config.update(values)
        self._save_meta()

    def begin_round(
        self, indices: np.ndarray, batch_size: int, rng: dict, strategy: dict
    ) -> RoundRecord:
        """Records a round's choice before any of its points is sent."""
        rec = RoundRecord(len(self.rounds), indices, batch_size, rng, strategy)
        if self.directory is not None:
            _write_json(
                self._path(f"round_{rec.index:05d}.json"), rec.to_dict()
            )
        self.rounds.append(rec)
        return rec

    def mark_sent(self, rec: RoundRecord, k: int) -> None:
        """Records that batch `k` of `rec` is about to reach the teacher."""
        if self.directory is not None:
            path = self._path(f"round_{rec.index:05d}_batch_{k:05d}.sent")
            _atomic_write(path, lambda f: None)
        rec.sent[k] = True

    def save_answers(
        self, rec: RoundRecord, k: int, answers: np.ndarray
    ) -> None:
        answers = np.asarray(answers)
        if self.directory is not None:
            path = self._path(f"round_{rec.index:05d}_batch_{k:05d}.npy")
            _atomic_write(path, lambda f: np.save(f, answers))
        rec.answers[k] = answers

    # ---- disk ------------------------------------------------------------
    def _save_meta(self):
        if self.directory is not None:
            meta = {
                "config": self.config,
                "teacher_accuracy": self.teacher_accuracy,
            }
            _write_json(self._path("state.json"), meta)

    def _load(self):
        os.makedirs(self.directory, exist_ok=True)
        meta_path = self._path("state.json")
        if not os.path.exists(meta_path):
            self._save_meta()
            return
        with open(meta_path) as f:
            meta = json.load(f)
        saved = {k: meta["config"].get(k) for k in self.config}
        if saved != self.config:
            differ = ", ".join(
                f"{k}={saved[k]!r} there, {self.config[k]!r} here"
                for k in self.config
                if saved[k] != self.config[k]
            )
            raise ValueError(
                f"The selection state in {self.directory!r} belongs to "
                f"another run ({differ}): resuming would replay its teacher "
                "answers onto other data. To start afresh, pass another "
                "`state_dir` or delete that folder (its teacher answers are "
                "then lost); to resume it, pass the pool, teacher and "
                "settings of the run that wrote it."
            )
        self.config = meta["config"]
        self.teacher_accuracy = meta.get("teacher_accuracy")
        names = sorted(os.listdir(self.directory))
        for name in names:
            if name.startswith("round_") and name.endswith(".json"):
                with open(self._path(name)) as f:
                    self._load_round(RoundRecord.from_dict(json.load(f)))

    def _load_round(self, rec):
        if rec.index != len(self.rounds):
            raise ValueError(
                f"The selection state in {self.directory!r} misses round "
                f"{len(self.rounds)}."
            )
        for k in range(len(rec.sent)):
            stem = self._path(f"round_{rec.index:05d}_batch_{k:05d}")
            rec.sent[k] = os.path.exists(stem + ".sent")
            if os.path.exists(stem + ".npy"):
                rec.answers[k] = np.load(stem + ".npy", allow_pickle=False)
        self.rounds.append(rec)
