"""int8 linears for the CPU that give every row the same result whatever else is in its batch.

Weights are int8 with one scale per output channel; each input row is quantised to int8 with a scale of its own
(its largest magnitude maps to 127), the product is accumulated in int32 by `torch._int_mm`, then rescaled:

    W x + b ~= (s_x * s_w) * (W_q x_q) + b

Integer accumulation is exact, so whatever the kernel's blocking for a given number of rows, a row's output
depends on that row alone, to the last bit (draft verification and continuous batching rely on it). torch's own
dynamic int8 linear (`quantize_dynamic`) picks one activation scale for the whole input tensor instead, so a row's
output changes with its batch neighbours (and it is slower: docs/performance.md, "Kernel choices").

The tied unembedding (51865 outputs, read for one to a few rows per decoder step) is the exception: there fbgemm's
packed weights read faster. fbgemm quantises its
whole input with one scale, so there each row is first divided by its largest magnitude and two sentinel columns
holding exactly +1 and -1 (with zero weights) pin that scale: every call quantises with the same parameters, and a
row's output again depends on that row alone.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

WIDE = 16384  # output features from which the fbgemm kernel is used (the unembedding)
SENTINELS = 8  # extra input columns of the fbgemm kernel: +1, -1, then zeros to keep the packed width a multiple of 8
BLOCK_ROWS = 256  # rows per block: the (de)quantisation stays in cache, the bits stay the same
# inputs from which a row-major copy of the weights serves products of 2+ rows: oneDNN's int8 product over the
# column-major layout is 3x slower there (2048 -> 512: 200 us for 2-8 rows against 60-85), and as fast for one row
ROW_MAJOR_FROM = 2048


@torch.jit.script  # compiled, so a decoder step runs without the GIL (engine/model.py: decoder_layers)
def int8_linear(x: Tensor, weight_t: Tensor, weight_r: Tensor, scale: Tensor, bias: Tensor,
                block_rows: int = BLOCK_ROWS) -> Tensor:
    """(N, in) -> (N, out): each row quantised with a scale of its own, the product in int32 over weight_t (in, out)
    for a block of one row, weight_r (row-major, or weight_t itself) for more, rescaled and biased elementwise."""
    out = x.new_empty(x.shape[0], bias.shape[0])
    # Blocks of rows keep the elementwise (de)quantisation in cache (encoder rows: 30 s of audio is 1500); every
    # step is per row, so a row's result is the same in any block.
    for start in range(0, x.shape[0], block_rows):
        xs = x[start : start + block_rows]
        s_x = (xs.abs().amax(-1, keepdim=True) / 127).clamp_(min=1e-12)
        y = torch._int_mm(torch.round(xs / s_x).to(torch.int8), weight_t if xs.shape[0] == 1 else weight_r).float()
        # elementwise, not addmm: a matmul kernel chosen by the row count could round a row differently
        torch.addcmul(bias, y, s_x * scale, out=out[start : start + block_rows])
    return out


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.wide = w.shape[0] >= WIDE
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(w.shape[0])
        self.register_buffer("bias", bias)
        if self.wide:
            w = torch.cat([w, torch.zeros(w.shape[0], SENTINELS)], dim=1)
            self._pack(torch.round(w / scale[:, None]).to(torch.int8), scale)
        else:  # (in, out) column-major, the layout _int_mm reads fastest here
            self.register_buffer("weight_t", torch.round(w / scale[:, None]).to(torch.int8).t())
            self.register_buffer("scale", scale)
            self._row_major()

    @classmethod
    def shell(cls, linear: nn.Linear) -> Int8Linear:
        """An Int8Linear of `linear`'s shape, its buffers allocated but not computed: load_state_dict fills them
        (a prepared model, engine/prepared.py)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.wide = linear.out_features >= WIDE
        self.register_buffer("bias", torch.empty(linear.out_features))
        if not self.wide:
            self.register_buffer("weight_t", torch.empty(linear.out_features, linear.in_features, dtype=torch.int8).t())
            self.register_buffer("scale", torch.empty(linear.out_features))
        return self

    def _row_major(self) -> None:
        self.register_buffer("weight_r", self.weight_t.contiguous() if self.in_features >= ROW_MAJOR_FROM
                             else self.weight_t, persistent=False)

    def _pack(self, q: Tensor, scale: Tensor) -> None:
        """fbgemm's packed weights from int8 values (out, in + SENTINELS) and per-channel scales."""
        with warnings.catch_warnings():  # quantized tensors are deprecated in favour of torchao, still in 2.13
            warnings.simplefilter("ignore", UserWarning)
            qw = torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros(len(scale), dtype=torch.long), 0)
            self._packed = torch.ops.quantized.linear_prepack(qw, None)
        self.register_buffer("sentinels", torch.tensor([1.0, -1.0] + [0.0] * (SENTINELS - 2)), persistent=False)

    # The packed weights are no tensor: the state holds their int8 values and scales (engine/prepared.py caches it).
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.wide:
            qw, _ = torch.ops.quantized.linear_unpack(self._packed)
            destination[prefix + "weight_q"], destination[prefix + "weight_scale"] = qw.int_repr(), \
                qw.q_per_channel_scales().float()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        if self.wide and prefix + "weight_q" in state_dict:
            self._pack(state_dict[prefix + "weight_q"], state_dict[prefix + "weight_scale"])
        extra = {prefix + "weight_q", prefix + "weight_scale"}
        super()._load_from_state_dict({k: v for k, v in state_dict.items() if k not in extra}, prefix, *args)
        if not self.wide:
            self._row_major()

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        if not self.wide:
            out = int8_linear(x, self.weight_t, self.weight_r, self.scale, self.bias)
            return out.reshape(*shape[:-1], self.out_features)
        out = x.new_empty(x.shape[0], self.out_features)
        for xs, ys in zip(x.split(BLOCK_ROWS), out.split(BLOCK_ROWS)):
            rescale = xs.abs().amax(-1, keepdim=True).clamp_(min=1e-12)  # rows into [-1, 1]
            xn = torch.cat([xs / rescale, self.sentinels.expand(xs.shape[0], SENTINELS)], dim=-1)
            torch.addcmul(self.bias, torch.ops.quantized.linear_dynamic(xn, self._packed, True), rescale, out=ys)
        return out.reshape(*shape[:-1], self.out_features)

    def tensors(self) -> list[Tensor]:
        """What int8_linear takes after the input (the narrow kind only)."""
        return [self.weight_t, self.weight_r, self.scale, self.bias]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def quantize_int8(model: nn.Module, shells: bool = False) -> nn.Module:
    """Swap every nn.Linear of `model` for an Int8Linear, in place (the tied unembedding gets its own copy);
    `shells`: empty ones of the same shapes, for a prepared model's state."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, Int8Linear.shell(child) if shells else Int8Linear(child))
    return model
