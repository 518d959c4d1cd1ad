import numpy as np

from zoo.audio.whisper.whisper_alignment import median_filter, negative_dtw


def loop_dtw(x):
    """The textbook O(n m) recurrence, cell by cell (CTranslate2's order and ties)."""
    n, m = x.shape
    cost = np.full((n + 1, m + 1), np.inf, "float32")
    trace = np.full((n + 1, m + 1), -1)
    cost[0, 0] = 0
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            cost[i, j] = np.float32(-x[i - 1, j - 1]) + c
            trace[i, j] = t
    trace[0, :], trace[:, 0] = 2, 1
    i, j, path = n, m, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        i, j = (i - 1, j - 1) if t == 0 else (i - 1, j) if t == 1 else (i, j - 1)
    return np.array(path[::-1])


def test_vectorised_dtw_equals_the_cell_by_cell_recurrence():
    for seed, shape in enumerate([(5, 40), (12, 90), (1, 7), (9, 9)]):
        x = np.random.default_rng(seed).normal(size=shape).astype("float32")
        tokens, frames = negative_dtw(x)
        expected = loop_dtw(x)
        np.testing.assert_array_equal(tokens, expected[:, 0])
        np.testing.assert_array_equal(frames, expected[:, 1])
        assert tokens[-1] == shape[0] - 1 and frames[-1] == shape[1] - 1


def test_median_filter_reflects_edges():
    x = np.array([[5.0, 1.0, 9.0, 3.0, 7.0]])
    # width 3, reflected: [1, 5, 1, 9, 3, 7, 3] -> medians 1, 5, 3, 7, 3
    np.testing.assert_array_equal(median_filter(x, 3), [[1.0, 5.0, 3.0, 7.0, 3.0]])
