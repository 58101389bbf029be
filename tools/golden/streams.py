"""Our random streams (Sources/Tensors/Random.swift: xoshiro256** seeded through SplitMix64, sub-streams keyed by
integers), so a twin can draw what our method draws where the official code draws at random (Avatar's dropout)."""
import numpy as np

M = (1 << 64) - 1


def _splitmix(state):
    state = (state + 0x9E3779B97F4A7C15) & M
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return state, z ^ (z >> 31)


class Generator:
    def __init__(self, seed, stream=None):
        if stream is not None:
            h = seed ^ 0x6A09E667F3BCC909
            for v in stream:
                h = Generator((h ^ ((v * 0x9E3779B97F4A7C15) & M)) & M).next()
            seed = h
        s = seed & M
        words = []
        for _ in range(4):
            s, z = _splitmix(s)
            words.append(z)
        self.s = words

    def next(self):
        s0, s1, s2, s3 = self.s
        m = (s1 * 5) & M
        result = ((((m << 7) | (m >> 57)) & M) * 9) & M
        t = (s1 << 17) & M
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = ((s3 << 45) | (s3 >> 19)) & M
        self.s = [s0, s1, s2, s3]
        return result

    def uniform(self):
        """Float in [0, 1), 24 bits (exact in float32)."""
        return np.float32((self.next() >> 40) * (1.0 / 16777216.0))


def keyed_mask(shape_nhwc, items, seed, tag, step, k, p, keep):
    """Sources/Distillation/Avatar.swift keyedMask: sample n's values from the stream (seed, tag, step, items[n], k),
    0 with probability p, else `keep`, in NHWC order."""
    n = shape_nhwc[0]
    per = int(np.prod(shape_nhwc[1:]))
    out = np.empty((n, per), dtype=np.float32)
    for i, item in enumerate(items):
        g = Generator(seed, [tag, step, item, k])
        out[i] = [0.0 if g.uniform() < np.float32(p) else keep for _ in range(per)]
    return out.reshape(shape_nhwc)


def epoch_order(count, seed, epoch):
    """Sources/Datasets/Sampler.swift EpochSampler.order: a Fisher–Yates shuffle from the stream (seed, "epoc", epoch)."""
    order = list(range(count))
    g = Generator(seed, [0x65706F63, epoch])
    for i in range(count - 1, 0, -1):
        j = g.next() % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def class_negatives(labels, item, k, gen):
    """Sources/Distillation/Contrast.swift ClassNegatives.draw: k positions of other classes than item's, without
    replacement (k at most their number): positions sorted by class, a draw r < pool mapped around the own block."""
    order = sorted(range(len(labels)), key=lambda i: (labels[i], i))
    y = labels[item]
    start, own = order.index(next(i for i in order if labels[i] == y)), labels.count(y)
    pool, seen, out = len(labels) - own, set(), []
    while len(seen) < k:
        r = gen.next() % pool
        cand = order[r if r < start else r + own]
        if cand not in seen:
            seen.add(cand); out.append(cand)
    return out
