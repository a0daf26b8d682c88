"""AltUp: alternating updates of a widened token representation.

"Alternating Updates for Efficient Transformers" (Baykal et al., NeurIPS
2023). One concept per module:

- `layer`: `AltUp`, the wrapper that predicts, computes on the active block
  and corrects;
- `coefficients`: its three coefficient algorithms (`StaticCoefficients`,
  `ActiveInputRouting`, `Gemma3nRouting`);
- `ends`: `AltUpInput`, `AltUpEmbedding` (widen) and `AltUpReadout`
  (reduce);
- `stack`: the active-block schedule `active_blocks` and `AltUpStack`.

This file only re-exports, so `keras_efficient.layers.altup.AltUp` and the
other 0.1.0 paths keep working.
"""

from keras_efficient.layers.altup.coefficients import ActiveInputRouting  # noqa: F401
from keras_efficient.layers.altup.coefficients import AltUpCoefficients  # noqa: F401
from keras_efficient.layers.altup.coefficients import Gemma3nRouting  # noqa: F401
from keras_efficient.layers.altup.coefficients import StaticCoefficients  # noqa: F401
from keras_efficient.layers.altup.ends import INPUT_MODES  # noqa: F401
from keras_efficient.layers.altup.ends import READOUT_MODES  # noqa: F401
from keras_efficient.layers.altup.ends import AltUpEmbedding  # noqa: F401
from keras_efficient.layers.altup.ends import AltUpInput  # noqa: F401
from keras_efficient.layers.altup.ends import AltUpReadout  # noqa: F401
from keras_efficient.layers.altup.layer import CLIP_MODES  # noqa: F401
from keras_efficient.layers.altup.layer import COEFFICIENT_MODES  # noqa: F401
from keras_efficient.layers.altup.layer import ROUTINGS  # noqa: F401
from keras_efficient.layers.altup.layer import AltUp  # noqa: F401
from keras_efficient.layers.altup.stack import SCHEDULES  # noqa: F401
from keras_efficient.layers.altup.stack import AltUpStack  # noqa: F401
from keras_efficient.layers.altup.stack import active_blocks  # noqa: F401
