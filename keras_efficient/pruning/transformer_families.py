"""What width removal knows of each Transformer family (private).

A `Family` names the config fields of one backbone class (heads, key /
value heads, head size, feed-forward width) and how its weights are laid
out. `layout(model)` reads a model's weights by `variable.path` and
describes, for every axis of every weight, which *units* it holds:

- `"ffn"`: the feed-forward neurons of one layer (the columns of the up
  and gate projections and the rows of the down projection),
- `"heads"`: the key / value groups of one layer's attention (one key /
  value head and the query heads that read it; a plain multi-head
  attention has groups of one query head),
- `"hidden"`: the channels of the residual stream, shared by every layer.

Each axis of a weight maps to `(axis, layer, parts, unit)`: the axis has
`parts` blocks (3 for a fused query-key-value kernel) of `n` units of
`unit` elements each. Nothing here imports keras-hub: its classes are
recognised by name in their method resolution order.
"""

import re

import keras

from keras_efficient._validation import fail
from keras_efficient.applications.transformer_lm import TransformerLM

AXES = ("ffn", "heads", "hidden")


class Family:
    """The config fields and weight layout of one Transformer class."""

    def __init__(
        self,
        heads: str,
        kv_heads: str | None = None,
        head_dim: str | None = None,
        ffn: str = "intermediate_dim",
        ffn_scale: int = 1,
        heads_first: bool = False,
        per_layer: bool = False,
    ):
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.ffn, self.ffn_scale = ffn, ffn_scale
        self.heads_first = heads_first  # query kernel (heads, hidden, dim)
        # Whether the config holds one `ffn` / `heads` width per layer.
        self.per_layer = per_layer


FAMILIES = {
    "GPT2Backbone": Family("num_heads"),
    "BertBackbone": Family("num_heads"),
    "LlamaBackbone": Family("num_query_heads", "num_key_value_heads"),
    "MistralBackbone": Family(
        "num_query_heads", "num_key_value_heads", head_dim="head_dim"
    ),
    "Qwen3Backbone": Family(
        "num_query_heads", "num_key_value_heads", head_dim="head_dim"
    ),
    "GemmaBackbone": Family(
        "num_query_heads",
        "num_key_value_heads",
        head_dim="head_dim",
        ffn_scale=2,  # Gemma's gate and up projections are half as wide
        heads_first=True,
    ),
    "TransformerLM": Family("num_heads", head_dim="head_dim", per_layer=True),
}
# TransformerLM options whose layers have no width-removal rule.
_LM_OPTIONS = {
    "altup": 1,
    "sequence_altup": 1,
    "laurel": None,
    "lookup": None,
    "moe": None,
}
_LAYER = re.compile(r"(?:^|/)(?:transformer_layer|decoder_block|block)_(\d+)/")
_FFN_IN = (
    "feedforward_intermediate_dense",
    "feedforward_gate_dense",
    "ffw_gating",
    "ffw_gating_2",
    "up",
)
_FFN_OUT = ("feedforward_output_dense", "ffw_linear", "down")
_HEAD_NORMS = ("query_dense_layernorm", "key_dense_layernorm")
_NORM_WEIGHTS = ("gamma", "beta", "scale")


def _hub_family(cls):
    for base in cls.__mro__:
        if base.__module__.startswith("keras_hub") and base.__name__ in (
            FAMILIES
        ):
            return base.__name__
    return None


def find_family(model: keras.Model) -> tuple[str, keras.Model] | None:
    """`(family name, backbone)` of a known Transformer, else `None`.

    The backbone is the model itself for a backbone or a `TransformerLM`,
    and `model.backbone` for a keras-hub task.
    """
    if isinstance(model, TransformerLM):
        return "TransformerLM", model
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, keras.Model) and _hub_family(type(model)) is None:
        name = _hub_family(type(backbone))
        if name is not None:
            return name, backbone
    name = _hub_family(type(model))
    return (name, model) if name is not None else None


def check_plain_lm(model: TransformerLM) -> None:
    """Refuse `TransformerLM` options that width removal cannot follow."""
    for option, plain in _LM_OPTIONS.items():
        value = getattr(model, option)
        if value != plain:
            fail(
                option,
                f"{plain!r} for Transformer width removal (the layers of "
                f"`{option}` have no rule to remove heads, neurons or "
                "hidden channels)",
                value,
            )


