"""Mamba's selective scan (S6) in plain PyTorch: a chunked parallel form, a sequential reference, a fused path.

For channels e and state entries n the recurrence over tokens l = 1..L is

    h[l, e, n] = exp(delta[l, e] A[e, n]) h[l - 1, e, n] + delta[l, e] B[l, n] u[l, e],   h[0] = 0
    y[l, e]    = sum_n C[l, n] h[l, e, n] + D[e] u[l, e]

with A < 0 (every step a decay) and delta > 0 depending on the input (the "selective" part).
Shapes throughout: u, delta (batch, L, E); A (E, N); B, C (batch, L, N); D (E,) -> y (batch, L, E).

``selective_scan_chunked`` cuts the tokens into chunks of T. Inside a chunk it works in log space: with the
cumulative log-decay S[t] = sum_{r <= t} delta[r] A, the state is h[t] = sum_{s <= t} exp(S[t] - S[s]) x[s],
x = delta B u, and the sum over s is a cumulative log-sum-exp of log|x[s]| - S[s] (one for each sign of x),
so it is parallel over the chunk and never overflows. Across chunks the last state is carried
sequentially; the chunk bounds |S|, and with it the float32 rounding of the log-space terms (relative error
about |S| * 2^-24). With gradients on, each chunk is recomputed in the backward pass (activation
checkpointing), so what stays in memory is the inputs and one (batch, E, N) state per chunk: linear in L.
``selective_scan_reference`` is the recurrence token by token, for tests.

``selective_scan`` uses mamba-ssm's fused CUDA kernel when that package imports and the tensors are on a
GPU (the optional extra ``zigma``), and the chunked form everywhere else.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

try:  # the optional extra: pip install "si_lightning[zigma]" on a CUDA machine
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as fused_selective_scan
except (ImportError, OSError):  # not installed, or built for another CUDA/torch
    fused_selective_scan = None


def scan_dtype(u: Tensor) -> torch.dtype:
    """float64 for float64 inputs, float32 otherwise: the cumulative decays are never summed in half precision."""
    return torch.promote_types(u.dtype, torch.float32)


def selective_scan_reference(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """The recurrence one token at a time (module docstring); (batch, L, E) -> (batch, L, E). For tests."""
    batch, length, channels = u.shape
    state = u.new_zeros(batch, channels, A.shape[1])
    outputs = []
    for index in range(length):
        decay = torch.exp(delta[:, index, :, None] * A)
        drive = (delta[:, index] * u[:, index])[:, :, None] * B[:, index, None, :]
        state = decay * state + drive
        outputs.append(torch.einsum("ben,bn->be", state, C[:, index]))
    return torch.stack(outputs, dim=1) + u * D


def scan_chunk(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One chunk of T tokens from the carried state (batch, E, N) -> (sum_n C h (batch, T, E), last state).

    h[t] = exp(S[t]) h_in + sum_{s <= t} exp(S[t] - S[s]) x[s] with x = delta B u and S the cumulative
    log-decay. The sum is taken in log space: log sum_{s <= t} exp(log|x[s]| - S[s]) is a cumulative
    log-sum-exp (stable: it subtracts its running maximum), done separately for the positive and the
    negative x, and S[t] is added before the one exponential, so no exp(-S) is ever formed.
    """
    cumulative = torch.cumsum(delta[..., None] * A, dim=1)  # S (batch, T, E, N): non-increasing in T
    drive = (delta * u)[..., None] * B[:, :, None, :]  # x (batch, T, E, N)
    # log 0 is a finite floor, not -inf: exp(floor + anything in range) is exactly 0 and every gradient
    # stays finite (the where() keeps log's 1 / x away from x = 0).
    floor = torch.finfo(drive.dtype).min / 8
    nonzero = drive != 0
    shifted = torch.log(torch.where(nonzero, drive.abs(), 1.0)) - cumulative
    log_positive = torch.logcumsumexp(torch.where(drive > 0, shifted, floor), dim=1)
    log_negative = torch.logcumsumexp(torch.where(drive < 0, shifted, floor), dim=1)
    states = (
        torch.exp(cumulative + log_positive)
        - torch.exp(cumulative + log_negative)
        + torch.exp(cumulative) * state[:, None]
    )
    return torch.einsum("bten,btn->bte", states, C), states[:, -1]


def selective_scan_chunked(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, chunk_size: int = 32
) -> Tensor:
    """The chunked parallel scan (module docstring); (batch, L, E) -> (batch, L, E) in u's dtype.

    Computed in float32 (float64 for float64 inputs) with autocast off, whatever the caller's precision.
    """
    dtype = scan_dtype(u)
    with torch.autocast(device_type=u.device.type, enabled=False):
        u32, delta32, A32, B32, C32 = (tensor.to(dtype) for tensor in (u, delta, A, B, C))
        batch, length, channels = u.shape
        state = u32.new_zeros(batch, channels, A.shape[1])
        outputs = []
        for start in range(0, length, chunk_size):
            part = slice(start, start + chunk_size)
            inputs = (u32[:, part], delta32[:, part], A32, B32[:, part], C32[:, part], state)
            if torch.is_grad_enabled():
                output, state = checkpoint(scan_chunk, *inputs, use_reentrant=False, preserve_rng_state=False)
            else:
                output, state = scan_chunk(*inputs)
            outputs.append(output)
        y = torch.cat(outputs, dim=1) + u32 * D.to(dtype)
    return y.to(u.dtype)


def fused_kernel_applies(u: Tensor) -> bool:
    """True where mamba-ssm's CUDA kernel is used: the package imports and u is on a GPU."""
    return fused_selective_scan is not None and u.is_cuda


def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, chunk_size: int = 32
) -> Tensor:
    """The selective scan (module docstring); (batch, L, E) -> (batch, L, E), fused on CUDA when available."""
    if fused_kernel_applies(u):
        # mamba-ssm takes channels before tokens: u, delta (batch, E, L); B, C (batch, N, L).
        def channels_first(tensor: Tensor) -> Tensor:
            return tensor.transpose(1, 2).contiguous()

        y = fused_selective_scan(
            channels_first(u), channels_first(delta), A.float(), channels_first(B), channels_first(C), D.float()
        )
        return y.transpose(1, 2).to(u.dtype)
    return selective_scan_chunked(u, delta, A, B, C, D, chunk_size)
