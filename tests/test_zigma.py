"""ZigMa (si_lightning/nn/zigma.py): the selective scan, the zigzag paths and the backbone's own properties.

What ZigMa shares with the other backbones (shapes, zero output, conditioning, input checks) is in
tests/test_nn.py; compile in tests/integration/test_module_fast_paths.py; the executable in
tests/integration/test_zigma_executable.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from si_lightning.condition import Condition
from si_lightning.nn import ZIGMA_MODELS, DiT, ZigMa, count_parameters
from si_lightning.nn.dit import modulate
from si_lightning.nn.selective_scan import (
    fused_kernel_applies,
    scan_chunk,
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
)
from si_lightning.nn.zigzag import NUM_ZIGZAG_PATHS, zigzag_paths


def scan_inputs(batch: int, length: int, channels: int, state: int, dtype: torch.dtype, seed: int = 0):
    """Inputs in the ranges a trained Mamba layer produces: delta = softplus(.) > 0, A = -exp(.) < 0."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype)

    u = normal(batch, length, channels)
    delta = F.softplus(normal(batch, length, channels) - 1.0)
    A = -torch.exp(normal(channels, state))
    return u, delta, A, normal(batch, length, state), normal(batch, length, state), normal(channels)


# --- the selective scan --------------------------------------------------------------------------------


def test_reference_scan_is_the_geometric_series_for_constant_inputs():
    """u = B = C = 1, constant delta and A = a: h_l = delta (1 - r^l) / (1 - r) with r = exp(delta a)."""
    length, delta_value, a = 40, 0.3, -0.7
    u = torch.ones(1, length, 1, dtype=torch.float64)
    delta = torch.full_like(u, delta_value)
    A = torch.tensor([[a]], dtype=torch.float64)
    ones = torch.ones(1, length, 1, dtype=torch.float64)
    D = torch.tensor([0.5], dtype=torch.float64)
    ratio = torch.exp(torch.tensor(delta_value * a, dtype=torch.float64))
    steps = torch.arange(1, length + 1, dtype=torch.float64)
    expected = delta_value * (1 - ratio**steps) / (1 - ratio) + 0.5
    for scan in (selective_scan_reference, lambda *args: selective_scan_chunked(*args, chunk_size=7)):
        torch.testing.assert_close(scan(u, delta, A, ones, ones, D)[0, :, 0], expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 32])
