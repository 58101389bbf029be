#!/usr/bin/env python3
"""Writes the golden reference files the Swift tests compare against (Tests/Golden/*.safetensors), once, by hand:

    python3 -m venv /tmp/golden && /tmp/golden/bin/pip install -r tools/golden/requirements.txt
    /tmp/golden/bin/python tools/golden/generate.py            # every case
    /tmp/golden/bin/python tools/golden/generate.py model-vgg8 # cases whose name starts with one of these

Every case starts from weights drawn by golden_weights.py (the same rule as Tests/TestSupport/GoldenWeights.swift,
so no weights are stored) and runs its PyTorch twin (twins/, each naming the official file it follows) twice: in
float64, whose results are stored, and in float32, whose distance from them is stored as `noise_<name>` beside
each result: the Swift tests allow a stated multiple of it (float32 against float64 summation), never a loosened
constant. Never run by CI: the tests read the committed files without PyTorch.
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_weights  # noqa: E402
from twins import models, methods  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "Golden")


def nhwc(x):
    return x.permute(0, 2, 3, 1).contiguous()


def write(name, tensors, metadata):
    """Stores float64 results as float32 (the Swift side computes in float32), with their noise."""
    os.makedirs(OUT, exist_ok=True)
    arrays = {k: np.array(v.detach().cpu().numpy() if torch.is_tensor(v) else v, dtype=np.float32, order="C")
              for k, v in tensors.items()}
    save_file(arrays, os.path.join(OUT, name + ".safetensors"), metadata={k: str(v) for k, v in metadata.items()})
    print(f"{name}: {len(arrays)} tensors")


def twice(run):
    """run(dtype) -> dict of tensors; returns the float64 results and, per entry, max |float32 − float64|."""
    ref = run(torch.float64)
    low = run(torch.float32)
    noise = {k: float((ref[k] - low[k].double()).abs().max()) for k in ref}
    return ref, noise


def golden_input(shape, name="input"):
    """A batch [N, C, H, W] from the weight rule's uniforms: (u − 0.5)·4."""
    n = int(np.prod(shape))
    return torch.from_numpy(((golden_weights.uniforms(name, n) - 0.5) * 4).astype(np.float32).reshape(shape))


MODEL_CASES = {  # name: (model, twin's official file)
    "model-resnet8": ("resnet8", "megvii-research/mdistiller@a08d46f mdistiller/models/cifar/resnet.py"),
    "model-resnet20b": ("resnet20b", "Lan1991Xu/ONE_NeurIPS2018@54afde3 models/cifar/resnet.py (Bottleneck)"),
    "model-wrn16_2": ("wrn16_2", "megvii-research/mdistiller@a08d46f mdistiller/models/cifar/wrn.py"),
    "model-vgg8": ("vgg8", "megvii-research/mdistiller@a08d46f mdistiller/models/cifar/vgg.py"),
    "model-mobilenetv2": ("mobilenetv2", "megvii-research/mdistiller@a08d46f mdistiller/models/cifar/mobilenetv2.py"),
    "model-shufflenetv1": ("shufflenetv1", "HobbitLong/RepDistiller@b84f547 models/ShuffleNetv1.py"),
    "model-shufflenetv2": ("shufflenetv2", "HobbitLong/RepDistiller@b84f547 models/ShuffleNetv2.py"),
}


def model_case(case, name, official, classes=10):
    """Logits in evaluation and training mode, the pooled feature, each tap's per-channel mean (training mode)."""
    x32 = golden_input((4, 3, 32, 32))

    def run(dtype):
        torch.manual_seed(0)
        m = models.build(name, classes).to(dtype)
        golden_weights.fill(m)
        x = x32.to(dtype)
        out = {}
        m.eval()
        with torch.no_grad():
            out["logits_eval"] = m(x)[0]
        m.train()
        with torch.no_grad():
            logits, taps, pooled = m(x)
        out["logits_train"] = logits
        out["pooled_train"] = pooled
        for k, t in enumerate(taps):
            out[f"tap{k}_mean"] = t.mean(dim=(0, 2, 3))
        # The running statistics one training forward leaves (momentum 0.1), summed over every batch norm.
        out["running_sums"] = torch.stack([sum(b.running_mean.sum() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)),
                                           sum(b.running_var.sum() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))])
        return out, m

    ref, m = run(torch.float64)
    low, _ = run(torch.float32)
    tensors = {"input": nhwc(x32)}
    metadata = {"model": name, "classes": classes, "official": official,
                "parameters": sum(p.numel() for p in m.parameters()),
                "state": json.dumps({k: list(v.shape) for k, v in m.state_dict().items()})}
    for k, v in ref.items():
        tensors[k] = v
        metadata["noise_" + k] = float((v - low[k].double()).abs().max())
    write(case, tensors, metadata)


def main(prefixes):
    def wanted(case):
        return not prefixes or any(case.startswith(p) for p in prefixes)
    for case, (name, official) in MODEL_CASES.items():
        if wanted(case):
            model_case(case, name, official)
    for case, spec in methods.CASES.items():
        if wanted(case):
            tensors, metadata = methods.run_case(case, spec, twice)
            write(case, tensors, metadata)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])