class Layout:
    """The units of every weight of one Transformer model."""

    def __init__(self, model: keras.Model):
        found = find_family(model)
        if found is None:
            fail(
                "model",
                "a keras-hub task or backbone of "
                f"{sorted(set(FAMILIES) - {'TransformerLM'})} or a "
                "`TransformerLM`",
                type(model).__name__,
            )
        self.family_name, self.backbone = found
        self.model = model
        self.family = FAMILIES[self.family_name]
        if isinstance(model, TransformerLM):
            check_plain_lm(model)
        config = self.backbone.get_config()
        self.config = config
        self.num_layers = int(config["num_layers"])
        heads = config[self.family.heads]
        if isinstance(heads, (list, tuple)):  # per layer: `head_dim` given
            heads = heads[0]
        heads = int(heads)
        kv = config[self.family.kv_heads] if self.family.kv_heads else heads
        self.num_groups = int(kv)
        self.group_size = heads // self.num_groups
        head_dim = (
            config.get(self.family.head_dim) if self.family.head_dim else None
        )
        self.derived_head_dim = (
            head_dim is None and self.family.head_dim is None
        )
        self.head_dim = int(head_dim or config["hidden_dim"] // heads)
        self.hidden_dim = int(config["hidden_dim"])
        self.entries = [(v, self._dims(v)) for v in model.weights]
        self.widths = self._widths()

    def _dims(self, variable):
        """`{axis index: (axis, layer, parts, unit)}` of one weight."""
        path = variable.path
        parts = path.split("/")
        sub, name = (parts[-2] if len(parts) > 1 else ""), parts[-1]
        match = _LAYER.search(path)
        hidden = ("hidden", None, 1, 1)
        if match is None:
            return self._global_dims(path, sub, name, hidden)
        i = int(match.group(1))
        kernel = name == "kernel"
        g = self.group_size
        if sub in ("query", "key", "value"):
            unit = g if sub == "query" else 1
            heads = ("heads", i, 1, unit)
            if not kernel:
                return {0: heads}
            if self.family.heads_first:
                return {0: heads, 1: hidden}
            return {0: hidden, 1: heads}
        if sub == "attention_output":
            return {0: ("heads", i, 1, g), 2: hidden} if kernel else {0: hidden}
        if sub == "qkv":  # TransformerLM: (d, 3 * heads * head_dim)
            return {0: hidden, 1: ("heads", i, 3, self.head_dim)}
        if sub == "output" and parts[-3] == "attention":
            return {0: ("heads", i, 1, self.head_dim), 1: hidden}
        if sub in _FFN_IN:
            ffn = ("ffn", i, 1, 1)
            return {0: hidden, 1: ffn} if kernel else {0: ffn}
        if sub in _FFN_OUT:
            return {0: ("ffn", i, 1, 1), 1: hidden} if kernel else {0: hidden}
        if sub in _HEAD_NORMS:
            return {}  # over the head size, which is kept
        if name in _NORM_WEIGHTS:
            return {0: hidden}
        return self._unknown(path)

    def _global_dims(self, path, sub, name, hidden):
        if name == "embeddings":  # token, position and segment tables
            return {1: hidden}
        if name == "reverse_embeddings":
            return {0: hidden}
        if name in _NORM_WEIGHTS:
            return {0: hidden}
        if sub == "pooled_dense":
            # BERT's pooler is `hidden_dim` wide too: it keeps the same
            # channels as the residual stream.
            return {0: hidden, 1: hidden} if name == "kernel" else {0: hidden}
        if sub == "logits":
            return {0: hidden} if name == "kernel" else {}
        return self._unknown(path)

    def _unknown(self, path):
        fail(
            "model",
            f"a {self.family_name} whose weights width removal knows (it "
            f"has no rule for the weight {path!r})",
            type(self.model).__name__,
        )

    def _widths(self):
        """Units per axis: `{"ffn": [n per layer], "heads": [...], ...}`."""
        widths = {"ffn": [0] * self.num_layers, "heads": [0] * self.num_layers}
        widths["hidden"] = self.hidden_dim
        for variable, dims in self.entries:
            for index, (axis, layer, parts, unit) in dims.items():
                n = variable.shape[index] // (parts * unit)
                if layer is not None:
                    widths[axis][layer] = n
        return widths


def _field(count, scale):
    """A config width: one int, or a list of one per layer."""
    if isinstance(count, (list, tuple)):
        return [int(n) * scale for n in count]
    return int(count) * scale


def rebuild(layout: Layout, counts: dict) -> keras.Model:
    """A new model of the same class with the widths `counts`.

    `counts` maps `"ffn"` / `"heads"` (key / value groups) to the new width
    of every layer (an int) or, on a class with per-layer widths
    (`Family.per_layer`), of each layer (a list), and `"hidden"` to the
    new hidden width.
    """
    family = layout.family
    backbone_config = dict(layout.config)
    backbone_config[family.ffn] = _field(counts["ffn"], family.ffn_scale)
    backbone_config[family.heads] = _field(counts["heads"], layout.group_size)
    if family.kv_heads:
        backbone_config[family.kv_heads] = counts["heads"]
    if family.head_dim:
        backbone_config[family.head_dim] = layout.head_dim
    backbone_config["hidden_dim"] = counts["hidden"]
    model = layout.model
    if layout.backbone is model:
        return type(model).from_config(backbone_config)
    config = model.get_config()
    config["backbone"] = type(layout.backbone).from_config(backbone_config)
    return type(model).from_config(config)
