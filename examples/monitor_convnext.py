"""Monitor a ConvNeXt the way it is usually trained: AdamW (learning rate 4e-3, weight decay
0.05), a warm-up then cosine learning rate, label smoothing 0.1 and random crops, on
scikit-learn's digits upsampled to 16 x 16.

    python examples/monitor_convnext.py --out runs/convnext
    thermosgd report runs/convnext    # per layer: norm and angle per step against the predictions

The model is a small ConvNeXt (Liu et al. 2022) with the facebookresearch names (stem, stages,
downsample, dwconv, pwconv1, pwconv2, gamma, head) and timm's LayerNorm2d, a LayerNorm over the
channels of an image written as permute + F.layer_norm. It normalizes each pixel's channel
vector, so a convolution whose output goes straight into it is scale-invariant as a whole layer,
its bias with it: the stem's patchify convolution and every block's depthwise convolution. The
rest are not (the downsampling convolutions and the MLP feed the residual stream; the head feeds
the loss) and are predicted approximately, with AdamW's rotational equilibrium (Kosson et al.
2024). The usual recipe exempts biases and gains from weight decay: a depthwise convolution's
group, its bias before the norm, then decays at two rates, and the monitor predicts it with
their norm-weighted mean, sum_k lambda_k |w_k|^2 / |w|^2. AdamW's norm relaxes in
1 / (2 eta lambda) = 2500 steps at the peak learning rate, longer than this run: the norms stay
below their equilibrium until the cosine brings it down to them (``--steps 10000`` runs longer).
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import thermosgd


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) tensor, as timm and torchvision write it."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Block(nn.Module):
    def __init__(self, dim, layer_scale=1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x):  # (N, C, H, W)
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # channels last for the MLP
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, dims=(32, 64, 128), depths=(1, 1, 1), patch=2, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, dims[0], patch, patch), LayerNorm2d(dims[0],
                                                                                   eps=1e-6))
        self.downsample = nn.ModuleList(
            nn.Sequential(LayerNorm2d(dims[k], eps=1e-6), nn.Conv2d(dims[k], dims[k + 1], 2, 2))
            for k in range(len(dims) - 1))
        self.stages = nn.ModuleList(nn.Sequential(*(Block(dim) for _ in range(depth)))
                                    for dim, depth in zip(dims, depths))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.stages[0](self.stem(x))
        for down, stage in zip(self.downsample, self.stages[1:]):
            x = stage(down(x))
        return self.head(self.norm(x.mean((2, 3))))


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
    parser.add_argument("--out", default="runs/convnext")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x, y, x_test, y_test = digits()
    model = ConvNeXt()
    params = list(model.parameters())  # no weight decay on biases, gains and layer scales
    optimizer = torch.optim.AdamW([
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.05},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=args.lr)
    scheduler = (warmup_cosine(optimizer, args.steps, warmup=max(args.steps // 20, 1))
                 if args.schedule == "cosine" else None)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with thermosgd.Monitor(model, optimizer, out=args.out, every=args.every,
                           overwrite=True) as monitor:
        for step in range(args.steps):
            idx = torch.randint(0, len(x), (args.batch_size,), generator=gen)
            loss = F.cross_entropy(model(random_crop(x[idx], gen)), y[idx], label_smoothing=0.1)
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
    print(layers[["group", "d", "scale_invariant", "norm", "radius_theory_corrected",
                  "angular_update", "angular_update_theory", "regime"]].to_string(index=False))
    print(f"report: thermosgd report {args.out}   (writes {args.out}/report.html)")
    return monitor


if __name__ == "__main__":
    main()
