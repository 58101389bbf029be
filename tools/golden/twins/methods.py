"""PyTorch twins of the methods' official losses, one optimisation step each (tools/golden/generate.py runs them).

A case is a config our trainer runs (YAML, with {DATA}, {OUT} and {TEACHER} for the Swift test to fill in) and a
twin: from the golden weights (names as our run's: peerP.<state-dict name>, a shared stem under peer 0's names,
peerP.module.<name>, method.<name>, teacher.<name>) on the golden batch, the loss terms our method reports and every
tensor after one step of the official optimiser. The batch is 8 images of 32×32 in CIFAR-100's binary format, whose
bytes are ⌊256·u⌋ of the weight rule's uniforms for the name "images" (NHWC order; not stored, the Swift test draws
them too), normalised as our loader does (uint8 · 1/(255·std) − mean/std in float32, our CIFAR-100 constants).
"""
import numpy as np
import torch
import torch.nn.functional as F

import golden_weights
import streams
from twins import models

N, CLASSES = 8, 100
MEAN, STD = [0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]  # Sources/Datasets/Catalog.swift, cifar100
LABELS = [(7 * i + 3) % CLASSES for i in range(N)]


def images_u8():
    return np.floor(golden_weights.uniforms("images", N * 32 * 32 * 3) * 256).astype(np.float32).reshape(N, 32, 32, 3)


def batch():
    """The normalised batch [N, 3, 32, 32] in float32, as Datasets/Augmentation.swift computes it."""
    u8 = images_u8()
    std, mean = np.array(STD, dtype=np.float32), np.array(MEAN, dtype=np.float32)
    scale = np.float32(1) / (np.float32(255) * std)
    shift = -mean / std
    x = u8 * scale + shift
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def config(models_, method, optimizer, extra=""):
    keys = "\n".join(f"  {k}: {v}" for k, v in method.items())
    opt = "\n".join(f"  {k}: {v}" for k, v in optimizer.items())
    return f"""seed: 0
epochs: 1
batch_size: {N}
output: {{OUT}}
tensorboard: false
threads: 1
dataset:
  name: cifar100
  path: {{DATA}}
  augmentation: none
models: [{", ".join(models_)}]
method:
{keys}
optimizer:
{opt}
schedule:
  name: multistep
  milestones: []
{extra}"""


SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": "false"}


# A small peer keeps the reference files small: resnet8 at a quarter of the stage widths (16 → 4, 8, 16 channels).
SMALL, SMALL_WIDTHS = "resnet8_w0.25", (16, 4, 8, 16)
HALF, HALF_WIDTHS = "resnet8_w0.5", (16, 8, 16, 32)


def model(name, prefix, dtype):
    widths = {SMALL: SMALL_WIDTHS, HALF: HALF_WIDTHS}.get(name)
    m = (models.ResNet(8, CLASSES, widths=widths) if widths else models.build(name, CLASSES)).to(dtype)
    golden_weights.fill(m, prefix)
    m.train()
    return m