def test_chunked_scan_equals_the_sequential_recurrence_in_float64(chunk_size):
    """37 tokens (not a multiple of any chunk but 1): values and gradients agree to float64 rounding; 1e-5 is
    the acceptance bound, the sums of ~40 terms of size O(1) are exact to ~1e-14."""
    inputs = scan_inputs(2, 37, 6, 4, torch.float64)
    leaves = [tensor.clone().requires_grad_(True) for tensor in inputs]
    expected = selective_scan_reference(*inputs)
    output = selective_scan_chunked(*leaves, chunk_size=chunk_size)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-10)
    assert float(expected.abs().max()) > 1.0  # a scan that returned D u alone would differ by more than that
    weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (output * weights).sum().backward()
    reference_leaves = [tensor.clone().requires_grad_(True) for tensor in inputs]
    (selective_scan_reference(*reference_leaves) * weights).sum().backward()
    for leaf, reference in zip(leaves, reference_leaves, strict=True):
        torch.testing.assert_close(leaf.grad, reference.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("chunk_size", [16, 32])
def test_chunked_scan_equals_the_sequential_recurrence_in_float32(chunk_size):
    """float32 inputs against the float64 recurrence: agreement to 1e-5 relative to the output's scale
    (max |y| ~ 24). The chunks run in float64, so what remains is float32's rounding of the output and of
    D u (2^-24 ~ 6e-8 relative each), far inside the bound."""
    inputs = scan_inputs(2, 100, 8, 16, torch.float64, seed=3)
    expected = selective_scan_reference(*inputs)
    output = selective_scan_chunked(*(tensor.float() for tensor in inputs), chunk_size=chunk_size)
    assert output.dtype == torch.float32
    scale = float(expected.abs().max())
    torch.testing.assert_close(output.double(), expected, rtol=0, atol=1e-5 * scale)


def test_chunked_scan_has_no_overflow_under_strong_decay():
    """delta A = -300 per token over a chunk of 32: exp(-S) = exp(9600) overflows any float; the floor of
    the log-decay at -37 and the factors about the chunk's centre keep every number finite."""
    u, delta, A, B, C, D = scan_inputs(1, 64, 3, 2, torch.float64)
    delta = torch.full_like(delta, 30.0)
    A = torch.full_like(A, -10.0)
    output = selective_scan_chunked(u, delta, A, B, C, D, chunk_size=32)
    assert torch.isfinite(output).all()
    # exp(-300) of the previous state survives a step, below float64 rounding: each state is its own
    # token's drive, y = delta u (B . C) + D u; the floor's exp(-37) differs from it by < 2^-53 relative.
    expected = delta * u * (B * C).sum(-1, keepdim=True) + D * u
    torch.testing.assert_close(output, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(output, selective_scan_reference(u, delta, A, B, C, D), rtol=1e-12, atol=1e-12)


def test_chunked_scan_gradient_is_the_finite_difference_of_the_recurrence():
    """gradcheck on a tiny size (2 x 7 tokens, 3 channels, 2 states, chunks of 3: a partial last chunk, every
    chunk recomputed in backward): the chunked scan's analytic gradient of every input against central finite
    differences of the sequential recurrence itself (torch's default eps 1e-6 in float64; the difference
    quotient's error is O(eps^2) truncation plus O(1e-16 / eps) = 1e-10 rounding, far below atol = 1e-6)."""
    inputs = [tensor.requires_grad_(True) for tensor in scan_inputs(2, 7, 3, 2, torch.float64, seed=5)]

    def chunked(*tensors: torch.Tensor) -> torch.Tensor:
        return selective_scan_chunked(*tensors, chunk_size=3)

    class ReferenceWithChunkedGradient(torch.autograd.Function):
        """Forward: the sequential recurrence (what gradcheck differentiates numerically); backward: the
        chunked scan's gradient (what it checks)."""

        @staticmethod
        def forward(ctx, *tensors: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(*tensors)
            return selective_scan_reference(*tensors)

        @staticmethod
        def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, ...]:
            tensors = [tensor.detach().requires_grad_(True) for tensor in ctx.saved_tensors]
            with torch.enable_grad():
                output = chunked(*tensors)
            return torch.autograd.grad(output, tensors, grad_output)

    assert torch.autograd.gradcheck(ReferenceWithChunkedGradient.apply, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
    assert torch.autograd.gradcheck(chunked, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_chunk_size_beyond_the_float64_range_is_refused():
    with pytest.raises(ValueError, match=r"chunk_size must be in \[1, 32\], got 33"):
        selective_scan_chunked(*scan_inputs(1, 40, 2, 2, torch.float32), chunk_size=33)


def test_scan_under_bf16_autocast_runs_in_float32():
    """bf16 inputs under autocast: the scan itself is float32 (autocast off inside), so it equals the float32
    scan of the same bf16-rounded inputs exactly up to the final rounding to bf16 (relative 2^-8)."""
    inputs = [tensor.bfloat16() for tensor in scan_inputs(2, 24, 4, 8, torch.float32)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = selective_scan_chunked(*inputs, chunk_size=8)
    assert output.dtype == torch.bfloat16
    expected = selective_scan_chunked(*(tensor.float() for tensor in inputs), chunk_size=8)
    torch.testing.assert_close(output.float(), expected, rtol=2**-8, atol=1e-6)


def test_plain_scan_is_used_off_cuda():
    inputs = scan_inputs(1, 10, 2, 3, torch.float32)
    assert not fused_kernel_applies(inputs[0])
    torch.testing.assert_close(selective_scan(*inputs), selective_scan_chunked(*inputs))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused kernel runs on CUDA only")
def test_fused_kernel_agrees_with_the_plain_scan_on_cuda():
    pytest.importorskip("mamba_ssm", reason="the optional extra zigma (mamba-ssm) is not installed")
    inputs = [tensor.cuda() for tensor in scan_inputs(2, 300, 32, 16, torch.float32)]
    assert fused_kernel_applies(inputs[0])
    # Both float32 over 300 tokens: relative rounding ~1e-6 per term, a few hundred terms of size ~1.
    torch.testing.assert_close(selective_scan(*inputs), selective_scan_chunked(*inputs), rtol=1e-4, atol=1e-4)


# --- zigzag paths --------------------------------------------------------------------------------------

GRIDS = [(1, 1), (1, 5), (2, 2), (4, 4), (3, 7), (6, 2)]


@pytest.mark.parametrize(("height", "width"), GRIDS)
def test_every_path_is_a_permutation_of_4_neighbours_undone_by_its_inverse(height, width):
    paths, inverses = zigzag_paths(height, width)
    count = height * width
    assert paths.shape == inverses.shape == (NUM_ZIGZAG_PATHS, count)
    tokens = torch.randn(2, count, 3)
    for path, inverse in zip(paths, inverses, strict=True):
        assert torch.equal(torch.sort(path).values, torch.arange(count))
        rows, columns = path // width, path % width
        steps = (rows.diff().abs() + columns.diff().abs()).tolist()
        assert steps == [1] * (count - 1)  # consecutive tokens share an edge
        assert torch.equal(tokens.index_select(1, path).index_select(1, inverse), tokens)
        assert torch.equal(path[inverse], torch.arange(count))


def test_the_eight_paths_start_at_each_corner_along_both_axes():
    paths, _ = zigzag_paths(4, 5)
    assert len({tuple(path.tolist()) for path in paths}) == 8
    corners = {(int(path[0]) // 5, int(path[0]) % 5) for path in paths}
    assert corners == {(0, 0), (0, 4), (3, 0), (3, 4)}
    # Path 0 is the row snake from the top-left; path 1 the column snake from the top-left.
    assert paths[0, :7].tolist() == [0, 1, 2, 3, 4, 9, 8]
    assert paths[1, :6].tolist() == [0, 5, 10, 15, 16, 11]


# --- the backbone --------------------------------------------------------------------------------------


def tiny(**kwargs) -> ZigMa:
    arguments = dict(data_shape=(2, 8, 8), preset=None, patch_size=2, depth=2, hidden_size=16, chunk_size=4)
    return ZigMa(**{**arguments, **kwargs})


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


def test_mamba_is_causal_along_the_scan():
    """A change at scan position k leaves outputs before k unchanged and changes the outputs from k on."""
    torch.manual_seed(0)
    mixer = tiny().blocks[0].mixer.double()
    tokens = torch.randn(1, 16, 16, dtype=torch.float64)
    changed = tokens.clone()
    changed[:, 9] += 1.0
    with torch.no_grad():
        difference = (mixer(changed) - mixer(tokens)).abs().amax(dim=-1)[0]
    assert float(difference[:9].max()) == 0.0
    assert float(difference[9:].min()) > 0.0


def test_block_i_reads_the_tokens_along_path_i_mod_8():
    """Depth 10: the mixer of block i receives the block's modulated input in the order of path i mod 8."""
    torch.manual_seed(0)
    model = tiny(depth=10).double()
    perturb(model)
    block_inputs, mixer_inputs = {}, {}
    for index, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda _, args, i=index: block_inputs.__setitem__(i, args))
        block.mixer.register_forward_pre_hook(lambda _, args, i=index: mixer_inputs.__setitem__(i, args[0]))
    x, t = torch.randn(2, 2, 8, 8, dtype=torch.float64), torch.tensor([0.3, 0.8], dtype=torch.float64)
    model(x, t)
    paths, _ = zigzag_paths(4, 4)
    for index, block in enumerate(model.blocks):
        tokens, c, _, _ = block_inputs[index]
        shift, scale, _ = block.modulation(c).chunk(3, dim=1)
        row_major = modulate(block.norm(tokens), shift, scale)
        torch.testing.assert_close(mixer_inputs[index], row_major[:, paths[index % 8]], rtol=0, atol=0)


@pytest.mark.parametrize(("preset", "millions"), [("S", 34.7), ("B", 135.8), ("L", 475.6), ("XL", 700.2)])
def test_zigma_presets_have_about_dit_parameters(preset, millions):
    """Twice DiT's depth at its width: within 10 % of DiT's count at ImageNet-256 latents (4, 32, 32), 1000
    classes; the counts are the ones the module docstring gives. Built on the meta device."""
    with torch.device("meta"):
        zigma = ZigMa.from_name(f"ZigMa-{preset}/2", data_shape=(4, 32, 32), num_classes=1000, out_channels=8)
        dit = DiT.from_name(f"DiT-{preset}/2", data_shape=(4, 32, 32), num_classes=1000, out_channels=8)
    assert count_parameters(zigma) / count_parameters(dit) == pytest.approx(1.0, abs=0.1)
    assert count_parameters(zigma) / 1e6 == pytest.approx(millions, abs=0.05)
    assert len(ZIGMA_MODELS) == 12 and (zigma.depth, zigma.patch_size) == (2 * dit.depth, 2)


def test_bf16_autocast_forward_and_backward_on_the_cpu():
    """bf16 keeps 8 significant bits (relative rounding 2^-9 ~ 0.2 %); through 2 blocks of matrix products
    the output stays within a few percent of float32, and every gradient is finite."""
    torch.manual_seed(0)
    model = tiny(num_classes=3)
    perturb(model)
    generator = torch.Generator().manual_seed(2)
    x, t = torch.randn(4, 2, 8, 8, generator=generator), torch.rand(4, generator=generator)
    expected = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(x, t)
    assert output.dtype == torch.bfloat16
    relative = float((output.float() - expected).detach().norm() / expected.detach().norm())
    assert 0 < relative < 0.05
    output.float().square().mean().backward()
    assert all(torch.isfinite(parameter.grad).all() for parameter in model.parameters())


def test_paths_are_buffers_outside_the_checkpoint():
    model = tiny()
    assert "paths" not in model.state_dict() and "inverse_paths" not in model.state_dict()
    assert model.paths.shape == (8, 16) and model.paths.dtype == torch.long


def test_the_carried_state_owns_its_memory():
    """The state passed to the next chunk is a copy: a view of the chunk's (batch, T, E, N) states would keep
    every chunk's states alive until backward, memory (L, E, N) where the scan promises (L, E)."""
    u, delta, A, B, C, _ = scan_inputs(1, 8, 3, 2, torch.float32)
    state = torch.zeros(1, 3, 2, dtype=torch.float64)
    _, last = scan_chunk(u, delta, A, B, C, state)
    assert last._base is None and last.untyped_storage().nbytes() == 3 * 2 * 8


def test_recompute_gives_the_same_output_and_gradients():
    """A float64 model with and without recomputation in backward: the same operations on the same numbers,
    so the output, the input's gradient and every parameter's gradient agree to float64 rounding (1e-12)."""
    outputs = {}
    for recompute in (False, True):
        torch.manual_seed(0)
        model = tiny(num_classes=3, depth=3, recompute=recompute).double()
        perturb(model)
        generator = torch.Generator().manual_seed(4)
        x = torch.randn(3, 2, 8, 8, generator=generator, dtype=torch.float64).requires_grad_(True)
        t = torch.rand(3, generator=generator, dtype=torch.float64)
        output = model(x, t, Condition(labels=torch.tensor([0, 2, 1])))
        output.square().sum().backward()
        gradients = {name: parameter.grad for name, parameter in model.named_parameters()}
        outputs[recompute] = (output.detach(), x.grad, gradients)
    (plain, plain_x, plain_gradients), (recomputed, recomputed_x, recomputed_gradients) = outputs.values()
    torch.testing.assert_close(recomputed, plain, rtol=0, atol=1e-12)
    torch.testing.assert_close(recomputed_x, plain_x, rtol=0, atol=1e-12)
    assert float(plain_gradients["blocks.0.mixer.A_log"].abs().max()) > 0  # the scan's parameters take part
    for name, gradient in plain_gradients.items():
        torch.testing.assert_close(recomputed_gradients[name], gradient, rtol=0, atol=1e-12, msg=name)


def test_recompute_keeps_only_the_blocks_inputs_for_backward():
    """Every tensor autograd keeps from the forward pass, seen by a saved-tensors hook: with recomputation
    none is larger than one (batch, tokens, hidden) activation (the blocks' inputs; the scan's (tokens,
    expand * hidden) tensors and float64 states are rebuilt in backward); without it the blocks keep their
    in_proj outputs (batch, tokens, 2 * expand * hidden), 4x larger, and over 10x the bytes in all."""
    kept = {}
    for recompute in (False, True):
        model = tiny(depth=3, patch_size=1, recompute=recompute)
        storages: dict[int, int] = kept.setdefault(recompute, {})

        def pack(tensor: torch.Tensor, storages: dict[int, int] = storages) -> torch.Tensor:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(torch.randn(2, 2, 8, 8), torch.rand(2))
    activation = 2 * 64 * 16 * 4  # (batch 2, 64 tokens, hidden 16) in float32
    assert max(kept[True].values()) <= activation
    assert max(kept[False].values()) >= 4 * activation
    assert sum(kept[False].values()) > 10 * sum(kept[True].values())


def test_recompute_must_be_a_bool():
    with pytest.raises(ValueError, match=r"ZigMa expects recompute to be a bool, got 'yes'"):
        tiny(recompute="yes")
