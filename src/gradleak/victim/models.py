"""Victim models. The DLG LeNet follows the paper's reference code exactly."""
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
    """DLG's LeNet: three sigmoid convolutions and one linear layer.

    Sigmoid (twice differentiable everywhere) is what makes gradient matching work;
    every weight and bias is drawn uniform in [-0.5, 0.5] as in the original code.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        side = _conv_out(_conv_out(image_size, stride=2), stride=2)
        self.fc = nn.Linear(12 * side * side, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            nn.init.uniform_(p, -0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


def _conv_out(size: int, stride: int, kernel: int = 5, padding: int = 2) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut; "option A" shortcut (subsample + zero-pad
    channels) as in He et al.'s CIFAR ResNets, so the shortcut adds no parameters."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.extra = stride, planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.extra == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR (He et al., 2016): 3 stages of 3 basic blocks, 16/32/64 channels,
    global average pooling, so any input size works (0.27M parameters for 10 classes)."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int, blocks: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, planes = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks):
                stages.append(BasicBlock(planes, width, stride if i == 0 else 1))
                planes = width
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(F.relu(self.bn1(self.conv1(x))))
        return self.fc(out.mean(dim=(2, 3)))


def build_model(name: str, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"model={name}: unknown model; allowed: {', '.join(MODELS)}") from None
    return factory(in_channels=in_channels, image_size=image_size, num_classes=num_classes)


MODELS = {"lenet": LeNet, "resnet20": ResNet20}


@cache
def uses_batchnorm(name: str) -> bool:
    """Whether the model keeps BatchNorm statistics (buffers): it has no per-sample gradients,
    and its statistics are not part of a client's update."""
    with torch.random.fork_rng(devices=[]):  # building draws weights: leave the job's stream alone
        return any(True for _ in build_model(name, in_channels=1, image_size=8, num_classes=2).buffers())