def teacher(name, dtype):
    t = model(name, "teacher.", dtype)
    t.eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def kl_t(student, teacher_logits, T):
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), summed over classes, mean over the batch (mdistiller's kd_loss)."""
    return F.kl_div(F.log_softmax(student / T, 1), F.softmax(teacher_logits / T, 1), reduction="none").sum(1).mean() * T * T


def state(named):
    """{golden name: tensor} of (prefix, module) pairs, parameters and buffers."""
    out = {}
    for prefix, m in named:
        for k, v in m.state_dict().items():
            out[prefix + k] = v.detach().clone()
    return out


# ---- independent: CE per peer (no official code: the plain baseline), SGD. -------------------------------------
def independent(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    nets = [model(SMALL, f"peer{p}.", dtype) for p in range(2)]
    opt = torch.optim.SGD([p for n in nets for p in n.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    ces = [F.cross_entropy(n(x)[0], y) for n in nets]
    opt.zero_grad(); sum(ces).backward(); opt.step()
    return {"ce": sum(c.item() for c in ces)}, state([(f"peer{p}.", n) for p, n in enumerate(nets)])


# ---- kd: mdistiller@a08d46f mdistiller/distillers/KD.py (kd_loss; CE 0.1, KD 0.9, T 4). --------------------------
def kd(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    s, t = model(SMALL, "peer0.", dtype), teacher("resnet14", dtype)
    opt = torch.optim.SGD(s.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    z = s(x)[0]
    with torch.no_grad():
        zt = t(x)[0]
    ce, kl = F.cross_entropy(z, y), kl_t(z, zt, 4.0)
    opt.zero_grad(); (0.1 * ce + 0.9 * kl).backward(); opt.step()
    return {"ce": ce.item(), "kl": kl.item()}, state([("peer0.", s)])


# ---- dkd: mdistiller@a08d46f mdistiller/distillers/DKD.py (dkd_loss; CE 1, α 1, β 8, T 4; epoch 1 of warm-up 1). -
def dkd(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    s, t = model(SMALL, "peer0.", dtype), teacher("resnet14", dtype)
    opt = torch.optim.SGD(s.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    z = s(x)[0]
    with torch.no_grad():
        zt = t(x)[0]
    T, alpha, beta = 4.0, 1.0, 8.0
    gt = torch.zeros_like(z).scatter_(1, y.unsqueeze(1), 1).bool()
    ps, pt = F.softmax(z / T, 1), F.softmax(zt / T, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * ~gt).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * ~gt).sum(1)], 1)
    tckd = F.kl_div(torch.log(bs), bt, reduction="sum") * T * T / N
    nckd = F.kl_div(F.log_softmax(z / T - 1000.0 * gt, 1), F.softmax(zt / T - 1000.0 * gt, 1), reduction="sum") * T * T / N
    ce = F.cross_entropy(z, y)
    w = min(1 / 1, 1.0)
    opt.zero_grad(); (ce + w * (alpha * tckd + beta * nckd)).backward(); opt.step()
    return {"ce": ce.item(), "kl": 0.0, "tckd": w * alpha * tckd.item(), "nckd": w * beta * nckd.item()}, state([("peer0.", s)])


# ---- dml: the paper's objective (official code TensorFlow, YingZhangDUT/Deep-Mutual-Learning): ------------------
# CE_i + 1/(P−1)·Σ_{j≠i} T²·KL(p_j ‖ p_i), targets detached, updated together (ours: the TF code sums and updates
# the peers one after another).
def dml(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    nets = [model(n, f"peer{p}.", dtype) for p, n in enumerate([SMALL, HALF, SMALL])]
    opt = torch.optim.SGD([p for n in nets for p in n.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    zs = [n(x)[0] for n in nets]
    T, P = 3.0, len(nets)
    total, ce_sum, kl_sum = 0, 0.0, 0.0
    for i, z in enumerate(zs):
        ce = F.cross_entropy(z, y)
        kl = sum(kl_t(z, zs[j].detach(), T) for j in range(P) if j != i) / (P - 1)
        total = total + ce + kl
        ce_sum += ce.item(); kl_sum += kl.item()
    opt.zero_grad(); total.backward(); opt.step()
    return {"ce": ce_sum, "kl": kl_sum}, state([(f"peer{p}.", n) for p, n in enumerate(nets)])


# ---- oec: Devwalkar/BOC-KD@d80a5a8 utils/Losses.py Combined_Loss.student_forward, models/ResNet_cifar.py ---------
# (BaseNet = conv1·bn1·relu shared; student j's widths ⌊[16,32,64]·(N−j)/N⌋; z_T the mean of the students' logits;
# student 0's block maps detached), tools/train.py (Adam 1e-3, wd 1e-5; the adapters, nn.Conv2d(c_j, c_0, 1), join the
# optimiser after the first epoch: this step is epoch 0, so they stay). Names as ours: the base under peer 0's
# conv1/bn1, `downsample` for the official `shortcut`, `fc` for `linear`, adapters peerJ.module.stageB.
def oec(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    names = ["resnet8", "resnet8_w0.6666666666666666", "resnet8_w0.3333333333333333"]
    widths = [[16, 32, 64], [10, 21, 42], [5, 10, 21]]
    nets = [models.ResNet(8, CLASSES, widths=(16, *w)).to(dtype) for w in widths]
    for p, n in enumerate(nets):
        golden_weights.fill(n, f"peer{p}.")
        n.train()
    adapters = [None] + [torch.nn.ModuleList([torch.nn.Conv2d(widths[j][b], widths[0][b], 1).to(dtype) for b in range(3)]) for j in (1, 2)]
    for j in (1, 2):
        for b, conv in enumerate(adapters[j]):
            golden_weights.fill(conv, f"peer{j}.module.stage{b + 1}.")
    base = nets[0]  # the shared conv1·bn1 (peer 0's)
    params = list(base.conv1.parameters()) + list(base.bn1.parameters())
    for n in nets:
        params += [p for k, p in n.named_parameters() if not k.startswith(("conv1.", "bn1."))]
    opt = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-5)
    h = F.relu(base.bn1(base.conv1(x)))
    logits, maps = [], []
    for j, n in enumerate(nets):
        f1 = n.layer1(h); f2 = n.layer2(f1); f3 = n.layer3(f2)
        logits.append(n.fc(F.adaptive_avg_pool2d(f3, 1).flatten(1)))
        maps.append([f.detach() for f in (f1, f2, f3)] if j == 0 else [f1, f2, f3])
    zt = sum(logits) / 3
    ce = sum(F.cross_entropy(z, y) for z in logits)
    mse = sum(F.mse_loss(adapters[j][b](maps[j][b]), maps[0][b]) for b in range(3) for j in (1, 2))
    T = 2.0
    target = F.softmax(zt.detach() / T, 1)
    kl = sum(T * T * (target * (target.log() - F.log_softmax(z / T, 1))).sum(1).sum() / N for z in logits)
    opt.zero_grad(); (0.7 * ce + 0.15 * mse + 0.15 * kl).backward(); opt.step()
    out = state([(f"peer{p}.", n) for p, n in enumerate(nets)])
    for k in [k for k in out if not k.startswith("peer0.") and k.split(".", 1)[1].startswith(("conv1.", "bn1."))]:
        del out[k]  # the other students' unused copies of the base
    for j in (1, 2):
        for b, conv in enumerate(adapters[j]):
            out.update(state([(f"peer{j}.module.stage{b + 1}.", conv)]))
    return {"ce_students": 0.7 * ce.item(), "feature_mse": 0.15 * mse.item(), "kl": 0.15 * kl.item()}, out


# ---- fitnets: mdistiller@a08d46f mdistiller/distillers/FitNet.py and _common.py (ConvReg: conv with bias → BN → ReLU;
# hint layer 2, FEAT_WEIGHT 100, CE 1); the teacher a WRN, whose tap 2 is block2's raw output. -------------------
def fitnets(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    s, t = model(SMALL, "peer0.", dtype), teacher("wrn16_2", dtype)
    conv, bn = torch.nn.Conv2d(8, 64, (1, 1)).to(dtype), torch.nn.BatchNorm2d(64).to(dtype)
    golden_weights.fill(conv, "peer0.module.conv."); golden_weights.fill(bn, "peer0.module.bn.")
    opt = torch.optim.SGD(list(s.parameters()) + list(conv.parameters()) + list(bn.parameters()), lr=0.05, momentum=0.9, weight_decay=5e-4)
    z, taps, _ = s(x)
    with torch.no_grad():
        _, ttaps, _ = t(x)
    ce = F.cross_entropy(z, y)
    hint = 100 * F.mse_loss(F.relu(bn(conv(taps[2]))), ttaps[2])
    opt.zero_grad(); (ce + hint).backward(); opt.step()
    return {"ce": ce.item(), "kl": 0.0, "hint": hint.item()}, state([("peer0.", s), ("peer0.module.conv.", conv), ("peer0.module.bn.", bn)])


# ---- at: mdistiller@a08d46f mdistiller/distillers/AT.py (p 2, FEAT_WEIGHT 1000, CE 1, feats[1:]); a WRN teacher. -----
def at(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    s, t = model(SMALL, "peer0.", dtype), teacher("wrn16_2", dtype)
    opt = torch.optim.SGD(s.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    z, taps, _ = s(x)
    with torch.no_grad():
        _, ttaps, _ = t(x)

    def a(f):
        return F.normalize(f.pow(2).mean(1).reshape(f.size(0), -1))

    def stage(fs, ft):
        if fs.shape[2] > ft.shape[2]:
            fs = F.adaptive_avg_pool2d(fs, (ft.shape[2], ft.shape[2]))
        elif fs.shape[2] < ft.shape[2]:
            ft = F.adaptive_avg_pool2d(ft, (fs.shape[2], fs.shape[2]))
        return (a(fs) - a(ft)).pow(2).mean()

    ce = F.cross_entropy(z, y)
    att = 1000 * sum(stage(fs, ft) for fs, ft in zip(taps[1:], ttaps[1:]))
    opt.zero_grad(); (ce + att).backward(); opt.step()
    return {"ce": ce.item(), "kl": 0.0, "attention": att.item()}, state([("peer0.", s)])


# ---- one: Lan1991Xu/ONE_NeurIPS2018@54afde3 models/cifar/resnet.py ONE_ResNet (conv1..layer2 shared; gate
# control_v1 → bn_v1 (BatchNorm1d) → ReLU → softmax on the pooled layer2 output; layer3_i, classfier3_i per branch),
# cifar_one.py (Σ CE(z_i) + CE(z_e) + w·Σ KLLoss(z_i, z_e); SGD momentum 0.9, no Nesterov) and loss/kl_loss.py
# (T 3, target softmax(z_e/T) + 1e-7, detached). w = 1 (past the ramp-up). Names as ours: peerI.layer3 / peerI.fc
# for layer3_i / classfier3_i, the stem under peer 0's names, the gate method.control_v1 / method.bn_v1.
def one(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    nets = [model(SMALL, f"peer{p}.", dtype) for p in range(3)]
    fc, bnv = torch.nn.Linear(8, 3).to(dtype), torch.nn.BatchNorm1d(3).to(dtype)
    golden_weights.fill(fc, "method.control_v1."); golden_weights.fill(bnv, "method.bn_v1.")
    stem = nets[0]
    params = [p for k, p in stem.named_parameters()] + list(fc.parameters()) + list(bnv.parameters())
    for n in nets[1:]:
        params += list(n.layer3.parameters()) + list(n.fc.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    h = stem.layer2(stem.layer1(F.relu(stem.bn1(stem.conv1(x)))))
    g = F.softmax(F.relu(bnv(fc(F.adaptive_avg_pool2d(h, 1).flatten(1)))), dim=1)
    zs = [n.fc(F.adaptive_avg_pool2d(n.layer3(h), 1).flatten(1)) for n in nets]
    ze = sum(g[:, i:i + 1] * zs[i] for i in range(3))
    T = 3.0
    target = (F.softmax(ze / T, 1) + 1e-7).detach()
    kls = [T * T * (target * (target.log() - F.log_softmax(z / T, 1))).sum(1).sum() / N for z in zs]
    ces = [F.cross_entropy(z, y) for z in zs]
    ce_e = F.cross_entropy(ze, y)
    opt.zero_grad(); (sum(ces) + ce_e + sum(kls)).backward(); opt.step()
    out = state([("peer0.", stem)])
    for p, n in enumerate(nets[1:], start=1):
        out.update(state([(f"peer{p}.layer3.", n.layer3), (f"peer{p}.fc.", n.fc)]))
    out.update(state([("method.control_v1.", fc), ("method.bn_v1.", bnv)]))
    return {"ce": sum(c.item() for c in ces), "ce_ensemble": ce_e.item(), "kl": sum(k.item() for k in kls)}, out


# ---- ssld: PaddleClas ppcls/loss/dmlloss.py DMLLoss (softmax, T 1, eps 1e-12; the mean over elements × the
# class count), no ground-truth term; the teacher in evaluation mode (our choice: PaddleClas leaves it in training
# mode with frozen parameters; Sources/Distillation/SSLD.swift says so). -------------------------------------------
def ssld(dtype):
    x = batch().to(dtype)
    s, t = model(SMALL, "peer0.", dtype), teacher("resnet14", dtype)
    opt = torch.optim.SGD(s.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ps = F.softmax(s(x)[0], 1)
    with torch.no_grad():
        pt = F.softmax(t(x)[0], 1)
    eps, C = 1e-12, ps.shape[1]

    def kldiv(a, target):
        return target * torch.log((target + eps) / (a + eps)) * C

    loss = ((kldiv(ps, pt) + kldiv(pt, ps)) / 2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    return {"sym_kl": loss.item()}, state([("peer0.", s)])


# ---- okddip: DefangChen/OKDDip@c6a05de models/model_cifar/resnet_GL.py (conv1..layer2 shared; layer3_i and
# classifier3_i per branch; query_weight / key_weight Linear(64 → 64/8, no bias) on each peer's pooled feature,
# attention softmax over the peers, x_m = Σ_j a_ij z_j; the last branch the group leader), train_GL.py (Σ CE over
# the peers + CE(leader) + α·w·[Σ KL(x_m,i → z_i) + KL(mean of the peers → leader)], nothing detached; SGD
# Nesterov) and utils.py KL_Loss (T 3, target softmax + 1e-7, batchmean). w = 1, α = 1. Names as ours.
def okddip(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    nets = [model(SMALL, f"peer{p}.", dtype) for p in range(4)]
    q, k = torch.nn.Linear(16, 2, bias=False).to(dtype), torch.nn.Linear(16, 2, bias=False).to(dtype)
    golden_weights.fill(q, "method.query_weight."); golden_weights.fill(k, "method.key_weight.")
    stem = nets[0]
    params = list(stem.parameters()) + list(q.parameters()) + list(k.parameters())
    for n in nets[1:]:
        params += list(n.layer3.parameters()) + list(n.fc.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    h = stem.layer2(stem.layer1(F.relu(stem.bn1(stem.conv1(x)))))
    feats = [F.adaptive_avg_pool2d(n.layer3(h), 1).flatten(1) for n in nets]
    zs = [n.fc(f) for n, f in zip(nets, feats)]
    T = 3.0

    def kl(student, teacher_logits):
        target = F.softmax(teacher_logits / T, 1) + 1e-7
        return T * T * F.kl_div(F.log_softmax(student / T, 1), target, reduction="batchmean")

    pro = torch.stack(zs[:3], -1)                         # B × C × peers
    pq = torch.stack([q(f) for f in feats[:3]], 1)        # B × peers × 2
    pk = torch.stack([k(f) for f in feats[:3]], 1)
    att = F.softmax(torch.bmm(pq, pk.permute(0, 2, 1)), dim=-1)
    xm = torch.bmm(pro, att.permute(0, 2, 1))             # B × C × peers
    ces = [F.cross_entropy(z, y) for z in zs]
    kl_peers = sum(kl(zs[i], xm[:, :, i]) for i in range(3))
    kl_leader = kl(zs[3], pro.mean(2))
    opt.zero_grad(); (sum(ces) + 1.0 * (kl_peers + kl_leader)).backward(); opt.step()
    out = state([("peer0.", stem)])
    for p, n in enumerate(nets[1:], start=1):
        out.update(state([(f"peer{p}.layer3.", n.layer3), (f"peer{p}.fc.", n.fc)]))
    out.update(state([("method.query_weight.", q), ("method.key_weight.", k)]))
    return {"ce": sum(c.item() for c in ces), "kl_peers": kl_peers.item(), "kl_leader": kl_leader.item()}, out


# ---- css: PumpkinsLemon/CSS@7b5c928 resnet_css.py (a stem conv1..layer2; branch i: transform(x, i) zeroes its
# corner square of side ⌊H/4⌋, layer3_i, pool, classifier3_i to C·n joint logits) and train.py (CE_X = Σ_i CE(z_i,
# y·n + i)/n, KD_X = Σ_i kl_div(log_softmax(z_i^X/T), softmax(z_i^Y/T), batchmean)/n, L_X = CE_X + (CE_X/CE_Y)·T²·KD_X,
# nothing detached; two SGDs, momentum 0.9, no Nesterov, the same settings: one SGD here). The official networks
# are bottleneck ResNets; here the small basic one, as our CSS builds on any zoo model. Names as ours.
def css(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    n, T = 3, 3.0
    nets = []
    for p in range(2):
        bases = [models.ResNet(8, CLASSES, widths=SMALL_WIDTHS).to(dtype) for _ in range(n)]
        stem = bases[0]
        for k in ("conv1", "bn1", "layer1", "layer2"):
            golden_weights.fill(getattr(stem, k), f"peer{p}.{k}.")
        layers = [b.layer3 for b in bases]
        heads = [torch.nn.Linear(16, CLASSES * n).to(dtype) for _ in range(n)]
        for i in range(n):
            golden_weights.fill(layers[i], f"peer{p}.layer3_{i}."); golden_weights.fill(heads[i], f"peer{p}.classifier3_{i}.")
        nets.append((stem, layers, heads))
    params = []
    for stem, layers, heads in nets:
        params += [q for k in ("conv1", "bn1", "layer1", "layer2") for q in getattr(stem, k).parameters()]
        params += [q for m in layers + heads for q in m.parameters()]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)

    def forward(net):
        stem, layers, heads = net
        h = stem.layer2(stem.layer1(F.relu(stem.bn1(stem.conv1(x)))))
        H, W = h.shape[2], h.shape[3]
        L = H // 4
        outs = []
        for i in range(n):
            m = torch.ones(H, W, dtype=h.dtype)
            if i == 0: m[0:L, 0:L] = 0
            elif i == 1: m[H - L:, W - L:] = 0
            elif i == 2: m[H - L:, 0:L] = 0
            outs.append(heads[i](F.adaptive_avg_pool2d(layers[i](h * m), 1).flatten(1)))
        return outs

    za, zb = forward(nets[0]), forward(nets[1])
    ce = [sum(F.cross_entropy(z[i], y * n + i) / n for i in range(n)) for z in (za, zb)]
    kd_ab = sum(F.kl_div(F.log_softmax(za[i] / T, 1), F.softmax(zb[i] / T, 1), reduction="batchmean") for i in range(n)) / n
    kd_ba = sum(F.kl_div(F.log_softmax(zb[i] / T, 1), F.softmax(za[i] / T, 1), reduction="batchmean") for i in range(n)) / n
    loss = ce[0] + (ce[0] / ce[1]) * kd_ab * T * T + ce[1] + (ce[1] / ce[0]) * kd_ba * T * T
    opt.zero_grad(); loss.backward(); opt.step()
    out = {}
    for p, (stem, layers, heads) in enumerate(nets):
        for k in ("conv1", "bn1", "layer1", "layer2"):
            out.update(state([(f"peer{p}.{k}.", getattr(stem, k))]))
        for i in range(n):
            out.update(state([(f"peer{p}.layer3_{i}.", layers[i]), (f"peer{p}.classifier3_{i}.", heads[i])]))
    return {"ce": ce[0].item() + ce[1].item(), "kd": (kd_ab.item() + kd_ba.item()) * T * T}, out


# ---- pcl: the reproduction shaoeric/Peer-Collaborative-Learning-for-Online-Knowledge-Distillation@6afb473
# src/losses/loss_wrapper.py (CE(z_e) + Σ_i [CE(z_i) + w·KD(z_i, sg(z_e)) + w·PM(z_i, the others' mean-teacher
# logits)]), src/losses/kd_loss.py (KDLoss: T²·KL batchmean, T 3; PMLoss: the mean over the other peers, targets
# detached), src/controller.py (the mean model's logits from its own weights, before the step; then the EMA with
# decay min(1 − 1/(s + 1), 0.999), here 0). Ours by choice (Sources/Distillation/PCL.swift): one mean teacher per
# peer, each with its own copy of the stem, running in training mode on its peer's view; their stems start equal
# (peer 0's names). z_e = ensemble_fc(the concatenated pooled features). w = 1. Names as ours.
def pcl(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    P, T = 3, 3.0
    nets = [model(SMALL, f"peer{p}.", dtype) for p in range(P)]
    means = []
    for p in range(P):
        m = models.ResNet(8, CLASSES, widths=SMALL_WIDTHS).to(dtype)
        for k in ("conv1", "bn1", "layer1", "layer2"):
            golden_weights.fill(getattr(m, k), f"peer0.extra.{k}.")
        for k in ("layer3", "fc"):
            golden_weights.fill(getattr(m, k), f"peer{p}.extra.{k}.")
        m.train()
        means.append(m)
    efc = torch.nn.Linear(P * 16, CLASSES).to(dtype)
    golden_weights.fill(efc, "method.ensemble_fc.")
    stem = nets[0]
    params = list(stem.parameters()) + list(efc.parameters())
    for n in nets[1:]:
        params += list(n.layer3.parameters()) + list(n.fc.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    h = stem.layer2(stem.layer1(F.relu(stem.bn1(stem.conv1(x)))))
    feats = [F.adaptive_avg_pool2d(n.layer3(h), 1).flatten(1) for n in nets]
    zs = [n.fc(f) for n, f in zip(nets, feats)]
    ze = efc(torch.cat(feats, 1))
    with torch.no_grad():
        zm = [m(x)[0] for m in means]
    ce_e = F.cross_entropy(ze, y)
    ces, kle, klm = [], [], []
    for i in range(P):
        ces.append(F.cross_entropy(zs[i], y))
        kle.append(kl_t(zs[i], ze.detach(), T))
        klm.append(sum(kl_t(zs[i], zm[j], T) for j in range(P) if j != i) / (P - 1))
    opt.zero_grad(); (ce_e + sum(ces) + sum(kle) + sum(klm)).backward(); opt.step()
    with torch.no_grad():  # the EMA at decay 0: each mean teacher's weights become its peer's (the stem peer 0's)
        for p, m in enumerate(means):
            for k in ("conv1", "bn1", "layer1", "layer2"):
                for a, b in zip(getattr(m, k).parameters(), getattr(stem, k).parameters()):
                    a.copy_(b)
            for k in ("layer3", "fc"):
                for a, b in zip(getattr(m, k).parameters(), getattr(nets[p], k).parameters()):
                    a.copy_(b)
    out = state([("peer0.", stem), ("method.ensemble_fc.", efc)])
    for p, n in enumerate(nets[1:], start=1):
        out.update(state([(f"peer{p}.layer3.", n.layer3), (f"peer{p}.fc.", n.fc)]))
    for p, m in enumerate(means):
        out.update(state([(f"peer{p}.extra.layer3.", m.layer3), (f"peer{p}.extra.fc.", m.fc)]))
    out.update(state([(f"peer0.extra.{k}.", getattr(means[0], k)) for k in ("conv1", "bn1", "layer1", "layer2")]))
    return {"ce": sum(c.item() for c in ces), "ce_ensemble": ce_e.item(), "kl_ensemble": sum(k.item() for k in kle),
            "kl_mean_teachers": sum(k.item() for k in klm)}, out


# ---- okdhp: zhengli97/OKDHP@452c71e, its FAU ensemble on class logits (our adaptation: the official code is pose
# estimation). lib/models/hourglass_okd_share_less.py's FAU (conv 3/5/7 with bias → BN → ReLU on the shared feature,
# summed, pooled, Linear → hidden, one Linear → K per branch, softmax over the branches), lib/core/function_okd.py's
# loss (Σ_b [task(o_b) + kd·r·KLD(ens ‖ o_b)] + ens_w·task(ens), ens not detached), here task = CE and KLD the
# softmax KL at T = 1 (batchmean); kd 2, ens_w 1, r = 1. The optimiser: SGD (the official Adam is for heatmaps).
def okdhp(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    B, hidden = 2, 64
    nets = [model(SMALL, f"peer{p}.", dtype) for p in range(B)]
    convs = {k: torch.nn.Conv2d(8, 8, k, padding=k // 2).to(dtype) for k in (3, 5, 7)}
    bns = {k: torch.nn.BatchNorm2d(8).to(dtype) for k in (3, 5, 7)}
    fc = torch.nn.Linear(8, hidden).to(dtype)
    heads = [torch.nn.Linear(hidden, CLASSES).to(dtype) for _ in range(B)]
    for k in (3, 5, 7):
        golden_weights.fill(convs[k], f"method.fau.conv{k}."); golden_weights.fill(bns[k], f"method.fau.bn{k}.")
    golden_weights.fill(fc, "method.fau.fc.")
    for b in range(B):
        golden_weights.fill(heads[b], f"method.fau.branch{b}.")
    stem = nets[0]
    fau = [m for k in (3, 5, 7) for m in (convs[k], bns[k])] + [fc] + heads
    params = list(stem.parameters()) + [q for m in fau for q in m.parameters()]
    for n in nets[1:]:
        params += list(n.layer3.parameters()) + list(n.fc.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    h = stem.layer2(stem.layer1(F.relu(stem.bn1(stem.conv1(x)))))
    zs = [n.fc(F.adaptive_avg_pool2d(n.layer3(h), 1).flatten(1)) for n in nets]
    u = sum(F.relu(bns[k](convs[k](h))) for k in (3, 5, 7))
    v = fc(F.adaptive_avg_pool2d(u, 1).flatten(1))
    alpha = F.softmax(torch.stack([hd(v) for hd in heads], 0), dim=0)   # B × N × K
    ens = sum(alpha[b] * zs[b] for b in range(B))
    tasks = [F.cross_entropy(z, y) for z in zs]
    kls = [F.kl_div(F.log_softmax(z, 1), F.softmax(ens, 1), reduction="batchmean") for z in zs]
    task_e = F.cross_entropy(ens, y)
    opt.zero_grad(); (sum(tasks) + 2.0 * sum(kls) + 1.0 * task_e).backward(); opt.step()
    out = state([("peer0.", stem)])
    for p, n in enumerate(nets[1:], start=1):
        out.update(state([(f"peer{p}.layer3.", n.layer3), (f"peer{p}.fc.", n.fc)]))
    for k in (3, 5, 7):
        out.update(state([(f"method.fau.conv{k}.", convs[k]), (f"method.fau.bn{k}.", bns[k])]))
    out.update(state([("method.fau.fc.", fc)] + [(f"method.fau.branch{b}.", heads[b]) for b in range(B)]))
    return {"task": sum(t.item() for t in tasks), "kl": 2.0 * sum(k.item() for k in kls), "task_ensemble": task_e.item()}, out


# ---- ffl: Jangho-Kim/FFL-pytorch@546d478 our_network.py (FFL-S: conv1..layer2 shared, layer3_1/2 with their fc;
# Fusion_module: depthwise 3×3 over the concatenated maps (no bias) → BN → ReLU → 1×1 to C (no bias) → BN → ReLU →
# avgpool → fc2), train_FFL.py (CE(z_1) + CE(z_2) + CE(z_f) + w·[KL(z_f → z_1) + KL(z_f → z_2) + KL(mean → z_f)]; SGD
# Nesterov, the model at wd 1e-4, the fusion module its own at 1e-5) and utils.py KLLoss (T 3, target softmax + 1e-7,
# detached). w = 1. Names as ours: the fusion module's per-peer slices peerP.module.{dw,bn,pw} (its channels, and its
# columns of the 1×1), method.fusion_bn / method.fusion_fc.
def ffl(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    C, T = 16, 3.0
    nets = [model(SMALL, f"peer{p}.", dtype) for p in range(2)]

    def rule(name, shape):
        return torch.from_numpy(golden_weights.value(name, shape)).to(dtype)

    dw = torch.nn.Conv2d(2 * C, 2 * C, 3, padding=1, groups=2 * C, bias=False).to(dtype)
    bn1 = torch.nn.BatchNorm2d(2 * C).to(dtype)
    pw = torch.nn.Conv2d(2 * C, C, 1, bias=False).to(dtype)
    bn2, fc2 = torch.nn.BatchNorm2d(C).to(dtype), torch.nn.Linear(C, CLASSES).to(dtype)
    with torch.no_grad():
        dw.weight.copy_(torch.cat([rule(f"peer{p}.module.dw.weight", (C, 1, 3, 3)) for p in range(2)]))
        for k in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn1, k).copy_(torch.cat([rule(f"peer{p}.module.bn.{k}", (C,)) for p in range(2)]))
        pw.weight.copy_(torch.cat([rule(f"peer{p}.module.pw.weight", (C, C, 1, 1)) for p in range(2)], 1))
    golden_weights.fill(bn2, "method.fusion_bn."); golden_weights.fill(fc2, "method.fusion_fc.")
    stem = nets[0]
    model_params = list(stem.parameters()) + list(nets[1].layer3.parameters()) + list(nets[1].fc.parameters())
    fusion_params = list(dw.parameters()) + list(bn1.parameters()) + list(pw.parameters()) + list(bn2.parameters()) + list(fc2.parameters())
    opt = torch.optim.SGD(model_params, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    opt_fm = torch.optim.SGD(fusion_params, lr=0.1, momentum=0.9, weight_decay=1e-5, nesterov=True)
    h = stem.layer2(stem.layer1(F.relu(stem.bn1(stem.conv1(x)))))
    maps = [n.layer3(h) for n in nets]
    zs = [n.fc(F.adaptive_avg_pool2d(m, 1).flatten(1)) for n, m in zip(nets, maps)]
    f = F.relu(bn2(pw(F.relu(bn1(dw(torch.cat(maps, 1)))))))
    zf = fc2(F.adaptive_avg_pool2d(f, 1).flatten(1))

    def kl(pred, label):
        target = (F.softmax(label / T, 1) + 1e-7).detach()
        return T * T * (target * (target.log() - F.log_softmax(pred / T, 1))).sum(1).sum() / N

    ces = [F.cross_entropy(z, y) for z in zs]
    ce_f = F.cross_entropy(zf, y)
    kl_peers = [kl(z, zf) for z in zs]
    kl_fused = kl(zf, (zs[0] + zs[1]) / 2)
    opt.zero_grad(); opt_fm.zero_grad()
    (sum(ces) + ce_f + sum(kl_peers) + kl_fused).backward()
    opt.step(); opt_fm.step()
    out = state([("peer0.", stem), ("peer1.layer3.", nets[1].layer3), ("peer1.fc.", nets[1].fc),
                 ("method.fusion_bn.", bn2), ("method.fusion_fc.", fc2)])
    for p in range(2):
        rows = slice(p * C, (p + 1) * C)
        out[f"peer{p}.module.dw.weight"] = dw.weight.detach()[rows].clone()
        for k in ("weight", "bias", "running_mean", "running_var"):
            out[f"peer{p}.module.bn.{k}"] = getattr(bn1, k).detach()[rows].clone()
        out[f"peer{p}.module.bn.num_batches_tracked"] = bn1.num_batches_tracked.clone()
        out[f"peer{p}.module.pw.weight"] = pw.weight.detach()[:, rows].clone()
    return {"ce": sum(c.item() for c in ces), "ce_fused": ce_f.item(), "kl_fused_to_peers": sum(k.item() for k in kl_peers),
            "kl_ensemble_to_fused": kl_fused.item()}, out


# ---- avatar: Gumpest/AvatarKD@f8f8f35 mmrazor/models/losses/akd_cwd.py (one avatar F.dropout(F_t, 0.1); U =
# BatchNorm2d(affine=False) in training mode on the student only; the target the raw avatar: τ²/(N·C)·Σ softmax(A/τ)
# ·(log softmax(A/τ) − log softmax(U(S)/τ)), τ 1, weight 7.5) and its configs' align_module (a 1×1 convolution
# with bias, trained). Ours: on the final maps of a classifier, + CE. The dropout mask is our stream's (its draws
# replayed by streams.py: (seed 0, "avat", step 0, item, avatar 0)), so the twin drops what we drop.
def avatar(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    s, t = model(SMALL, "peer0.", dtype), teacher("resnet14", dtype)
    align = torch.nn.Conv2d(16, 64, 1).to(dtype)
    golden_weights.fill(align, "peer0.module.align.")
    opt = torch.optim.SGD(list(s.parameters()) + list(align.parameters()), lr=0.1, momentum=0.9, weight_decay=5e-4)
    z, taps, _ = s(x)
    with torch.no_grad():
        _, ttaps, _ = t(x)
    ft = ttaps[-1]                                            # N × 64 × 8 × 8
    keep = np.float32(1) / (np.float32(1) - np.float32(0.1))
    mask = streams.keyed_mask((N, 8, 8, 64), list(range(N)), 0, 0x61766174, 0, 0, 0.1, keep)
    a = ft * torch.from_numpy(mask.transpose(0, 3, 1, 2).copy()).to(dtype)
    u = F.batch_norm(align(taps[-1]), None, None, training=True, eps=1e-5)
    tau, n_, c_ = 1.0, N, 64
    pa = F.softmax(a.reshape(-1, 64) / tau, 1)
    cost = torch.sum(pa * F.log_softmax(a.reshape(-1, 64) / tau, 1) - pa * F.log_softmax(u.reshape(-1, 64) / tau, 1)) * tau ** 2
    cwd = 7.5 * cost / (c_ * n_)
    ce = F.cross_entropy(z, y)
    opt.zero_grad(); (ce + cwd).backward(); opt.step()
    return {"ce": ce.item(), "kl": 0.0, "avatar": cwd.item()}, state([("peer0.", s), ("peer0.module.align.", align)])


# ---- crd: megvii-research/mdistiller@a08d46f mdistiller/distillers/CRD.py (Embed: linear → L2 normalise, of the
# pooled features; ContrastMemory: scores exp(⟨M_v1[idx], v_t⟩/τ) and exp(⟨M_v2[idx], v_s⟩/τ), Z = mean·n_data fixed
# at the first step, banks updated by momentum; ContrastLoss: the NCE with P_n = 1/n_data, ε 1e-7; FEAT_WEIGHT 0.8,
# CE 1). The negatives: our stream's draws (seed 0, "crdn", epoch, item) of other classes, replayed by streams.py,
# where mdistiller's CIFAR100InstanceSample draws its own. K = 4 of the 7 other images here.
def crd(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    s, t = model(SMALL, "peer0.", dtype), teacher("resnet14", dtype)
    es, et = torch.nn.Linear(16, 128).to(dtype), torch.nn.Linear(64, 128).to(dtype)
    golden_weights.fill(es, "peer0.module.embed_s.linear."); golden_weights.fill(et, "peer0.module.embed_t.linear.")
    mem_s = torch.from_numpy(golden_weights.value("peer0.extra.memory_s.memory", (N, 128))).to(dtype)
    mem_t = torch.from_numpy(golden_weights.value("peer0.extra.memory_t.memory", (N, 128))).to(dtype)
    opt = torch.optim.SGD(list(s.parameters()) + list(es.parameters()) + list(et.parameters()), lr=0.05, momentum=0.9, weight_decay=5e-4)
    K, tau, n_data, mom = 4, 0.07, N, 0.5
    idx = [[item] + streams.class_negatives(LABELS, item, K, streams.Generator(0, [0x6372646E, 0, item])) for item in range(N)]
    idx = torch.tensor(idx)
    z, _, fs = s(x)
    with torch.no_grad():
        _, _, ft = t(x)
    vs, vt = F.normalize(es(fs), dim=1), F.normalize(et(ft), dim=1)
    out_s = torch.exp(torch.bmm(mem_t[idx], vs.unsqueeze(2)).squeeze(2) / tau)   # student embedding vs the teacher bank
    out_t = torch.exp(torch.bmm(mem_s[idx], vt.unsqueeze(2)).squeeze(2) / tau)
    z_s, z_t = (out_s.mean() * n_data).item(), (out_t.mean() * n_data).item()
    out_s, out_t = out_s / z_s, out_t / z_t

    def nce(p):
        c = K / n_data
        d1 = torch.log(p[:, 0] / (p[:, 0] + c + 1e-7))
        d0 = torch.log(torch.full_like(p[:, 1:], c) / (p[:, 1:] + c + 1e-7))
        return -(d1.sum() + d0.sum()) / N

    ce = F.cross_entropy(z, y)
    contrast = 0.8 * (nce(out_s) + nce(out_t))
    opt.zero_grad(); (ce + contrast).backward(); opt.step()
    with torch.no_grad():
        new_s = F.normalize(mem_s * mom + vs * (1 - mom), dim=1)
        new_t = F.normalize(mem_t * mom + vt * (1 - mom), dim=1)
    out = state([("peer0.", s), ("peer0.module.embed_s.linear.", es), ("peer0.module.embed_t.linear.", et)])
    out["peer0.extra.memory_s.memory"] = new_s
    out["peer0.extra.memory_t.memory"] = new_t
    out["peer0.extra.z"] = torch.tensor([z_s, z_t], dtype=dtype)
    return {"ce": ce.item(), "kl": 0.0, "contrast": contrast.item()}, out


# ---- mcl: winycg/MCL-OKD@c15a0fd models/mcl_okd_resnet.py (conv1·bn1·layer1 shared; layer2_i, layer3_i,
# classifier_i per branch), mcl/criterion.py (Embed: linear → L2 normalise; ContrastLoss, the NCE with Z = mean·n_data
# recomputed per term, detached), mcl/memory.py (banks, momentum 0.5), main_cifar_mcl_okd.py (Σ CE + T²·KL(sg(mean of
# all logits) → the last branch) + 0.025·Σ_{i≠j} ℓ_ij, T 3, τ 0.1; SGD Nesterov). The negatives: our stream's
# (seed 0, "negs", epoch, step, position in the sampler's batch order), replayed by streams.py. K = 4. Names as ours.
def mcl(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    P, K, tau, T = 3, 4, 0.1, 3.0
    nets = [model(SMALL, f"peer{p}.", dtype) for p in range(P)]
    heads = [torch.nn.Linear(16, 128).to(dtype) for _ in range(P)]
    for p in range(P):
        golden_weights.fill(heads[p], f"peer{p}.module.linear.")
    banks = [torch.from_numpy(golden_weights.value(f"peer{p}.extra.memory", (N, 128))).to(dtype) for p in range(P)]
    stem = nets[0]
    params = list(stem.parameters()) + [q for hd in heads for q in hd.parameters()]
    for n in nets[1:]:
        params += [q for m in (n.layer2, n.layer3, n.fc) for q in m.parameters()]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    order = streams.epoch_order(N, 0, 0)                      # the sampler's batch: position b holds item order[b]
    idx = torch.tensor([[order[b]] + streams.class_negatives(LABELS, order[b], K, streams.Generator(0, [0x6E656773, 0, 0, b]))
                        for b in range(N)])
    xb, yb = x[order], y[order]
    h = stem.layer1(F.relu(stem.bn1(stem.conv1(xb))))
    feats = [F.adaptive_avg_pool2d(n.layer3(n.layer2(h)), 1).flatten(1) for n in nets]
    zs = [n.fc(f) for n, f in zip(nets, feats)]
    es = [F.normalize(hd(f), dim=1) for hd, f in zip(heads, feats)]
    mean = (sum(zs) / P).detach()
    ces = [F.cross_entropy(z, yb) for z in zs]
    kl = kl_t(zs[-1], mean, T)

    def nce(bank, e):
        s_ = torch.exp(torch.bmm(bank[idx], e.unsqueeze(2)).squeeze(2) / tau)
        p_ = s_ / (s_.mean().detach() * N)
        c = K / N
        return -(torch.log(p_[:, 0] / (p_[:, 0] + c + 1e-7)).sum() + torch.log(c / (p_[:, 1:] + c + 1e-7)).sum()) / N

    contrast = sum(nce(banks[i], es[j]) for i in range(P) for j in range(P) if j != i)
    opt.zero_grad(); (sum(ces) + kl + 0.025 * contrast).backward(); opt.step()
    out = state([("peer0.", stem)])
    for p, n in enumerate(nets[1:], start=1):
        out.update(state([(f"peer{p}.layer2.", n.layer2), (f"peer{p}.layer3.", n.layer3), (f"peer{p}.fc.", n.fc)]))
    with torch.no_grad():
        for p in range(P):
            out.update(state([(f"peer{p}.module.linear.", heads[p])]))
            new = banks[p].clone()
            new[torch.tensor(order)] = F.normalize(banks[p][torch.tensor(order)] * 0.5 + es[p] * 0.5, dim=1)
            out[f"peer{p}.extra.memory"] = new
    return {"ce": sum(c.item() for c in ces), "kl": kl.item(), "contrast": 0.025 * contrast.item()}, out


# ---- msdcrd: no official code (Sources/Distillation/MSDCRD.swift: every choice ours); a twin written from that
# specification: scales 1, 2, 4 average-pooled with window ⌊H/s⌋ and stride ⌊window/2⌋; sample-wise InfoNCE per
# position over the batch, same-class other images masked out; feature-wise InfoNCE over channels (each channel's
# responses over the batch and positions); τ 0.1, β 0.8; a 1×1 projection (no bias) when channels differ. Labels
# with repeats here, so the masking matters.
MSDCRD_LABELS = [3, 3, 10, 10, 17, 24, 24, 31]


def msdcrd(dtype):
    x, y = batch().to(dtype), torch.tensor(MSDCRD_LABELS)
    s, t = model(SMALL, "peer0.", dtype), teacher("resnet14", dtype)
    proj = torch.nn.Conv2d(16, 64, 1, bias=False).to(dtype)
    golden_weights.fill(proj, "peer0.module.proj.")
    opt = torch.optim.SGD(list(s.parameters()) + list(proj.parameters()), lr=0.1, momentum=0.9, weight_decay=5e-4)
    z, taps, _ = s(x)
    with torch.no_grad():
        _, ttaps, _ = t(x)
    fs, ft, tau = proj(taps[-1]), ttaps[-1], 0.1
    same = (y[:, None] == y[None, :]) & ~torch.eye(N, dtype=torch.bool)
    sample, feature = 0, 0
    for sc in (1, 2, 4):
        k = max(1, 8 // sc)
        ps, pt = F.avg_pool2d(fs, k, max(1, k // 2)), F.avg_pool2d(ft, k, max(1, k // 2))
        vs = F.normalize(ps.flatten(2), dim=1)                 # N × C × positions
        vt = F.normalize(pt.flatten(2), dim=1)
        P = vs.shape[2]
        per = 0
        for p in range(P):
            logits = vs[:, :, p] @ vt[:, :, p].T / tau
            logits = logits.masked_fill(same, -1e9)
            per = per + F.cross_entropy(logits, torch.arange(N))
        sample = sample + per / P
        a = F.normalize(ps.permute(1, 0, 2, 3).reshape(ps.shape[1], -1), dim=1)   # C × (N·positions)
        b = F.normalize(pt.permute(1, 0, 2, 3).reshape(pt.shape[1], -1), dim=1)
        feature = feature + F.cross_entropy(a @ b.T / tau, torch.arange(a.shape[0]))
    sample, feature = 0.8 * sample / 3, 0.8 * feature / 3
    ce = F.cross_entropy(z, y)
    opt.zero_grad(); (ce + sample + feature).backward(); opt.step()
    return {"ce": ce.item(), "kl": 0.0, "sample": sample.item(), "feature": feature.item()}, state([("peer0.", s), ("peer0.module.proj.", proj)])


# ---- afd: no official code (Sources/Distillation/AFD.swift: every choice ours); a twin written from that
# specification: 1. DML's logit update (SGD on the networks); 2. a fresh forward, D_k (conv 2×2 → BN → LeakyReLU 0.2
# → conv 2×2 stride 2 → sigmoid → mean) trained by Adam on (1 − D_k(F_{k−1}))² + D_k(A_k(F_k))², maps detached;
# 3. the same forward, λ·(1 − D_k(A_k(F_k)))² through the updated D_k, Adam on the networks and adapters. lr 2e-5.
def afd(dtype):
    x, y = batch().to(dtype), torch.tensor(LABELS)
    T, K = 3.0, 2
    names, chans = [SMALL, HALF], [16, 32]
    nets = [model(n, f"peer{p}.", dtype) for p, n in enumerate(names)]
    disc, adapters = [], []
    for p in range(K):
        c = chans[(p - 1) % K]
        d = torch.nn.ModuleDict({"conv1": torch.nn.Conv2d(c, c, 2, 1), "bn": torch.nn.BatchNorm2d(c), "conv2": torch.nn.Conv2d(c, 1, 2, 2)}).to(dtype)
        golden_weights.fill(d, f"peer{p}.module.discriminator.")
        a = torch.nn.Conv2d(chans[p], c, 1, bias=False).to(dtype)
        golden_weights.fill(a, f"peer{p}.module.adapter.")
        disc.append(d); adapters.append(a)

    def D(d, f):
        return torch.sigmoid(d["conv2"](F.leaky_relu(d["bn"](d["conv1"](f)), 0.2))).mean(dim=(1, 2, 3))

    net_params = [q for n in nets for q in n.parameters()]
    sgd = torch.optim.SGD(net_params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    adam_d = torch.optim.Adam([q for d in disc for q in d.parameters()], lr=2e-5)
    adam_g = torch.optim.Adam(net_params + [q for a in adapters for q in a.parameters()], lr=2e-5)
    zs = [n(x)[0] for n in nets]
    ce = [F.cross_entropy(z, y) for z in zs]
    kl = [kl_t(zs[i], zs[1 - i].detach(), T) for i in range(K)]
    sgd.zero_grad(); (sum(ce) + sum(kl)).backward(); sgd.step()
    maps = [n(x)[1][-1] for n in nets]
    fakes = [adapters[p](maps[p]) for p in range(K)]
    ld = sum(((1 - D(disc[p], maps[(p - 1) % K].detach())) ** 2).mean() + (D(disc[p], fakes[p].detach()) ** 2).mean() for p in range(K))
    adam_d.zero_grad(); ld.backward(); adam_d.step()
    lg = sum(((1 - D(disc[p], fakes[p])) ** 2).mean() for p in range(K))
    adam_g.zero_grad(); lg.backward(); adam_g.step()
    out = state([(f"peer{p}.", n) for p, n in enumerate(nets)])
    for p in range(K):
        out.update(state([(f"peer{p}.module.discriminator.", disc[p]), (f"peer{p}.module.adapter.", adapters[p])]))
    return {"ce": sum(c.item() for c in ce), "kl": sum(k.item() for k in kl), "discriminator": ld.item(), "adversarial": lg.item()}, out


CASES = {
    "method-independent": dict(twin=independent, official="plain cross-entropy (no official code)",
                               config=config([SMALL, SMALL], {"name": "independent"}, SGD | {"nesterov": "false"})),
    "method-kd": dict(twin=kd, teacher="resnet14", official="megvii-research/mdistiller@a08d46f mdistiller/distillers/KD.py",
                      config=config([SMALL], {"name": "kd", "temperature": 4, "alpha": 0.9, "teacher_model": "resnet14",
                                                  "teacher_checkpoint": "{TEACHER}"}, SGD)),
    "method-dkd": dict(twin=dkd, teacher="resnet14", official="megvii-research/mdistiller@a08d46f mdistiller/distillers/DKD.py",
                       config=config([SMALL], {"name": "dkd", "alpha": 1, "beta": 8, "temperature": 4, "warmup_epochs": 1,
                                                   "teacher_model": "resnet14", "teacher_checkpoint": "{TEACHER}"}, SGD | {"lr": 0.05})),
    "method-dml": dict(twin=dml, official="the paper's objective (YingZhangDUT/Deep-Mutual-Learning is TensorFlow)",
                       config=config([SMALL, HALF, SMALL], {"name": "dml", "temperature": 3}, SGD | {"nesterov": "true"})),
    "method-ssld": dict(twin=ssld, teacher="resnet14", official="PaddlePaddle/PaddleClas ppcls/loss/dmlloss.py (DMLLoss), the teacher in evaluation mode (ours)",
                        config=config([SMALL], {"name": "ssld", "teacher_model": "resnet14", "teacher_checkpoint": "{TEACHER}"},
                                      SGD | {"nesterov": "false"})),
    "method-fitnets": dict(twin=fitnets, teacher="wrn16_2",
                           official="megvii-research/mdistiller@a08d46f mdistiller/distillers/FitNet.py, _common.py (ConvReg)",
                           config=config([SMALL], {"name": "fitnets", "hint_layer": 2, "feat_weight": 100, "ce_weight": 1,
                                                   "teacher_model": "wrn16_2", "teacher_checkpoint": "{TEACHER}"}, SGD | {"lr": 0.05})),
    "method-at": dict(twin=at, teacher="wrn16_2", official="megvii-research/mdistiller@a08d46f mdistiller/distillers/AT.py",
                      config=config([SMALL], {"name": "at", "feat_weight": 1000, "ce_weight": 1,
                                              "teacher_model": "wrn16_2", "teacher_checkpoint": "{TEACHER}"}, SGD | {"lr": 0.05})),
    "method-one": dict(twin=one, official="Lan1991Xu/ONE_NeurIPS2018@54afde3 cifar_one.py, models/cifar/resnet.py, loss/kl_loss.py",
                       config=config([SMALL, SMALL, SMALL], {"name": "one", "temperature": 3, "rampup_epochs": 0},
                                     SGD | {"weight_decay": 1e-4})),
    "method-okddip": dict(twin=okddip, official="DefangChen/OKDDip@c6a05de train_GL.py, utils.py (KL_Loss), models/model_cifar/resnet_GL.py",
                          config=config([SMALL] * 4, {"name": "okddip", "temperature": 3, "rampup_epochs": 0, "alpha": 1},
                                        SGD | {"nesterov": "true"})),
    "method-css": dict(twin=css, official="PumpkinsLemon/CSS@7b5c928 train.py, resnet_css.py",
                       config=config([SMALL, SMALL], {"name": "css", "temperature": 3, "branches": 3}, SGD | {"nesterov": "false"})),
    "method-pcl": dict(twin=pcl, official="shaoeric/Peer-Collaborative-Learning-for-Online-Knowledge-Distillation@6afb473 src/losses/loss_wrapper.py, kd_loss.py, src/controller.py",
                       config=config([SMALL] * 3, {"name": "pcl", "temperature": 3, "rampup_epochs": 0}, SGD | {"nesterov": "true"})),
    "method-okdhp": dict(twin=okdhp, official="zhengli97/OKDHP@452c71e lib/core/function_okd.py, lib/models/hourglass_okd_share_less.py (FAU), on class logits (ours)",
                         config=config([SMALL] * 2, {"name": "okdhp", "kd_weight": 2, "ensemble_weight": 1, "rampup_epochs": 0, "fau_hidden": 64},
                                       SGD | {"nesterov": "true"})),
    "method-ffl": dict(twin=ffl, official="Jangho-Kim/FFL-pytorch@546d478 train_FFL.py, our_network.py (FFL-S), utils.py (KLLoss)",
                       config=config([SMALL] * 2, {"name": "ffl", "temperature": 3, "rampup_epochs": 0, "fusion_weight_decay": 1e-5, "shared_stem": "true"},
                                     SGD | {"nesterov": "true", "weight_decay": 1e-4})),
    "method-avatar": dict(twin=avatar, teacher="resnet14", official="Gumpest/AvatarKD@f8f8f35 mmrazor/models/losses/akd_cwd.py, configs/distill/akd/ (align_module)",
                          config=config([SMALL], {"name": "avatar", "base": "cwd", "teacher_model": "resnet14", "teacher_checkpoint": "{TEACHER}"}, SGD)),
    "method-crd": dict(twin=crd, teacher="resnet14", official="megvii-research/mdistiller@a08d46f mdistiller/distillers/CRD.py (our negatives' stream)",
                       config=config([SMALL], {"name": "crd", "feat_weight": 0.8, "nce_k": 4, "nce_t": 0.07, "nce_momentum": 0.5,
                                               "embedding_dim": 128, "teacher_model": "resnet14", "teacher_checkpoint": "{TEACHER}"},
                                     SGD | {"lr": 0.05})),
    "method-mcl": dict(twin=mcl, official="winycg/MCL-OKD@c15a0fd main_cifar_mcl_okd.py, mcl/criterion.py, mcl/memory.py (our negatives' stream)",
                       config=config([SMALL] * 3, {"name": "mcl", "temperature": 3, "nce_k": 4, "nce_t": 0.1, "nce_momentum": 0.5,
                                                   "embedding_dim": 128, "contrast_weight": 0.025, "kd_weight": 1},
                                     SGD | {"nesterov": "true"})),
    "method-msdcrd": dict(twin=msdcrd, teacher="resnet14", labels=MSDCRD_LABELS, official="no official code: Sources/Distillation/MSDCRD.swift's specification, written independently",
                          config=config([SMALL], {"name": "msdcrd", "feat_weight": 0.8, "scales": "1,2,4", "nce_t": 0.1,
                                                  "teacher_model": "resnet14", "teacher_checkpoint": "{TEACHER}"}, SGD)),
    "method-afd": dict(twin=afd, official="no official code: Sources/Distillation/AFD.swift's specification, written independently",
                       after_floor=1e-3 * 2e-5,
                       config=config([SMALL, HALF], {"name": "afd", "temperature": 3, "adversarial_lr": 2e-5, "adversarial_weight": 1},
                                     SGD | {"nesterov": "false"})),
    # Adam's first step moves a weight by lr·g/(|g| + ε), so the float32 rounding of a near-zero gradient becomes a
    # visible fraction of lr: Adam cases allow 1e-3·lr beside the noise.
    "method-oec": dict(twin=oec, official="Devwalkar/BOC-KD@d80a5a8 utils/Losses.py, models/ResNet_cifar.py, tools/train.py",
                       after_floor=1e-3 * 1e-3,
                       config=config(["resnet8", "resnet8", "resnet8"], {"name": "oec"},
                                     {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5})),
}


def run_case(case, spec, twice):
    torch.set_default_dtype(torch.float64)

    def run(dtype):
        terms, after = spec["twin"](dtype)
        out = {"term." + k: torch.tensor([float(v)], dtype=torch.float64) for k, v in terms.items()}
        out.update({"after." + k: v.to(torch.float64) for k, v in after.items()})
        return out

    ref, noise = twice(run)
    tensors = {"labels": np.array(spec.get("labels", LABELS), dtype=np.float32)}
    tensors.update(ref)
    metadata = {"config": spec["config"], "official": spec["official"], "after_floor": spec.get("after_floor", 0.0)}
    if "teacher" in spec:
        metadata["teacher"] = spec["teacher"]
    metadata.update({"noise_" + k: v for k, v in noise.items()})
    return tensors, metadata
