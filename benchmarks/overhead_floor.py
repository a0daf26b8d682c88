"""The overhead benchmark's floor: the step-time ratio a method's shapes
allow, from its FLOPs and bytes next to the baseline step's, and the
configuration (batch, rank, heads) of each family at a width.

The floor model (all counts per train step, float32, F = 4 bytes):

- base FLOPs = 6 x multiply-accumulates of the matmuls / convolutions x
  examples (forward 2 flops per MAC, backward twice the forward), plus the
  attention's QK^T and AV at full length S (dense attention computes the
  masked half too). Elementwise work (norms, activations) is left out,
  which makes the base smaller and the floor higher (conservative).
- base bytes = F x (4 x activation elements + 6 x parameters): every
  activation tensor (conv/BN outputs, residual sums; in the Transformer
  17d + 2HS elements a token a layer: norms, q/k/v, scores and probs,
  attention output, projections, FFN hidden before and after the
  activation, residual sums) is written and read once forward, read once
  backward and its gradient written once; every weight is read forward and
  backward, its gradient written, and SGD reads both and writes the weight.
- LAuReL RW on a residual of E elements: forward `alpha f + beta x` is 3
  flops an element instead of the plain add's 1 (+2), backward scales two
  gradients (+2) and reduces `sum(g f)`, `sum(g x)` (+4): 8E flops; the
  reductions read x and f(x) once more: 2E F bytes.
- LAuReL LR (rank r, width c, N positions, E = N c): `B(A x)` is 4 N c r
  flops forward, x3 for the step, plus the add (x3): 12 N c r + 3E flops;
  one more read of x forward, and backward a read of x and of the
  gradient for dA, dB plus the extra dx write: 3E + 4 N r elements.
- AltUp K (T tokens, L layers): predict `sum_j p_ij x_j` is 2K^2 d flops
  a token a layer, correct `xhat_i + g_i (y - xhat_a)` 3K d, x3 for the
  step; the (K-1) extra blocks of the residual stream are read and written
  once forward and twice backward: 6 (K-1) d elements a token a layer, plus
  the K-wide embedding and the readout (3 K d a token). Non-recycled AltUp
  also trains a K-times wider embedding table (its gradient is a scatter
  of T K d elements).
- SLaM: log-space mixture and the exactly-k top-k mask, taken as 30 flops
  per logit (B x C) and 6 extra passes over B x C floats (teacher
  probabilities, mask, mixture forward and backward); debiased: the
  margin and the isotonic interpolation of alpha, 2C + 40 flops an example,
  and one extra pass over B x C plus B weights. These constants are
  assumptions (the loss cost is small next to the MLP's matmuls).

floor = 1 + max(extra_flops / base_flops, extra_bytes / base_bytes), the
ratio the step would have if it were bound by whichever resource the method
loads most; 1 + min(...) is the strict lower bound and is reported too.
"""

F = 4  # bytes per float32
ACT_PASSES = 4
WEIGHT_PASSES = 6
STEP_FLOPS = 2e9  # conv and loss batches: one step costs about this much
RESNET_INPUT = 8
SEQ, LAYERS, VOCAB, HEAD_SIZE = 64, 2, 256, 32
TRANSFORMER_BATCH = 16  # sequences of SEQ tokens
MLP_IN, CLASSES, LOSS_BATCH = 40, 10, 256


def floor_ratio(base_flops, base_bytes, extra_flops, extra_bytes):
    """The floor model's figures for one method (see the module docstring)."""
    flop_frac = extra_flops / base_flops
    byte_frac = extra_bytes / base_bytes
    return {
        "base_flops": base_flops,
        "base_bytes": base_bytes,
        "extra_flops": extra_flops,
        "extra_bytes": extra_bytes,
        "flop_fraction": flop_frac,
        "byte_fraction": byte_frac,
        "floor": 1.0 + max(flop_frac, byte_frac),
        "strict_floor": 1.0 + min(flop_frac, byte_frac),
    }


