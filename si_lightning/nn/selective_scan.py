"""Mamba's selective scan (S6) in plain PyTorch: a chunked parallel form, a sequential reference, a fused path.

For channels e and state entries n the recurrence over tokens l = 1..L is

    h[l, e, n] = exp(delta[l, e] A[e, n]) h[l - 1, e, n] + delta[l, e] B[l, n] u[l, e],   h[0] = 0
    y[l, e]    = sum_n C[l, n] h[l, e, n] + D[e] u[l, e]

with A < 0 (every step a decay) and delta > 0 depending on the input (the "selective" part).
Shapes throughout: u, delta (batch, L, E); A (E, N); B, C (batch, L, N); D (E,) -> y (batch, L, E).

``selective_scan_chunked`` cuts the tokens into chunks of T <= 32. Inside a chunk it works with log-space
cumulative sums: with the cumulative log-decay S[t] = sum_{r <= t} delta[r] A, the state is

    h[t] = exp(S[t]) h_in + exp(S[t] - c) * sum_{s <= t} exp(c - S[s]) x[s],   x = delta B u,

one cumulative sum over the chunk, parallel in t. The factors exp(S[t] - c) and exp(c - S[s]) are taken
about the chunk's centre c = S[T] / 2, in float64, so they stay finite while |S| <= 2 * 709: each token's
log-decay is floored at -37 (exp(-37) < 2^-53: a smaller factor would change nothing in float64), so a
chunk of 32 has |S| <= 1184 and factors within exp(+-592). Across chunks the last state is carried
sequentially. With gradients on, each chunk is recomputed in the backward pass (activation
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


# exp(-37) = 8.5e-17 < 2^-53: a token that decays the state by more leaves it below float64's rounding.
LOG_DECAY_FLOOR = -37.0
# |S| <= 37 * 32 = 1184 in a chunk; about its centre the factors stay within exp(+-592) < exp(709).
MAX_CHUNK_SIZE = 32


def output_dtype(u: Tensor) -> torch.dtype:
    """float64 for float64 inputs, float32 otherwise: the scan's output is never rounded to half precision."""
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
    """One chunk of T tokens from the carried state (batch, E, N), float64 -> (sum_n C h (batch, T, E), last state).

    The output has u's dtype promoted to float32; the state stays float64 (module docstring).
    """
    dtype = state.dtype
    u64, delta64, A64, B64, C64 = (tensor.to(dtype) for tensor in (u, delta, A, B, C))
    log_decay = (delta64[..., None] * A64).clamp_min(LOG_DECAY_FLOOR)  # (batch, T, E, N), <= 0
    cumulative = torch.cumsum(log_decay, dim=1)  # S: non-increasing in T
    centre = cumulative[:, -1:] / 2
    drive = (delta64 * u64)[..., None] * B64[:, :, None, :]  # x (batch, T, E, N)
    gathered = torch.cumsum(torch.exp(centre - cumulative) * drive, dim=1)
    states = torch.exp(cumulative - centre) * gathered + torch.exp(cumulative) * state[:, None]
    output = torch.einsum("bten,btn->bte", states, C64)
    # A copy of the last state: a view would keep the chunk's (batch, T, E, N) states alive until backward.
    return output.to(output_dtype(u)), states[:, -1].clone()


def selective_scan_chunked(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, chunk_size: int = MAX_CHUNK_SIZE
) -> Tensor:
    """The chunked parallel scan (module docstring); (batch, L, E) -> (batch, L, E) in u's dtype.

    Autocast is off inside: the chunks run in float64 and the output is summed in float32 (float64 for
    float64 inputs) whatever the caller's precision, then cast to u's dtype.
    """
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"the selective scan's chunk_size must be in [1, {MAX_CHUNK_SIZE}], got {chunk_size!r}")
    with torch.autocast(device_type=u.device.type, enabled=False):
        batch, _, channels = u.shape
        state = torch.zeros(batch, channels, A.shape[1], dtype=torch.float64, device=u.device)
        outputs = []
        # split, not slicing: the backward of a split is one concatenation of the chunks' gradients, where
        # each slice's backward would write a zero-padded gradient of the full length (quadratic in L).
        chunks = zip(*(tensor.split(chunk_size, dim=1) for tensor in (u, delta, B, C)), strict=True)
        for u_chunk, delta_chunk, B_chunk, C_chunk in chunks:
            inputs = (u_chunk, delta_chunk, A, B_chunk, C_chunk, state)
            if torch.is_grad_enabled():
                output, state = checkpoint(scan_chunk, *inputs, use_reentrant=False, preserve_rng_state=False)
            else:
                output, state = scan_chunk(*inputs)
            outputs.append(output)
        dtype = output_dtype(u)
        y = torch.cat(outputs, dim=1) + u.to(dtype) * D.to(dtype)
    return y.to(u.dtype)


def fused_kernel_applies(u: Tensor) -> bool:
    """True where mamba-ssm's CUDA kernel is used: the package imports and u is on a GPU."""
    return fused_selective_scan is not None and u.is_cuda


def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, chunk_size: int = MAX_CHUNK_SIZE
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
