"""Mamba's selective scan (S6) in plain PyTorch: a chunked parallel form, a sequential reference, a fused path.

For channels e and state entries n the recurrence over tokens l = 1..L is

    h[l, e, n] = exp(delta[l, e] A[e, n]) h[l - 1, e, n] + delta[l, e] B[l, n] u[l, e],   h[0] = 0
    y[l, e]    = sum_n C[l, n] h[l, e, n] + D[e] u[l, e]

with A < 0 (every step a decay) and delta > 0 depending on the input (the "selective" part).
Shapes throughout: u, delta (batch, L, E); A (E, N); B, C (batch, L, N); D (E,) -> y (batch, L, E).

``selective_scan_chunked`` cuts the tokens into chunks of T. Inside a chunk it works in log space: with the
cumulative log-decay S[t] = sum_{r <= t} delta[r] A, the transfer from token s to token t >= s is
exp(S[t] - S[s]) (a difference taken before the exponential, so it never overflows), and every state of the
chunk is one contraction over s. Across chunks the last state is carried sequentially. With gradients on,
each chunk is recomputed in the backward pass (activation checkpointing), so what stays in memory is the
inputs and one (batch, E, N) state per chunk: linear in L, and the (T, T, E, N) transfer exists for one
chunk at a time. ``selective_scan_reference`` is the recurrence token by token, for tests.

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

    h[t] = exp(S[t]) h_in + sum_{s <= t} exp(S[t] - S[s]) delta[s] B[s] u[s], S the cumulative log-decay.
    """
    length = u.shape[1]
    cumulative = torch.cumsum(delta[..., None] * A, dim=1)  # (batch, T, E, N), non-increasing in T
    causal = torch.ones(length, length, dtype=torch.bool, device=u.device).tril()
    # Pairs s > t get -inf before the exponential: a transfer of exactly 0, and a zero gradient.
    pairwise = cumulative[:, :, None] - cumulative[:, None, :]  # (batch, t, s, E, N)
    transfer = pairwise.masked_fill(~causal[None, :, :, None, None], float("-inf")).exp()
    drive = (delta * u)[..., None] * B[:, :, None, :]  # (batch, s, E, N)
    states = torch.einsum("btsen,bsen->bten", transfer, drive) + cumulative.exp() * state[:, None]
    return torch.einsum("bten,btn->bte", states, C), states[:, -1]


def selective_scan_chunked(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, chunk_size: int = 16
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
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, chunk_size: int = 16
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
