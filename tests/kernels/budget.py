"""Error budgets for kernels (flash-attention's rule): a low-precision kernel may be at most about
twice as wrong as torch doing the same computation in the same precision, plus a rounding floor."""

import torch


def ulp(dtype: torch.dtype, magnitude: float) -> float:
    """Spacing of ``dtype`` numbers at ``magnitude`` (one unit in the last place)."""
    mant = {torch.bfloat16: 7, torch.float16: 10, torch.float32: 23, torch.float8_e4m3fn: 3}[dtype]
    exp = torch.tensor(max(magnitude, 1e-30)).log2().floor().item()
    return 2.0 ** (exp - mant)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return (a.double() - b.double()).abs().max().item()


def check_budget(kernel: torch.Tensor, torch_lowp: torch.Tensor, ref32: torch.Tensor, what: str) -> tuple[float, float]:
    """kernel and torch_lowp (same low precision) against the fp32 reference; the floor is one
    ulp of the kernel's dtype at the reference's largest magnitude (a single final rounding can
    cost half of that). Returns (kernel error, budget)."""
    err_k = max_err(kernel, ref32)
    err_t = max_err(torch_lowp, ref32)
    budget = 2 * err_t + ulp(kernel.dtype, ref32.abs().max().item())
    assert err_k <= budget, f"{what}: kernel error {err_k:.3e} > budget {budget:.3e} (torch {err_t:.3e})"
    return err_k, budget
