"""`uniform_noise` stays inside (0, 1) for every bit pattern, so the Gumbel
trick never gets an infinite value (issue 19: with 24 random bits the
largest draw rounded to 1.0 in float32, once in 2**24 draws, and a token
the sampler had filtered out could win)."""

import numpy as np
from keras import ops

from zoo.samplers import samplers


def test_extreme_bit_patterns_stay_inside_the_open_interval(monkeypatch):
    for pattern in (-1, 0, 0x7FFFFFFF):  # all ones, all zeros, largest positive
        monkeypatch.setattr(samplers, "_mix", lambda x, p=pattern: ops.full_like(x, p))
        u = ops.convert_to_numpy(samplers.uniform_noise(0, 0, (2, 8)))
        assert u.dtype == np.float32
        assert (u > 0).all() and (u < 1).all(), (pattern, u.min(), u.max())
        assert np.isfinite(-np.log(-np.log(u))).all()


def test_noise_is_uniform_and_fixed_by_seed_and_step():
    a = ops.convert_to_numpy(samplers.uniform_noise(3, 5, (4, 4096)))
    assert np.array_equal(a, ops.convert_to_numpy(samplers.uniform_noise(3, 5, (4, 4096))))
    assert not np.array_equal(a, ops.convert_to_numpy(samplers.uniform_noise(3, 6, (4, 4096))))
    counts, _ = np.histogram(a, bins=8, range=(0, 1))
    assert (np.abs(counts - a.size / 8) < 5 * np.sqrt(a.size / 8)).all(), counts
