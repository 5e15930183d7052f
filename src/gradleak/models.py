"""Victim models. The DLG LeNet follows the paper's reference code exactly."""
import torch
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


def build_model(name: str, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"model={name}: unknown model; allowed: {', '.join(MODELS)}") from None
    return factory(in_channels=in_channels, image_size=image_size, num_classes=num_classes)


MODELS = {"lenet": LeNet}
