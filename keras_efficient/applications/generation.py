"""Token generation for causal language models (a mixin).

`TokenGenerationMixin.generate` continues token sequences greedily or by
sampling on a fixed-length window, so on JAX one jitted step serves every
generated token. A model using it has a `sequence_length` attribute, sets
`self._generate_step = None` in its constructor, and maps token ids
`(batch, sequence_length)` to logits `(batch, sequence_length, vocab)`.
"""

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_efficient._data_checks import check_ids_in_range
from keras_efficient._data_checks import check_integer_ids
from keras_efficient._validation import check_int
from keras_efficient._validation import check_number


class TokenGenerationMixin:
    """Adds `generate` to a causal language model (see the module doc)."""

    def _next_token_logits(self, window, position):
        """Logits `(batch, vocab)` at `position` of a full-length window."""
        if keras.backend.backend() == "jax":
            if self._generate_step is None:
                import jax

                def step(trainable, non_trainable, window, position):
                    logits, _ = self.stateless_call(
                        trainable, non_trainable, window
                    )
                    return ops.take(logits, position, axis=1)

                self._generate_step = jax.jit(step)
            return self._generate_step(
                [v.value for v in self.trainable_variables],
                [v.value for v in self.non_trainable_variables],
                window,
                np.int32(position),
            )
        logits = self(window, training=False)
        return ops.take(logits, position, axis=1)

    def generate(
        self,
        prompt_ids: Any,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> np.ndarray:
        """Continues token sequences, greedily or by sampling.

        The model runs on a fixed-length window of `sequence_length` tokens
        (the prompt padded on the right, or the last `sequence_length`
        tokens once it is full), so on JAX one jitted step serves every
        generated token.

        Args:
            prompt_ids: integer array `(T,)` or `(batch, T)`, `T >= 1`,
                with ids in `[0, vocabulary_size)` (ragged rows, float
                ids and ids outside the vocabulary raise).
            max_new_tokens: how many tokens to append, `>= 0`.
            temperature: `0` for greedy decoding, `> 0` to sample from
                `softmax(logits / temperature)`.
            seed: seed of the sampler (NumPy); same seed, same text.

        Returns:
            A NumPy int32 array: the prompt followed by the new tokens, with
            the prompt's rank.
        """
        prompt = _prompt_array(prompt_ids)
        squeeze = prompt.ndim == 1
        if squeeze:
            prompt = prompt[None, :]
        if prompt.ndim != 2 or prompt.shape[1] < 1:
            raise ValueError(
                "`prompt_ids` must have shape (T,) or (batch, T) with T >= 1. "
                f"Received: prompt_ids.shape={np.shape(prompt_ids)}"
            )
        check_integer_ids(prompt, "prompt_ids")
        vocabulary_size = getattr(self, "vocabulary_size", None)
        check_ids_in_range(prompt, vocabulary_size, "prompt_ids")
        check_int("max_new_tokens", max_new_tokens, min_value=0)
        check_number("temperature", temperature, min_value=0)
        rng = np.random.default_rng(seed)
        tokens = prompt.astype("int32")
        length = self.sequence_length
        for _ in range(max_new_tokens):
            context = tokens[:, -length:]
            position = context.shape[1] - 1
            window = np.zeros((len(tokens), length), dtype="int32")
            window[:, : context.shape[1]] = context
            logits = ops.convert_to_numpy(
                self._next_token_logits(window, position)
            ).astype("float64")
            if not np.all(np.isfinite(logits)):
                # argmax of NaN logits is token 0, forever after.
                raise ValueError(
                    "`generate` got non-finite logits at generated token "
                    f"{tokens.shape[1] - prompt.shape[1]}: the model's "
                    "weights are not finite (a diverged fit?). Received: "
                    f"prompt_ids.shape={prompt.shape}"
                )
            if temperature == 0:
                next_token = logits.argmax(-1)
            else:
                gumbel = rng.gumbel(size=logits.shape)
                next_token = (logits / temperature + gumbel).argmax(-1)
            tokens = np.concatenate(
                [tokens, next_token[:, None].astype("int32")], axis=1
            )
        return tokens[0] if squeeze else tokens


def _prompt_array(prompt_ids):
    """`prompt_ids` as a NumPy array; ragged rows raise our error."""
    if isinstance(prompt_ids, (list, tuple)) and any(
        isinstance(row, (list, tuple, np.ndarray)) for row in prompt_ids
    ):
        lengths = sorted({len(row) for row in prompt_ids})
        if len(lengths) > 1:
            raise ValueError(
                "`prompt_ids` must be rectangular: every prompt of a batch "
                "the same length (generate ragged prompts one at a time, "
                f"or left-trim them). Received: prompt_ids with rows of "
                f"lengths {lengths}"
            )
    return np.asarray(prompt_ids)
