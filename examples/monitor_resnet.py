"""Monitor a ResNet the way it is usually trained: SGD with momentum 0.9, weight decay 5e-4, a
warm-up then cosine learning rate and random crops, on scikit-learn's digits upsampled to 16 x 16.

    python examples/monitor_resnet.py --out runs/resnet
    thermosgd report runs/resnet      # per layer: norm and angle per step against the predictions

The model is a CIFAR-style ResNet-8 (He et al. 2016, section 4.2) with torchvision's names (conv1,
bn1, layer1.0.conv1, layer2.0.downsample.0, fc). Every convolution feeds its BatchNorm directly,
so each output channel of every convolution is a scale-invariant group; the classifier fc is a
weight matrix that is not, predicted approximately. Two things move the equilibrium here: the
cosine schedule, and the gradient noise, which falls as the network learns the digits (r*^4 is
proportional to it); the norms follow at first, then lag, and the layers read "scheduled".
``--schedule constant`` holds the learning rate (the norm relaxes in (1 - momentum) /
(4 eta lambda) = 500 steps).
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import thermosgd


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        # the residual add comes after bn2: conv2's output still goes straight into a BatchNorm
        return F.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, blocks=(1, 1, 1), width=16, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, inplanes = [], width
        for k, n in enumerate(blocks):
            planes = width * 2 ** k
            layers.append(nn.Sequential(*(BasicBlock(inplanes if j == 0 else planes, planes,
                                                     2 if k and j == 0 else 1)
                                          for j in range(n))))
            inplanes = planes
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(inplanes, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


def digits(size=16, test=300):
    """Train and test tensors: the 8 x 8 digits, upsampled to size x size, standardized."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, held_out = order[test:], order[:test]
    return x[train], y[train], x[held_out], y[held_out]


def random_crop(x, gen, padding=2):
    """torchvision's RandomCrop(size, padding): each image shifted by up to ``padding`` pixels."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="replicate")
    i, j = torch.randint(0, 2 * padding + 1, (2, n, 1), generator=gen)
    rows, cols = i + torch.arange(h), j + torch.arange(w)  # (N, H), (N, W)
    return padded[torch.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]][:, None]


def warmup_cosine(optimizer, steps, warmup):
    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    correct = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return correct


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/resnet")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x, y, x_test, y_test = digits()
    model = ResNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    scheduler = (warmup_cosine(optimizer, args.steps, warmup=max(args.steps // 20, 1))
                 if args.schedule == "cosine" else None)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with thermosgd.Monitor(model, optimizer, out=args.out, every=args.every,
                           overwrite=True) as monitor:
        for step in range(args.steps):
            idx = torch.randint(0, len(x), (args.batch_size,), generator=gen)
            loss = F.cross_entropy(model(random_crop(x[idx], gen)), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    seconds = time.perf_counter() - start
    state = monitor.state()
    layers = state[state["level"] == "layer"]
    print(f"{args.steps} steps in {seconds:.0f} s: loss {loss.item():.3f}, held-out accuracy "
          f"{accuracy(model, x_test, y_test):.3f}; {len(monitor.groups)} scale-invariant groups "
          f"in {int(layers['scale_invariant'].sum())} of {len(layers)} layers")
    print(layers[["group", "d", "norm", "radius_theory_corrected", "angular_update",
                  "angular_update_theory", "regime"]].to_string(index=False, max_rows=12))
    print(f"report: thermosgd report {args.out}   (writes {args.out}/report.html)")
    return monitor


if __name__ == "__main__":
    main()
