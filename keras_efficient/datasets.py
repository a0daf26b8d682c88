"""Offline data for tutorials, benchmarks and tests.

Nothing here touches the network. Three sources are available on any machine
that has this package's dependencies:

- **MNIST-1D** (Greydanus, 2020), generated procedurally by the `mnist1d`
  package's `make_dataset` (never its downloader). 10 classes, sequences of
  length 40. Published reference points on the 4,000 / 1,000 split: logistic
  regression ~32%, MLP ~68%, CNN ~94% test accuracy.
- **Digits**: scikit-learn's 1,797 8x8 handwritten digits.
- **Byte-level text**: the Python standard library's own source files
  (`sysconfig.get_paths()["stdlib"]`, `site-packages` excluded), the same on
  every machine with the same Python version.

Every loader is deterministic for a given seed.
"""

import dataclasses
import functools
import hashlib
import os
import sysconfig

import numpy as np

from keras_efficient._validation import check_bool
from keras_efficient._validation import check_fraction
from keras_efficient._validation import check_int
from keras_efficient._validation import check_positive_int

# `(x_train, y_train), (x_test, y_test)`, as `keras.datasets` returns.
TrainTestSplits = tuple[
    tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]
]

MNIST1D_NUM_CLASSES = 10
MNIST1D_LENGTH = 40


def _cache_dir():
    root = os.environ.get(
        "KERAS_EFFICIENT_CACHE",
        os.path.join(os.path.expanduser("~"), ".cache", "keras_efficient"),
    )
    return root


@functools.lru_cache(maxsize=8)
def _generate_mnist1d(num_samples, seed):
    """Generates `num_samples` MNIST-1D examples; cached on disk."""
    path = os.path.join(_cache_dir(), f"mnist1d-n{num_samples}-s{seed}.npz")
    if os.path.exists(path):
        with np.load(path) as cached:
            return cached["x"], cached["y"]
    try:
        from mnist1d.data import get_dataset_args
        from mnist1d.data import make_dataset
    except ImportError as error:
        raise ImportError(
            "MNIST-1D needs the `mnist1d` package: "
            "`pip install keras-efficient[examples]` or `pip install mnist1d`."
        ) from error
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    # `train_split` only decides where make_dataset cuts; we concatenate the
    # two parts back and make our own documented splits.
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]]).astype("float32")
    y = np.concatenate([data["y"], data["y_test"]]).astype("int32")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, path)
    except OSError:
        pass  # A read-only home only costs us the cache.
    return x, y


def _mnist1d_copy(num_samples, seed, channels_last):
    """Fresh arrays: the generator's cache must never be handed out, or a
    caller's in-place edit would change the next call's data."""
    seed = check_int("seed", seed, min_value=0)
    channels_last = check_bool("channels_last", channels_last)
    x, y = _generate_mnist1d(num_samples, seed)
    x, y = x.copy(), y.copy()
    return (x[..., None] if channels_last else x), y


def load_mnist1d(
    num_train: int = 4000,
    num_test: int = 1000,
    seed: int | None = 42,
    channels_last: bool = True,
) -> TrainTestSplits:
    """Loads MNIST-1D as `(x_train, y_train), (x_test, y_test)`.

    The defaults reproduce the benchmark's 4,000 / 1,000 split (the `mnist1d`
    package's own default arguments, seed 42).

    Args:
        num_train: number of training examples.
        num_test: number of test examples (taken after the training ones).
        seed: seed of the generator. The same seed gives the same data.
        channels_last: if `True`, `x` has shape `(n, 40, 1)` (ready for
            `Conv1D`); otherwise `(n, 40)`.

    Returns:
        Tuple of NumPy arrays `(x_train, y_train), (x_test, y_test)`, with `x`
        float32 and `y` int32 class ids in `[0, 10)`.

    Example:

    >>> (x, y), (x_test, y_test) = load_mnist1d(num_train=200, num_test=50)
    >>> x.shape, y_test.shape
    ((200, 40, 1), (50,))
    """
    num_train = check_positive_int("num_train", num_train)
    num_test = check_positive_int("num_test", num_test)
    x, y = _mnist1d_copy(num_train + num_test, seed, channels_last)
    return (x[:num_train], y[:num_train]), (x[num_train:], y[num_train:])