def resnet_layout(d, size=RESNET_INPUT):
    """ResNet20 at width_multiplier d/64: the convolutions as
    `(cin, cout, kernel, pixels)` and the residual blocks as
    `(channels, pixels)`, per example."""
    widths = [max(1, round(f * d / 64)) for f in (16, 32, 64)]
    convs, blocks = [(3, widths[0], 3, size * size)], []
    cin, side = widths[0], size
    for stage, c in enumerate(widths):
        for b in range(3):
            stride = 2 if stage > 0 and b == 0 else 1
            side = -(-side // stride)
            hw = side * side
            convs += [(cin, c, 3, hw), (c, c, 3, hw)]
            if stride > 1 or cin != c:
                convs.append((cin, c, 1, hw))
            blocks.append((c, hw))
            cin = c
    return convs, blocks, widths[-1]


def resnet_config(d, quick=False):
    convs, blocks, last = resnet_layout(d)
    macs = sum(k * k * a * b * hw for a, b, k, hw in convs) + last * CLASSES
    batch = int(min(256, max(4, STEP_FLOPS / (6 * macs))))
    return {
        "width": d,
        "batch": 16 if quick else batch,
        "rank": max(1, d // 32),
    }


def resnet_floor(method, cfg):
    convs, blocks, last = resnet_layout(cfg["width"])
    b, r = cfg["batch"], cfg["rank"]
    macs = sum(k * k * a * c * hw for a, c, k, hw in convs) + last * CLASSES
    params = sum(k * k * a * c for a, c, k, _ in convs) + last * CLASSES
    acts = sum(2 * c * hw for _, c, _, hw in convs)
    acts += sum(2 * c * hw for c, hw in blocks)
    base_flops = 6.0 * macs * b
    base_bytes = F * (ACT_PASSES * acts * b + WEIGHT_PASSES * params)
    ef = eb = 0.0
    for c, hw in blocks:
        e, n, rank = b * c * hw, b * hw, min(r, c)
        if method in ("rw", "rw+lr"):
            ef, eb = ef + 8 * e, eb + F * 2 * e
        if method == "rw+lr":
            ef += 12 * n * c * rank + 3 * e
            eb += F * (3 * e + 4 * n * rank + WEIGHT_PASSES * 2 * c * rank)
    return floor_ratio(base_flops, base_bytes, ef, eb)


def transformer_config(d, quick=False):
    # Every width runs the same 1,024 tokens a step (issue 30's setting),
    # so the widths differ in width alone. A batch sized to STEP_FLOPS
    # would shrink to 2 sequences at d = 512, where a step is matmul time
    # and a method's extra kernels cost more than its FLOPs and bytes
    # (docs/methods/laurel.md, "The overhead benchmark's step at d = 512").
    seq = 32 if quick else SEQ
    return {
        "width": d,
        "seq": seq,
        "batch": 8 if quick else TRANSFORMER_BATCH,
        "heads": max(1, d // HEAD_SIZE),
        "rank": max(1, d // 8),
    }


def transformer_floor(method, cfg):
    d, s, h = cfg["width"], cfg["seq"], cfg["heads"]
    t, r, L = cfg["batch"] * s, cfg["rank"], LAYERS
    macs = L * (12 * d * d + 2 * s * d) + VOCAB * d
    params = L * 12 * d * d + 2 * VOCAB * d
    acts = L * (17 * d + 2 * h * s) + 2 * VOCAB + d
    base_flops = 6.0 * macs * t
    base_bytes = F * (ACT_PASSES * acts * t + WEIGHT_PASSES * params)
    e, n_res = t * d, 2 * L  # two residuals a layer
    ef = eb = 0.0
    if method in ("rw", "rw+lr"):
        ef, eb = 8 * e * n_res, F * 2 * e * n_res
    if method == "rw+lr":
        ef += n_res * (12 * t * d * r + 3 * e)
        eb += F * n_res * (3 * e + 4 * t * r + WEIGHT_PASSES * 2 * d * r)
    if method in ("altup2", "recycled2"):
        k = 2
        ef = 3 * L * t * (2 * k * k * d + 3 * k * d) + 3 * t * k * d
        eb = F * (L * t * 6 * (k - 1) * d + 3 * t * k * d)
        if method == "altup2":  # K-wide table: params and a wider scatter
            eb += F * (WEIGHT_PASSES * (k - 1) * VOCAB * d + t * (k - 1) * d)
    return floor_ratio(base_flops, base_bytes, ef, eb)


def loss_config(d, quick=False):
    return {"width": d, "batch": 64 if quick else LOSS_BATCH}


def loss_floor(method, cfg):
    d, b, c = cfg["width"], cfg["batch"], CLASSES
    params = MLP_IN * d + d * d + d * c
    base_flops = 6.0 * params * b
    base_bytes = F * (ACT_PASSES * b * (4 * d + 2 * c) + WEIGHT_PASSES * params)
    ef = eb = 0.0
    if method == "slam":
        ef, eb = 30.0 * b * c, F * 6 * b * c
    if method == "debiased":
        ef, eb = (2 * c + 40.0) * b, F * (b * c + b)
    return floor_ratio(base_flops, base_bytes, ef, eb)


def checks_floor(method, cfg):
    """The token-id range check of `TransformerLM`: two compares, an
    `and`, a reduction and min / max over the B x T ids (5 flops an id),
    the ids read once (int32); its error branch is never taken."""
    t = cfg["batch"] * cfg["seq"]
    plain = transformer_floor("plain", cfg)
    return floor_ratio(plain["base_flops"], plain["base_bytes"], 5 * t, F * t)


CONFIGS = {
    "resnet": (resnet_config, resnet_floor),
    "transformer": (transformer_config, transformer_floor),
    "loss": (loss_config, loss_floor),
    "checks": (transformer_config, checks_floor),
}
