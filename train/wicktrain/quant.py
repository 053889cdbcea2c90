"""wick's int8 rule in PyTorch, with straight-through gradients.

The formulas are engine/quant's, operation for operation, so that what the
trainer computes is what wick computes:

    scale = max|x| / 127                      (float32 division)
    q     = clamp(roundHalfToEven(x / scale), -127, 127)

per row (the last dimension): a weight's output channel, a token's matmul
input, one KV head at one position. torch.round rounds half to even, as
WGSL's round() and Go's math.RoundToEven do. A row of zeros has scale 0 and
q = 0.

A W8A8 matmul is int8 x int8 accumulated exactly, then rescaled once:
y = float32(acc) * (xScale * wScale), the product of the scales rounded to
float32 first. On CUDA the accumulation runs on int8 tensor cores
(torch._int_mm, int32 out), which is exactly wick's arithmetic; elsewhere it
runs in float64 (exact for any int32 sum) or float32 (exact while partial
sums stay below 2^24, which int8 rows of up to 1024 guarantee).

Gradients pass through the rounding unchanged (the straight-through
estimator): every value lies inside the clamp range by construction, so the
rounding is the only non-differentiable step.
"""

import torch

QMAX = 127.0


def quantize(x):
    """Returns (q, scale): q holds the int8 values as float32 integers,
    scale has the shape of x with the last dimension 1."""
    x = x.float()
    scale = x.abs().amax(dim=-1, keepdim=True) / QMAX
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(x / safe).clamp_(-QMAX, QMAX)
    q = torch.where(scale > 0, q, torch.zeros_like(q))
    return q, scale


def fake_quant(x):
    """x rounded to int8 and back (q * scale), with a straight-through gradient."""
    q, s = quantize(x.detach())
    return x + (q * s - x).detach()


class _IntMM:
    """Chooses how int8 matrices are multiplied: int8 tensor cores where
    torch._int_mm runs, else float64 (exact), or float32 when fast_cpu is set
    (exact for the row widths this trainer uses, and quicker in tests)."""

    cuda_ok = None  # None: not tried yet
    fast_cpu = False

    @classmethod
    def mm(cls, qx, qw):
        """qx [N, K], qw [O, K], integer-valued: returns their product [N, O]
        in float32, each element the exact int32 sum rounded to float32."""
        if qx.is_cuda and cls.cuda_ok is not False and hasattr(torch, "_int_mm"):
            try:
                acc = torch._int_mm(qx.to(torch.int8), qw.to(torch.int8).t())
                cls.cuda_ok = True
                return acc.float()
            except RuntimeError:
                cls.cuda_ok = False
        if qx.is_cuda:
            # Integers up to 127 are exact in bfloat16 and the tensor cores
            # accumulate in float32; only the output rounding can differ.
            return torch.matmul(qx.to(torch.bfloat16), qw.to(torch.bfloat16).t()).float()
        if cls.fast_cpu:
            return torch.matmul(qx, qw.t())
        return torch.matmul(qx.double(), qw.double().t()).float()


def set_fast_cpu(on):
    """Lets CPU matmuls accumulate in float32 (see _IntMM)."""
    _IntMM.fast_cpu = bool(on)


class QLinearFn(torch.autograd.Function):
    """y = x W^T in W8A8: x quantised per row, W given as (qw, sw)."""

    @staticmethod
    def forward(ctx, x, w, qw, sw):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        qx, sx = quantize(x2)
        # Rows of the scale product are rounded to float32 before the
        # accumulator is scaled, as engine/quant.Rescale does.
        y = _IntMM.mm(qx, qw) * (sx * sw.reshape(1, -1))
        ctx.save_for_backward(qx.to(torch.int8), sx, qw.to(torch.int8), sw)
        ctx.x_shape = shape
        return y.reshape(*shape[:-1], qw.shape[0])

    @staticmethod
    def backward(ctx, gy):
        qx, sx, qw, sw = ctx.saved_tensors
        g2 = gy.reshape(-1, gy.shape[-1])
        dt = torch.bfloat16 if g2.is_cuda else torch.float32
        wf = (qw.float() * sw.reshape(-1, 1)).to(dt)
        gx = torch.matmul(g2.to(dt), wf).float().reshape(ctx.x_shape)
        gw = None
        if ctx.needs_input_grad[1]:
            xf = (qx.float() * sx).to(dt)
            gw = torch.matmul(g2.to(dt).t(), xf).float()
        return gx, gw, None, None


def qlinear(x, w, frozen=None):
    """The W8A8 product of x [..., K] with the weight w [O, K]. frozen, when
    given, is the (q, scale) pair to use instead of quantising w: the
    exported int8 weights, loaded back for the parity fixture."""
    if frozen is not None:
        qw, sw = frozen
        return QLinearFn.apply(x, None, qw, sw.reshape(-1))
    qw, sw = quantize(w.detach())
    return QLinearFn.apply(x, w, qw, sw.reshape(-1))
