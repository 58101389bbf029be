"""Deterministic weights both sides draw without storing them: the golden files' initial state.

A tensor named NAME with n values takes u_i = splitmix64(fnv1a64(NAME) + (i + 1)·0x9E3779B97F4A7C15) >> 40, / 2^24
(24-bit uniforms in [0, 1), exact in float32), and a value by its role, computed in float64 and rounded to float32:
  rank ≥ 2 (convolution, linear):  (2u − 1)·sqrt(6 / fan_in),  fan_in = the product of all but the first dimension
  rank 1 ending in "weight":       0.75 + 0.5u          rank 1 ending in "bias": 0.2·(u − 0.5)
  "running_mean": 0.2·(u − 0.5)    "running_var": 0.5 + u    "num_batches_tracked": 0
  ending in ".z" (CRD's normalisation constants, set at the first step): −1, "not yet set"
Tests/TestSupport/GoldenWeights.swift is the same rule in Swift.
"""
import numpy as np

MASK = (1 << 64) - 1


def fnv1a64(name: str) -> int:
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & MASK
    return h


def uniforms(name: str, n: int) -> np.ndarray:
    key = np.uint64(fnv1a64(name))
    with np.errstate(over="ignore"):
        z = key + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def value(name: str, shape) -> np.ndarray:
    n = int(np.prod(shape)) if len(shape) else 1
    if name.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    if name.endswith(".z"):
        return np.full(shape, -1, dtype=np.float32)
    u = uniforms(name, n)
    if name.endswith("running_mean"):
        v = 0.2 * (u - 0.5)
    elif name.endswith("running_var"):
        v = 0.5 + u
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = (2 * u - 1) * np.sqrt(6.0 / fan_in)
    elif name.endswith("weight"):
        v = 0.75 + 0.5 * u
    else:
        v = 0.2 * (u - 0.5)
    return v.astype(np.float32).reshape(shape)


def fill(module, prefix: str = ""):
    """Sets every parameter and buffer of a torch module from the rule, under prefix + its state-dict name."""
    import torch
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            t.copy_(torch.from_numpy(value(prefix + name, tuple(t.shape))))
