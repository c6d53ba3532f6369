"""The toy denoiser and latent states the LTX-2 sampler tests share (test_ltx2_samplers.py,
test_ltx2_ancestral.py): a small deterministic two-stream map and random states under the
condition masks the loops must honour."""

import torch

from ltxengine.ltx2.samplers import LatentState

B, NV, CV, NA, CA = 2, 12, 8, 6, 4
SCHEDULES = {
    # ends at 0: res2s inserts 0.0011, gradient estimation returns x0 on the last step; the first
    # steps have h = log(sigma / sigma_next) < 0.5 so bongmath runs on them
    "to-zero": [1.0, 0.9, 0.75, 0.5, 0.3, 0.0],
    "open": [0.95, 0.8, 0.6, 0.45, 0.2],
}
MASKS = ("ones", "partial", "soft")  # soft: partial strengths but no token at exactly 0


class Toy:
    """x0 = tanh(x W) + sigma and step terms + a pooled term from the other stream; counts calls."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.wv = torch.randn(CV, CV, generator=g) / CV ** 0.5
        self.wa = torch.randn(CA, CA, generator=g) / CA ** 0.5
        self.a2v = torch.randn(CA, CV, generator=g) * 0.5
        self.v2a = torch.randn(CV, CA, generator=g) * 0.5
        self.bv, self.ba = torch.randn(CV, generator=g), torch.randn(CA, generator=g)
        self.calls: list[tuple[float, int]] = []

    def __call__(self, xv, xa, sigma, step):
        assert isinstance(sigma, float) and isinstance(step, int)
        self.calls.append((sigma, step))
        x0v = (torch.tanh(xv @ self.wv) + sigma * self.bv + 0.01 * step
               + torch.tanh(xa.mean(1, keepdim=True) @ self.a2v))
        x0a = torch.tanh(xa @ self.wa) * (1 - sigma) + sigma ** 2 * self.ba + xv.mean(1, keepdim=True) @ self.v2a
        return x0v, x0a

    def reference_fn(self):
        """The same map with ltx-pipelines' DenoisingFunc signature."""
        def fn(video_state, audio_state, sigmas, step_index):
            return self(video_state.latent, audio_state.latent, float(sigmas[step_index]), step_index)
        return fn


def mask(kind: str, n: int) -> torch.Tensor:
    mask = torch.ones(B, n, 1)
    if kind == "partial":  # hard conditions (0) and half-strength tokens, different per batch item
        mask[0, :2], mask[0, 2:4], mask[1, -1], mask[1, 0] = 0.0, 0.5, 0.0, 0.5
    elif kind == "soft":
        mask[:, :2], mask[1, 3] = 0.5, 0.8
    return mask


def state(kind: str, n: int, c: int, g: torch.Generator) -> LatentState:
    return LatentState(latent=torch.randn(B, n, c, generator=g), clean=torch.randn(B, n, c, generator=g),
                       mask=mask(kind, n))


def states(kind: str = "ones", seed: int = 1) -> tuple[LatentState, LatentState]:
    g = torch.Generator().manual_seed(seed)
    return state(kind, NV, CV, g), state(kind, NA, CA, g)
