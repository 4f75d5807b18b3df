#!/usr/bin/python3
"""Writes TorchScript models for aicon (needs Debian's python3-torch, which
imports only with /usr/bin/python3).

  /usr/bin/python3 examples/models/make_models.py OUT_DIR

OUT_DIR/digits_cnn.pt meets aicon's model contract: an int attribute
in_features (F = 64: the 8x8 digits as 64 features) and
forward(x: float32[B, 64]) -> float32[B, 10] logits, parameters only,
nothing random. OUT_DIR/batchnorm.pt meets it too, with BatchNorm's running
statistics as buffers. OUT_DIR/diabetes_mlp.pt is a regression model
(one output column) for tests/data/diabetes.csv.gz. The other files each
break one rule, for the tests of the contract check: dropout (a random
operator), double_buffer (a float64 buffer), bad_output (a 1-D output),
no_in_features.
"""
import os
import sys

import torch
from torch import nn


class DigitsCNN(nn.Module):
    in_features: int

    def __init__(self):
        super().__init__()
        self.in_features = 64
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = x.view(-1, 1, 8, 8)
        x = torch.relu(self.conv1(x))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class WithDropout(nn.Module):
    in_features: int

    def __init__(self):
        super().__init__()
        self.in_features = 64
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return nn.functional.dropout(self.fc(x), 0.5, self.training)


class WithBatchNorm(nn.Module):
    in_features: int

    def __init__(self):
        super().__init__()
        self.in_features = 64
        self.fc1 = nn.Linear(64, 32)
        self.bn = nn.BatchNorm1d(32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class DoubleBuffer(nn.Module):
    in_features: int

    def __init__(self):
        super().__init__()
        self.in_features = 64
        self.fc = nn.Linear(64, 10)
        self.register_buffer("scale", torch.ones(1, dtype=torch.float64))

    def forward(self, x):
        return self.fc(x) * self.scale.float()


class DiabetesMLP(nn.Module):
    """Regression: forward(x: float32[B, 10]) -> float32[B, 1], trained on
    the squared error against tests/data/diabetes.csv.gz's target. The
    target's scale (mean about 152, spread about 77) is the model's own
    business: a researcher bakes it into forward."""
    in_features: int

    def __init__(self):
        super().__init__()
        self.in_features = 10
        self.fc1 = nn.Linear(10, 32)
        self.fc2 = nn.Linear(32, 1)

    def forward(self, x):
        return 152.0 + 77.0 * self.fc2(torch.relu(self.fc1(x)))


class BadOutput(nn.Module):
    """Breaks the contract: forward gives float32[B], not float32[B, C]."""
    in_features: int

    def __init__(self):
        super().__init__()
        self.in_features = 64
        self.fc = nn.Linear(64, 1)

    def forward(self, x):
        return self.fc(x).sum(1)


class NoInFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(out, exist_ok=True)
    for name, cls in [("digits_cnn", DigitsCNN), ("dropout", WithDropout),
                      ("batchnorm", WithBatchNorm), ("double_buffer", DoubleBuffer),
                      ("diabetes_mlp", DiabetesMLP), ("bad_output", BadOutput),
                      ("no_in_features", NoInFeatures)]:
        torch.manual_seed(2026)  # the same initial weights every time
        torch.jit.script(cls()).save(os.path.join(out, name + ".pt"))
    print("wrote", out)


if __name__ == "__main__":
    main()
