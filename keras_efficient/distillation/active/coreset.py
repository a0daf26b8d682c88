"""Core-set (greedy k-center) selection on student embeddings."""

import keras
import numpy as np

from keras_efficient import _validation
from keras_efficient.distillation.active.context import SelectionContext
from keras_efficient.distillation.active.context import as_context
from keras_efficient.distillation.active.rounding import check_num_points
from keras_efficient.distillation.active.strategies import SelectionStrategy


def _distances_to_centers(x, sq, centers, batch_size):
    """Squared distance of every row of `x` to its nearest center."""
    c = np.asarray(centers, dtype=np.float32).reshape(len(centers), -1)
    if c.shape[1] != x.shape[1]:
        raise ValueError(
            "`centers` must have the embeddings' dimension "
            f"{x.shape[1]}. Received: shape={c.shape}"
        )
    cc = np.einsum("ij,ij->i", c, c)
    step = max(1, (1 << 22) // max(len(c), 1))  # ~16 MB blocks
    step = min(step, batch_size)
    mind = np.empty(len(x), dtype=np.float32)
    for s0 in range(0, len(x), step):
        blk = x[s0 : s0 + step] @ c.T
        blk *= -2.0
        blk += cc[None]
        blk += sq[s0 : s0 + step, None]
        mind[s0 : s0 + step] = blk.min(axis=1)
    return mind


def k_center_greedy(
    x: np.ndarray,
    b: int,
    centers: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
    batch_size: int = 8192,
) -> np.ndarray:
    """Greedy k-center: `b` rows of `x` far from `centers` and each other."""
    x = np.ascontiguousarray(np.asarray(x, np.float32).reshape(len(x), -1))
    n = len(x)
    chosen = np.empty(b, dtype=np.int64)
    if b == 0:
        return chosen
    sq = np.einsum("ij,ij->i", x, x)
    start = 0
    if centers is not None and len(centers):
        mind = _distances_to_centers(x, sq, centers, batch_size)
    else:
        mind = np.full(n, np.inf, dtype=np.float32)
        chosen[0] = int(np.random.default_rng(rng).integers(n))
        start = 1
    buf = np.empty(n, dtype=np.float32)

    def update(j):
        # einsum, not BLAS: a threaded gemv is several times slower on a
        # busy machine, and this loop is memory-bound anyway.
        np.einsum("ij,j->i", x, x[j], out=buf)
        np.multiply(buf, -2.0, out=buf)
        np.add(buf, sq, out=buf)
        np.add(buf, sq[j], out=buf)
        np.minimum(mind, buf, out=mind)
        mind[j] = -np.inf  # never picked again

    if start:
        update(chosen[0])
    for k in range(start, b):
        j = int(np.argmax(mind))
        chosen[k] = j
        update(j)
    return np.sort(chosen)


@keras.saving.register_keras_serializable(package="keras_efficient")
class CoresetSelection(SelectionStrategy):
    """Greedy k-center (core-set) selection on student embeddings.

    Picks, one at a time, the point farthest from the current centers (the
    already-queried points, `context.centers`, plus the points picked so
    far). The squared distance of every point to its nearest center is
    kept as a running minimum; a pick updates it with one matrix-vector
    product and three in-place vector operations over the pool (O(n d),
    no temporaries), and the distances to the centers are computed in
    blocks of `batch_size` rows. About 2 s for `b=1000` from 100k 64-d
    points on one CPU core.

    Reads `context.embeddings` (the probabilities unless given) and
    `context.centers`; without centers the first pick is uniform (from
    `context.rng`).

    Args:
        batch_size: rows per block when computing distances to centers.

    Example:

    ```python
    import numpy as np
    from keras_efficient.distillation.active import CoresetSelection
    from keras_efficient.distillation.active import SelectionContext
    ctx = SelectionContext(embeddings=np.array([[0.0], [0.1], [5.0]]),
                           centers=np.zeros((1, 1)))
    assert CoresetSelection().select(ctx, 1).tolist() == [2]
    ```
    """

    name = "coreset"

    def __init__(self, batch_size: int = 8192):
        self.batch_size = _validation.check_positive_int(
            "batch_size", batch_size
        )

    def select(
        self, context: SelectionContext | np.ndarray, num_points: int
    ) -> np.ndarray:
        context = as_context(context)
        x = context.embeddings
        b = check_num_points(num_points, len(x), name="num_points")
        rng = context.rng if b else None
        return k_center_greedy(x, b, context.centers, rng, self.batch_size)

    def get_config(self) -> dict:
        return {"batch_size": self.batch_size}
