import numpy as np
import pytest

from keras_efficient.distillation.active import dependent_rounding
from keras_efficient.distillation.active.rounding import as_rng
from keras_efficient.distillation.active.rounding import check_num_points


def test_exactly_b_distinct_every_draw():
    rng = np.random.default_rng(0)
    p = rng.random(40)
    p = p / p.sum() * 7
    p = np.minimum(p, 1)
    p = p * 7 / p.sum()
    p = np.clip(p, 0, 1)
    p[:] = p / p.sum() * 7 if p.max() < 1 else p
    for _ in range(200):
        idx = dependent_rounding(p, rng)
        assert len(idx) == round(p.sum())
        assert len(np.unique(idx)) == len(idx)


def test_inclusion_frequencies_match_marginals():
    rng = np.random.default_rng(1)
    p = np.array([0.1, 0.9, 0.5, 0.5, 0.25, 0.75, 1.0, 0.0, 0.3, 0.7])
    trials = 4000
    counts = np.zeros(len(p))
    for _ in range(trials):
        idx = dependent_rounding(p, rng)
        assert len(idx) == 5
        counts[idx] += 1
    freq = counts / trials
    se = np.sqrt(p * (1 - p) / trials) + 1e-9
    assert np.all(np.abs(freq - p) <= 4 * se + 1e-12)
    assert freq[6] == 1.0 and freq[7] == 0.0


def test_integral_marginals_returned_as_is():
    p = np.array([0, 1, 1, 0, 1.0])
    for seed in range(5):
        np.testing.assert_array_equal(dependent_rounding(p, seed), [1, 2, 4])


def test_bad_marginals():
    with pytest.raises(ValueError, match="sum to an integer"):
        dependent_rounding([0.5, 0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dependent_rounding([1.5, -0.5])


@pytest.mark.parametrize("seed", [2, 3])
def test_inclusion_frequencies_with_fractional_carry(seed):
    # No two consecutive fractional entries sum to 1, so most pairings
    # leave one entry fractional and carry it into the next pairing.
    p = np.array(
        [0.3, 0.4, 0.6, 0.2, 0.5, 0.7, 0.35, 0.65, 0.15, 0.15, 1.0, 0.0]
        + [0.45, 0.8, 0.1, 0.35, 0.3]
    )
    b = 7
    assert p.sum() == pytest.approx(b)
    rng = np.random.default_rng(seed)
    trials = 6000
    counts = np.zeros(len(p))
    for _ in range(trials):
        idx = dependent_rounding(p, rng)
        assert len(idx) == b and len(np.unique(idx)) == b
        counts[idx] += 1
    freq = counts / trials
    se = np.sqrt(p * (1 - p) / trials) + 1e-9
    np.testing.assert_array_less(np.abs(freq - p), 4.5 * se + 1e-12)
    assert freq[10] == 1.0 and freq[11] == 0.0


def test_carry_keeps_the_still_fractional_entry():
    # 0.3 + 0.4: the pair resolves to (0.7, 0) or (0, 0.7); the 0.7 must be
    # carried into the pairing with 0.3, which then ends at one point.
    p = np.array([0.3, 0.4, 0.3])
    seen = set()
    for seed in range(200):
        idx = dependent_rounding(p, seed)
        assert len(idx) == 1
        seen.add(int(idx[0]))
    assert seen == {0, 1, 2}


def test_marginals_of_any_shape_and_one_sided_range_errors():
    idx = dependent_rounding(np.array([[0.0, 1.0], [1.0, 0.0]]), rng=0)
    np.testing.assert_array_equal(idx, [1, 2])
    # Only one side out of range: each alone is refused.
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dependent_rounding([1.2, 0.8, 0.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dependent_rounding([-0.2, 0.7, 0.5])
    # A sum within 1e-6 of an integer is accepted.
    assert len(dependent_rounding([0.5, 0.5 + 5e-7], rng=0)) == 1


def test_num_points_and_rng_checks():
    assert check_num_points(0, 5) == 0
    assert check_num_points(5, 5) == 5
    with pytest.raises(ValueError, match="`b`.*Received: b=-1"):
        check_num_points(-1, 5)
    with pytest.raises(ValueError, match="`b`.*at most.*5.*Received: b=6"):
        check_num_points(6, 5)
    with pytest.raises(ValueError, match="`rng`.*Received: rng=-1"):
        as_rng(-1)
    assert as_rng(0).random() == np.random.default_rng(0).random()
