"""Monitor a plain PyTorch CNN on scikit-learn's digits: SGD with momentum, then AdamW.

    python examples/monitor_digits.py --out runs/digits
    thermosgd report runs/digits      # each group's norm and angle against the predictions

Nothing in the model or the loop knows about thermosgd: the monitor wraps the loop.
"""

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import thermosgd


class CNN(nn.Module):
    def __init__(self, width=16, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


def digits():
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = (x - x.mean()) / x.std()
    return x, torch.tensor(data.target)


def train(model, optimizer, x, y, *, steps, batch_size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/digits")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args(argv)
    x, y = digits()
    runs = {
        "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-3),
        "adamw": lambda p: torch.optim.AdamW(p, lr=4e-3, weight_decay=0.5),
    }
    for name, make in runs.items():
        torch.manual_seed(0)
        model = CNN()
        optimizer = make(model.parameters())
        with thermosgd.Monitor(model, optimizer, out=f"{args.out}/{name}", every=args.every,
                               overwrite=True) as monitor:
            loss = train(model, optimizer, x, y, steps=args.steps)
        state = monitor.state()
        union = state[state["group"] == "all"].iloc[0]
        print(f"{name}: loss {loss:.3f}, {len(monitor.groups)} scale-invariant groups; "
              f"union norm {union['norm']:.3f} (predicted {union['radius_theory_corrected']:.3f}),"
              f" angle/step {union['angular_update']:.4f} (predicted "
              f"{union['angular_update_theory']:.4f}), regime {union['regime']}")


if __name__ == "__main__":
    main()
