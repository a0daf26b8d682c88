"""Deprecated alias of `keras_efficient.distillation.active` for the
selection strategies (their 0.1.0 home).

`keras_efficient.selection.X` keeps working for every strategy, the
rounding functions (`dependent_rounding`, `robust_marginals`,
`capped_proportional`), `student_margin`, `STRATEGIES` and `get`, and
importing it emits a `FutureWarning` (shown to users by default, unlike a
`DeprecationWarning`) naming the new home.
"""

import warnings

from keras_efficient.distillation.active import STRATEGIES
from keras_efficient.distillation.active import CoresetSelection
from keras_efficient.distillation.active import EntropySelection
from keras_efficient.distillation.active import MarginSelection
from keras_efficient.distillation.active import RobustSelection
from keras_efficient.distillation.active import SelectionContext
from keras_efficient.distillation.active import SelectionStrategy
from keras_efficient.distillation.active import SleepingExpertsSelection
from keras_efficient.distillation.active import UniformSelection
from keras_efficient.distillation.active import capped_proportional
from keras_efficient.distillation.active import dependent_rounding
from keras_efficient.distillation.active import get
from keras_efficient.distillation.active import robust_marginals
from keras_efficient.distillation.active import student_margin

warnings.warn(
    "`keras_efficient.selection` is deprecated and will be removed in a "
    "future release; import the selection strategies from "
    "`keras_efficient.distillation.active` instead (e.g. `from "
    "keras_efficient.distillation.active import MarginSelection`).",
    FutureWarning,
    stacklevel=2,
)

__all__ = [
    "STRATEGIES",
    "CoresetSelection",
    "EntropySelection",
    "MarginSelection",
    "RobustSelection",
    "SelectionContext",
    "SelectionStrategy",
    "SleepingExpertsSelection",
    "UniformSelection",
    "capped_proportional",
    "dependent_rounding",
    "get",
    "robust_marginals",
    "student_margin",
]
