"""Small models the monitor's tests share."""

from torch import nn


class BnNet(nn.Module):
    """One Linear -> BatchNorm1d layer and a head: 3 per-channel groups."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 3, bias=False)
        self.bn = nn.BatchNorm1d(3, affine=False)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.bn(self.fc(x)))
