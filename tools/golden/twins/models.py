"""PyTorch twins of the CIFAR model families, written from the official definitions (state-dict names as theirs):
  ResNet (BasicBlock)   megvii-research/mdistiller@a08d46f mdistiller/models/cifar/resnet.py
  ResNet (Bottleneck)   Lan1991Xu/ONE_NeurIPS2018@54afde3 models/cifar/resnet.py (depth 9n + 2, expansion 4)
  WRN                   mdistiller@a08d46f mdistiller/models/cifar/wrn.py
  VGG                   mdistiller@a08d46f mdistiller/models/cifar/vgg.py
  MobileNetV2           mdistiller@a08d46f mdistiller/models/cifar/mobilenetv2.py (T = 6, width 0.5)
  ShuffleNet V1 / V2    HobbitLong/RepDistiller@b84f547 models/ShuffleNetv1.py, ShuffleNetv2.py
Each forward returns (logits, taps, pooled): taps as the official `feats` (the stages' outputs; WRN's raw block
outputs), pooled the official pooled_feat. Input NCHW.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, depth, classes, widths=(16, 16, 32, 64), bottleneck=False, cin=3):
        super().__init__()
        block = Bottleneck if bottleneck else BasicBlock
        n = (depth - 2) // (9 if bottleneck else 6)
        self.conv1 = nn.Conv2d(cin, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        c = widths[0]
        stages = []
        for planes, stride in zip(widths[1:], (1, 2, 2)):
            blocks = []
            for i in range(n):
                blocks.append(block(c, planes, stride if i == 0 else 1))
                c = planes * (4 if bottleneck else 1)
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        taps = [h]
        for s in (self.layer1, self.layer2, self.layer3):
            h = s(h)
            taps.append(h)
        pooled = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.fc(pooled), taps, pooled


class WideBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        # The official block: an unequal block's shortcut takes the activated input.
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return out + (x if self.equal else self.convShortcut(a))


class NetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WRN(nn.Module):
    def __init__(self, depth, k, classes, cin=3):
        super().__init__()
        w = [16, 16 * k, 32 * k, 64 * k]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(cin, w[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, w[0], w[1], 1)
        self.block2 = NetworkBlock(n, w[1], w[2], 2)
        self.block3 = NetworkBlock(n, w[2], w[3], 2)
        self.bn1 = nn.BatchNorm2d(w[3])
        self.fc = nn.Linear(w[3], classes)

    def forward(self, x):
        h = self.conv1(x)
        taps = [h]
        for b in (self.block1, self.block2, self.block3):
            h = b(h)
            taps.append(h)
        pooled = F.adaptive_avg_pool2d(F.relu(self.bn1(h)), 1).flatten(1)
        return self.fc(pooled), taps, pooled


VGG_CFG = {"vgg8": [[64], [128], [256], [512], [512]], "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]}


class VGG(nn.Module):
    def __init__(self, name, classes, cin=3):
        super().__init__()
        c = cin
        for i, cfg in enumerate(VGG_CFG[name]):
            layers = []
            for v in cfg:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
            setattr(self, f"block{i}", nn.Sequential(*layers[:-1]))  # the last ReLU is applied in forward
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        side = x.shape[2]
        h, taps = x, []
        for i in range(5):
            if i > 0 and (i <= 3 or side == 64):
                h = F.max_pool2d(h, 2, 2)
            h = F.relu(getattr(self, f"block{i}")(h))
            taps.append(h)
        pooled = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.classifier(pooled), taps, pooled


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        mid = cin * t
        self.res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, mid, 1, 1, 0, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, classes, T=6, width=0.5, cin=3):
        super().__init__()
        setting = [[1, 16, 1, 1], [T, 24, 2, 1], [T, 32, 3, 2], [T, 64, 4, 2], [T, 96, 3, 1], [T, 160, 3, 2], [T, 320, 1, 1]]
        c = int(32 * width)
        self.conv1 = nn.Sequential(nn.Conv2d(cin, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        blocks = []
        for t, ch, n, s in setting:
            o = int(ch * width)
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(c, o, s if i == 0 else 1, t))
                c = o
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        last = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = nn.Sequential(nn.Conv2d(c, last, 1, 1, 0, bias=False), nn.BatchNorm2d(last), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Linear(last, classes))

    def forward(self, x):
        h = self.conv1(x)
        taps = [h]
        for i, b in enumerate(self.blocks):
            h = b(h)
            if i in (1, 2, 4, 6):
                taps.append(h)
        pooled = F.adaptive_avg_pool2d(self.conv2(h), 1).flatten(1)
        return self.classifier(pooled), taps, pooled


def shuffle(x, g):
    n, c, h, w = x.shape
    return x.view(n, g, c // g, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class ShuffleV1Block(nn.Module):
    def __init__(self, cin, cout, stride, groups):
        super().__init__()
        self.stride = stride
        mid = int(cout / 4)
        self.g = 1 if cin == 24 else groups
        self.conv1 = nn.Conv2d(cin, mid, 1, groups=self.g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)

    def forward(self, x):
        out = shuffle(F.relu(self.bn1(self.conv1(x))), self.g)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1))
        return F.relu(out + x)


class ShuffleV2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.conv1 = nn.Conv2d(h, h, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(h)
        self.conv2 = nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False)
        self.bn2 = nn.BatchNorm2d(h)
        self.conv3 = nn.Conv2d(h, h, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(h)

    def forward(self, x):
        c = x.shape[1] // 2
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = F.relu(self.bn3(self.conv3(self.bn2(self.conv2(out)))))
        return shuffle(torch.cat([x1, out], 1), 2)


class ShuffleV2Down(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        mid = cout // 2
        self.conv1 = nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x):
        a = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        b = F.relu(self.bn3(self.conv3(x)))
        b = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(b)))))
        return shuffle(torch.cat([a, b], 1), 2)


class ShuffleNet(nn.Module):
    def __init__(self, version, classes, cin=3):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        c, stages = 24, []
        if version == 1:
            for out, n in ((240, 4), (480, 8), (960, 4)):
                blocks = []
                for i in range(n):
                    blocks.append(ShuffleV1Block(c, out - c if i == 0 else out, 2 if i == 0 else 1, 3))
                    c = out
                stages.append(nn.Sequential(*blocks))
            self.conv2 = None
        else:
            for out, n in ((116, 3), (232, 7), (464, 3)):
                stages.append(nn.Sequential(ShuffleV2Down(c, out), *[ShuffleV2Block(out) for _ in range(n)]))
                c = out
            self.conv2 = nn.Conv2d(c, 1024, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(1024)
            c = 1024
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(c, classes)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        taps = [h]
        for s in (self.layer1, self.layer2, self.layer3):
            h = s(h)
            taps.append(h)
        if self.conv2 is not None:
            h = F.relu(self.bn2(self.conv2(h)))
        pooled = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.linear(pooled), taps, pooled


def build(name, classes, cin=3):
    """A model by our zoo's name."""
    if name.startswith("wrn"):
        d, k = name[3:].split("_")
        return WRN(int(d), int(k), classes, cin)
    if name.startswith("vgg"):
        return VGG(name, classes, cin)
    if name == "mobilenetv2":
        return MobileNetV2(classes, cin=cin)
    if name in ("shufflenetv1", "shufflenetv2"):
        return ShuffleNet(int(name[-1]), classes, cin)
    spec = name[len("resnet"):]
    widths = (16, 16, 32, 64)
    if spec.endswith("x4"):
        spec, widths = spec[:-2], (32, 64, 128, 256)
    if spec.endswith("b"):
        return ResNet(int(spec[:-1]), classes, widths, bottleneck=True, cin=cin)
    return ResNet(int(spec), classes, widths, cin=cin)