@dataclasses.dataclass(frozen=True)
class DistillationSplits:
    """The four splits of the distillation-with-unlabeled-examples setting.

    Each field is a tuple `(x, y)` of NumPy arrays. `unlabeled` keeps its
    labels so benchmarks can score the teacher, but a method must only use
    them through the teacher.

    Attributes:
        labeled: the small labeled set the teacher is trained on.
        validation: the small labeled set the teacher-accuracy estimator is
            fitted on.
        unlabeled: the large pool the teacher labels for the student.
        test: held-out evaluation data.
    """

    labeled: tuple
    validation: tuple
    unlabeled: tuple
    test: tuple


def load_mnist1d_splits(
    num_labeled: int = 1000,
    num_validation: int = 500,
    num_unlabeled: int = 45000,
    num_test: int = 5000,
    seed: int | None = 42,
    channels_last: bool = True,
) -> DistillationSplits:
    """Loads MNIST-1D cut into labeled / validation / unlabeled / test splits.

    The splits are disjoint and taken in that order from one generated set
    of `num_labeled + num_validation + num_unlabeled + num_test` examples
    (the generator's own order is already random). 50,000 examples take
    about 30 s to generate on one core the first time and are cached on disk
    afterwards (`$KERAS_EFFICIENT_CACHE`, default `~/.cache/keras_efficient`).

    Args:
        num_labeled: size of the labeled set the teacher trains on.
        num_validation: size of the labeled validation set.
        num_unlabeled: size of the unlabeled pool (may be 0).
        num_test: size of the test set.
        seed: seed of the generator.
        channels_last: if `True`, `x` has shape `(n, 40, 1)`.

    Returns:
        A `DistillationSplits`.

    Example:

    >>> splits = load_mnist1d_splits(100, 50, 300, 100)
    >>> splits.unlabeled[0].shape
    (300, 40, 1)
    """
    sizes = [
        check_positive_int("num_labeled", num_labeled),
        check_positive_int("num_validation", num_validation),
        check_int("num_unlabeled", num_unlabeled, min_value=0),
        check_positive_int("num_test", num_test),
    ]
    x, y = _mnist1d_copy(sum(sizes), seed, channels_last)
    bounds = np.cumsum([0] + sizes)
    parts = [(x[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return DistillationSplits(*parts)


def load_digits(
    num_test: int = 297, seed: int | None = 0, channels_last: bool = True
) -> TrainTestSplits:
    """Loads scikit-learn's 8x8 digits as `(x_train, y_train), (x_test, ...)`.

    Pixel values are scaled to `[0, 1]`. The split is a seeded shuffle of the
    1,797 images: `1797 - num_test` for training and `num_test` for test.

    Args:
        num_test: number of test images, in `[1, 1796]`.
        seed: seed of the shuffle.
        channels_last: if `True`, `x` has shape `(n, 8, 8, 1)`; otherwise
            `(n, 64)`.

    Returns:
        Tuple of NumPy arrays `(x_train, y_train), (x_test, y_test)`.

    Example:

    >>> (x, y), (x_test, y_test) = load_digits()
    >>> x.shape
    (1500, 8, 8, 1)
    """
    from sklearn.datasets import load_digits as sklearn_load_digits

    digits = sklearn_load_digits()
    n = len(digits.target)
    num_test = check_int("num_test", num_test, min_value=1, max_value=n - 1)
    seed = check_int("seed", seed, min_value=0)
    channels_last = check_bool("channels_last", channels_last)
    order = np.random.default_rng(seed).permutation(n)
    x = (digits.images[order] / 16.0).astype("float32")
    y = digits.target[order].astype("int32")
    x = x[..., None] if channels_last else x.reshape(n, -1)
    return (x[num_test:], y[num_test:]), (x[:num_test], y[:num_test])


def stdlib_source_files() -> list[str]:
    """Sorted paths of the `.py` files of the standard library's source.

    `site-packages` and `test`/`tests` folders are excluded, so the text does
    not depend on what happens to be installed.
    """
    root = sysconfig.get_paths()["stdlib"]
    excluded = {"site-packages", "dist-packages", "__pycache__"}
    paths = []
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories[:] = sorted(
            d for d in subdirectories if d not in excluded
        )
        paths.extend(
            os.path.join(directory, f) for f in filenames if f.endswith(".py")
        )
    return sorted(paths, key=lambda p: os.path.relpath(p, root))


@functools.lru_cache(maxsize=4)
def _stdlib_bytes(max_bytes):
    chunks, total = [], 0
    for path in stdlib_source_files():
        with open(path, "rb") as f:
            content = f.read()
        chunks.append(content)
        total += len(content)
        if total >= max_bytes:
            break
    return np.frombuffer(b"".join(chunks)[:max_bytes], dtype=np.uint8)


def load_stdlib_text(
    max_bytes: int | None = 4_000_000, validation_fraction: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Loads byte-level text from the Python standard library's source.

    Files are read in sorted order and concatenated, up to `max_bytes`; the
    last `validation_fraction` of the bytes is held out, so the two parts
    never share a file position. Vocabulary: the 256 byte values.

    Args:
        max_bytes: how many bytes to read in total.
        validation_fraction: fraction held out for evaluation, in `(0, 1)`.

    Returns:
        Tuple `(train, validation)` of uint8 NumPy arrays.

    Example:

    >>> train, validation = load_stdlib_text(max_bytes=100_000)
    >>> len(train) + len(validation)
    100000
    """
    max_bytes = check_positive_int("max_bytes", max_bytes)
    validation_fraction = check_fraction(
        "validation_fraction", validation_fraction, allow_zero=False
    )
    data = _stdlib_bytes(int(max_bytes))
    if len(data) < 2:
        raise ValueError("Could not read the standard library's source.")
    cut = int(round(len(data) * (1.0 - validation_fraction)))
    return data[:cut].copy(), data[cut:].copy()


def lm_windows(
    data: np.ndarray,
    sequence_length: int,
    num_windows: int,
    seed: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cuts random next-byte prediction windows out of a byte array.

    Args:
        data: 1-D array of token ids (e.g. from `load_stdlib_text`).
        sequence_length: length of each window.
        num_windows: how many windows to cut.
        seed: seed of the window positions.

    Returns:
        Tuple `(x, y)` of int32 arrays of shape
        `(num_windows, sequence_length)`, with `y[:, t] = x[:, t + 1]` within
        the source text.

    Example:

    >>> train, _ = load_stdlib_text(max_bytes=100_000)
    >>> x, y = lm_windows(train, sequence_length=64, num_windows=8)
    >>> bool((x[:, 1:] == y[:, :-1]).all())
    True
    """
    sequence_length = check_positive_int("sequence_length", sequence_length)
    num_windows = check_positive_int("num_windows", num_windows)
    seed = check_int("seed", seed, min_value=0)
    data = np.asarray(data)
    if data.ndim != 1 or len(data) <= sequence_length:
        raise ValueError(
            "`data` must be a 1-D array longer than `sequence_length`. "
            f"Received: data.shape={data.shape}, "
            f"sequence_length={sequence_length}"
        )
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(data) - sequence_length, size=num_windows)
    index = starts[:, None] + np.arange(sequence_length + 1)[None, :]
    windows = data[index].astype("int32")
    return windows[:, :-1], windows[:, 1:]


def dataset_fingerprint(*arrays: np.ndarray) -> str:
    """A short hash of arrays, to record in benchmark results."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:12]
