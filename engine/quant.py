"""int8 linears for the CPU that give every row the same result whatever else is in its batch.

torch's dynamic int8 linear picks one activation scale for the whole input tensor, so a row's output depends on
its batch neighbours (and on padding). Here each row is first mapped affinely into [-1, 1], and every input gets
sentinel columns holding exactly +1 and -1 (their weights are zero), so every call quantises with the same
parameters, to the last bit; the map is undone on the output:

    W x + b = h * (W x') + c * (W 1) + b,   x' = (x - c) / h,  c = (max + min) / 2,  h = (max - min) / 2 per row

which also spends the 8 bits on each row's own range. Weights are int8 with one scale per output channel.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn


SENTINELS = 8  # extra input columns: +1, -1, then zeros to keep the packed width a multiple of 8


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        w = torch.cat([w, torch.zeros(w.shape[0], SENTINELS)], dim=1)
        with warnings.catch_warnings():  # quantized tensors are deprecated in favour of torchao, still here in 2.13
            warnings.simplefilter("ignore", UserWarning)
            qw = torch.quantize_per_channel(w, scale.double(), torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qw, None)
        self.register_buffer("sentinels", torch.tensor([1.0, -1.0] + [0.0] * (SENTINELS - 2)), persistent=False)
        self.register_buffer("row_sum", w.sum(dim=1), persistent=False)  # W 1: undoes the centring
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(w.shape[0])
        self.register_buffer("bias", bias, persistent=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        lo, hi = torch.aminmax(x, dim=-1, keepdim=True)
        c, h = (hi + lo) / 2, ((hi - lo) / 2).clamp(min=1e-12)
        xn = ((x - c) / h).clamp_(-1, 1)
        xn = torch.cat([xn, self.sentinels.expand(*xn.shape[:-1], SENTINELS)], dim=-1)
        y = torch.ops.quantized.linear_dynamic(xn, self._packed, True)
        shape = y.shape
        y, c, h = y.reshape(-1, shape[-1]), c.reshape(-1, 1), h.reshape(-1, 1)
        # elementwise, not addmm: a matmul kernel chosen by the row count could round a row differently
        return (c * self.row_sum + self.bias).addcmul_(h, y).reshape(shape)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def quantize_int8(model: nn.Module) -> nn.Module:
    """Swap every nn.Linear of `model` for an Int8Linear, in place (the tied unembedding gets its own copy)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, Int8Linear(child))
    return model
