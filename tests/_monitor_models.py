"""Small models the monitor's tests share."""

import torch.nn.functional as F
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


class LossBnNet(nn.Module):
    """BnNet that returns its loss as a Hugging Face model does: {"loss", "logits"}."""

    def __init__(self):
        super().__init__()
        self.net = BnNet()

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}
