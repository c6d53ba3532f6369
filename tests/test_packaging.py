"""The package works with no GPU and no compiled extension."""

import subprocess
import sys

CODE = r"""
import sys, torch
sys.modules['ltxengine._C'] = None  # make any import of the extension fail
import ltxengine
from ltxengine.ops import get_ops, TORCH_OPS
from ltxengine.config import TransformerConfig
from ltxengine.models.transformer import LTXVideoTransformer, grid_positions
assert not torch.cuda.is_available()
assert get_ops("auto") is TORCH_OPS
torch.manual_seed(0)
m = LTXVideoTransformer(TransformerConfig(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=6,
                        cross_attention_dim=12, num_layers=1, caption_channels=5))
x = torch.randn(1, 6, 4)
out = m(x, torch.tensor([500.0]), context=m.prepare_context(torch.randn(1, 3, 5), None),
        rope=m.rope(grid_positions(1, 1, 2, 3, None)))
assert out.shape == (1, 6, 4) and torch.isfinite(out).all()
print("ok", ltxengine.__version__)
"""


def test_imports_and_runs_without_gpu_or_extension():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok ")


def test_kernels_option_errors_are_clear():
    import pytest

    from ltxengine.ops import get_ops

    with pytest.raises(ValueError, match=r"kernels must be one of .* got 'fast'"):
        get_ops("fast")
    with pytest.raises(ValueError, match=r"kernels='cuda' needs a CUDA device, got cpu"):
        get_ops("cuda", "cpu")


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_kernels_folder_never_shadows_hugging_face_kernels():
    """Run from the repository root (cwd first on sys.path, as `python -m pytest` and `python -c` put it), the
    top-level kernels/ folder must not stand in for Hugging Face's `kernels`, which transformers imports."""
    code = ("import transformers.integrations.hub_kernels, kernels, ltxengine.kernels.qk_norm_rope as q\n"
            "import pathlib; root = pathlib.Path.cwd().resolve()\n"
            "assert pathlib.Path(kernels.__file__).resolve().parent != root / 'kernels', kernels.__file__\n"
            "assert pathlib.Path(q.__file__).resolve().parent == root / 'kernels', q.__file__\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_kernels_folder_without_the_real_package_is_not_importable_as_kernels():
    """With no other `kernels` on sys.path, `import kernels` from the root fails as a missing package would."""
    code = ("import sys; sys.path[:] = [p for p in sys.path if 'site-packages' not in p]\n"
            "try:\n    import kernels\nexcept ModuleNotFoundError as e:\n    print('missing', e.name)\n"
            "else:\n    print('found', kernels.__file__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "missing kernels", (r.stdout, r.stderr[-2000:])
