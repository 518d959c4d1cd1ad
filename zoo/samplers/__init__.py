"""Samplers for generation: greedy, random, top-k, top-p (with temperature).

Example:

>>> import numpy as np
>>> from zoo.samplers import GreedySampler, TopKSampler
>>> logits = np.array([[0.1, 3.0, 0.2]], "float32")
>>> int(GreedySampler()(logits, seed=0, step=0)[0])
1
>>> int(TopKSampler(k=1)(logits, seed=0, step=0)[0])
1
"""

from zoo.samplers.samplers import (
    BeamSampler,
    CategoricalSampler,
    GreedySampler,
    RandomSampler,
    Sampler,
    TopKSampler,
    TopPSampler,
    beam_candidates,
    get,
    uniform_noise,
)

__all__ = ["BeamSampler", "CategoricalSampler", "GreedySampler", "RandomSampler", "Sampler",
           "TopKSampler", "TopPSampler", "beam_candidates", "get", "uniform_noise"]
