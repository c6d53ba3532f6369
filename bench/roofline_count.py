"""The counter behind bench/roofline.py: every op a call dispatches, with its launches, FLOPs and bytes,
the module that dispatched it, and its roofline time on a named GPU's ceilings.

``count(fn)`` runs ``fn()`` under a TorchDispatchMode (normally inside FakeTensorMode: nothing is
computed, so a full-size step traces in seconds on any machine) and returns one ``OpRow`` per
dispatched op. What is counted, and the assumptions behind each figure:

* launches: 1 per dispatched op, 0 for views and metadata ops (``ZERO_LAUNCH``: every op whose
  returns all alias an input - view, t, transpose, expand, select, slice, unbind, ... - plus
  _unsafe_view and the allocations empty / empty_like / empty_strided / new_empty, which launch
  nothing). A custom op (ltxengine::<backend>_<op>) is one kernel: whatever fusions exist are
  counted as the ops they dispatch, without a list to keep up to date.
* bytes: every distinct tensor argument read once (its distinct elements: a broadcast dimension,
  stride 0, is read once) plus every output written once; in-place ops read and write ``self``
  (copy_ / fill_ / zero_ only write it); a custom op writes its mutated (``Tensor(a!)``) arguments
  and reads the others. No cache reuse across ops, no re-reads inside an op (a GEMM's tiles, an
  attention's K/V per query block are assumed served from L2 / shared memory).
* FLOPs: torch.utils.flop_counter's formulas for matmul, convolution and attention (2 per
  multiply-add; SDPA 4 B H Nq Nk D); elementwise and reduction ops count 0 there and here (the
  floor is the tensor-core work). Custom ops: ``CUSTOM_FLOPS`` names a formula per op; an op with
  "linear"/"mm"/"gemm" in its name and no entry is counted as the GEMM its arguments describe
  (``gemm_like_flops``); any other unknown op counts 0 and is listed in ``unknown_flops``.
* time per op = max(FLOPs / peak FLOP/s of its dtype, bytes / peak bandwidth), each op alone at
  its ceiling (no overlap between ops, no tail effects); ``LAUNCH_US`` per launch is added for the
  eager figure (a CUDA graph replay pays about none).
* attention runs as on a CUDA device: F.scaled_dot_product_attention is sent to the flash kernel
  (no mask, 16-bit, head dim <= 256, a multiple of 8) or else the memory-efficient one, as
  torch's SDPA dispatch picks on Hopper (``CudaSdpa``); a boolean mask is converted to an additive
  one first, as torch does.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

aten = torch.ops.aten


# -- ceilings ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ceiling:
    """A GPU's datasheet peaks (dense, no sparsity)."""

    name: str
    bf16_flops: float  # FLOP/s, dense bf16/fp16 tensor cores
    bandwidth: float  # bytes/s, HBM
    fp32_flops: float  # FLOP/s without tensor cores: fp32 matmul with TF32 off (torch's default)

    @property
    def fp8_flops(self) -> float:
        return 2 * self.bf16_flops  # e4m3/e5m2 tensor cores: twice bf16

    def flops_per_s(self, dtype: torch.dtype | None) -> float:
        if dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            return self.fp8_flops
        if dtype == torch.float32:
            return self.fp32_flops
        return self.bf16_flops


H100_SXM = Ceiling("H100 SXM", bf16_flops=989e12, bandwidth=3.35e12, fp32_flops=67e12)
H200 = Ceiling("H200", bf16_flops=989e12, bandwidth=4.8e12, fp32_flops=67e12)
CEILINGS = {"h100": H100_SXM, "h200": H200}
LAUNCH_US = 4.0  # host cost of one eager launch (PyTorch dispatch + cudaLaunchKernel), microseconds


# -- what an op costs ----------------------------------------------------------------------------

_ALLOCATIONS = {aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default,
                aten.new_empty.default, aten.new_empty_strided.default}
_VIEWLIKE = {aten._unsafe_view.default, aten.lift_fresh.default}
_WRITE_ONLY_SELF = {"copy_", "fill_", "zero_", "normal_", "uniform_", "random_"}


def zero_launch(func) -> bool:
    """Views (every return aliases an input, none written), metadata ops and bare allocations."""
    if func in _ALLOCATIONS or func in _VIEWLIKE:
        return True
    returns = func._schema.returns
    if not any("Tensor" in str(r.type) for r in returns) and not any(a.is_write for a in func._schema.arguments):
        return True  # sym_size, prim.device, ...: no tensor out, nothing written
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements of ``t`` (a broadcast dim, stride 0, counts once)."""
    n = math.prod(s for s, st in zip(t.shape, t.stride()) if st != 0) if t.numel() else 0
    return n * t.element_size()


def _key(t: torch.Tensor):
    return StorageWeakRef(t.untyped_storage()), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype


def _tensors(value) -> list[torch.Tensor]:
    return [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]


def moved_bytes(func, args, kwargs, out) -> tuple[int, int]:
    """(bytes read, bytes written) of one op; see the module docstring."""
    schema = func._schema
    reads, writes = {}, {}
    bound = dict(zip((a.name for a in schema.arguments), args))
    bound.update(kwargs)
    self_written_only = func.overloadpacket.__name__ in _WRITE_ONLY_SELF
    for a in schema.arguments:
        for t in _tensors(bound.get(a.name)):
            written = a.alias_info is not None and a.alias_info.is_write
            if written:
                writes[_key(t)] = tensor_bytes(t)
            if not written or (a.name == "self" and not self_written_only):
                reads[_key(t)] = tensor_bytes(t)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    attention = func.overloadpacket.__name__.startswith("_scaled_dot_product")
    for r, value in zip(schema.returns, outs):
        if r.alias_info is None:
            for t in _tensors(value):
                if not (attention and not t.is_floating_point()):  # SDPA's RNG seed / offset: host bookkeeping
                    writes[_key(t)] = tensor_bytes(t)
    return sum(reads.values()), sum(writes.values())


# -- FLOPs ---------------------------------------------------------------------------------------

def gemm_like_flops(args: dict, writes: list[torch.Tensor]) -> int:
    """2 M N K for an op that reads a 2-D weight (N, K) and an activation (..., K) and writes (..., N)."""
    tensors = [t for v in args.values() for t in _tensors(v)]
    for w in (t for t in tensors if t.ndim == 2):
        n, k = w.shape
        for x in (t for t in tensors if t is not w and t.shape[-1] == k and t.numel() > 0):
            m = x.numel() // k
            if any(o.shape[-1] == n and o.numel() == m * n for o in writes):
                return 2 * m * n * k
    return 0


def _elementwise(args, writes) -> int:
    # counted 0 as torch.utils.flop_counter counts aten's elementwise ops: the floor is the GEMM work
    return 0


def _attention_fp8(args, writes) -> int:
    q, k = args["q"], args["k"]
    return 4 * q.shape[0] * q.shape[1] * k.shape[1] * q.shape[2]  # (B, N, H*D) layout: 4 B Nq Nk (H D)


def _causal_conv3d(args, writes) -> int:
    w, out = args["weight"], writes[0]
    return 2 * out.numel() * math.prod(w.shape[1:])  # 2 x Cout To Ho Wo x Cin kt kh kw


CUSTOM_FLOPS = {  # custom op name without its backend prefix -> formula(bound args, written tensors)
    "qk_norm_rope": _elementwise, "ada_norm": _elementwise, "gated_residual": _elementwise,
    "head_gate": _elementwise, "quantize_fp8": _elementwise, "residual_ada_norm": _elementwise,
    "dual_ada_norm": _elementwise, "gelu_quantize_fp8": _elementwise, "ada_norm_fp8": _elementwise,
    "residual_ada_norm_fp8": _elementwise, "dual_ada_norm_fp8": _elementwise, "gated_residual_fp8": _elementwise,
    "head_gate_fp8": _elementwise,
    "scaled_mm": lambda args, writes: 2 * args["a"].shape[0] * args["b"].shape[0] * args["a"].shape[1],
    "attention_fp8": _attention_fp8, "causal_conv3d": _causal_conv3d,
    # GEMMs with a fused epilogue (GELU; the gated residual): the GEMM's 2 M N K, the epilogue 0
    "linear_gelu": gemm_like_flops, "linear_gated_residual": gemm_like_flops,
}
_GEMM_NAME = re.compile(r"linear|mm|gemm")
_EXTRA_ATEN = {aten._addmm_activation: "addmm"}  # cuBLASLt epilogue: the addmm it fuses


def op_flops(func, args, kwargs, out) -> tuple[int, str | None]:
    """(FLOPs, None) or (0, why) when no formula knows the op and it may compute."""
    packet = func.overloadpacket
    registry_key = getattr(aten, _EXTRA_ATEN[packet]) if packet in _EXTRA_ATEN else packet
    if registry_key in flop_registry:
        if packet in _EXTRA_ATEN:
            args = args[:3]  # (bias, mat1, mat2) of addmm
        return int(flop_registry[registry_key](*args, **kwargs, out_val=out)), None
    if func.namespace != "ltxengine":
        return 0, None
    bound = dict(zip((a.name for a in func._schema.arguments), args))
    bound.update(kwargs)
    writes = [t for a in func._schema.arguments if a.alias_info is not None and a.alias_info.is_write
              for t in _tensors(bound.get(a.name))]
    base = packet.__name__.split("_", 1)[1] if "_" in packet.__name__ else packet.__name__
    if base in CUSTOM_FLOPS:
        return int(CUSTOM_FLOPS[base](bound, writes)), None
    if _GEMM_NAME.search(base):
        return gemm_like_flops(bound, writes), None
    return 0, f"{func.namespace}::{packet.__name__} has no FLOP formula (counted 0)"


def _dtype(func, args) -> torch.dtype | None:
    """The dtype that sets an op's FLOP rate: its first floating tensor argument's."""
    for t in _tensors(args):
        if t.is_floating_point():
            return t.dtype
    return None


# -- attention as on a CUDA device --------------------------------------------------------------

def fake_tensors(model: torch.nn.Module, mode, device: torch.device) -> torch.nn.Module:
    """``model`` (on the meta device) with its parameters and buffers made fake tensors of ``mode``
    on ``device``, in place: the model a counted or traced call runs without any memory."""
    convert = mode.fake_tensor_converter.from_meta_and_device
    for module in model.modules():
        for k, p in module._parameters.items():
            if p is not None:
                module._parameters[k] = torch.nn.Parameter(convert(mode, p.data, device), requires_grad=False)
        for k, b in module._buffers.items():
            if b is not None:
                module._buffers[k] = convert(mode, b, device)
    return model


class CudaSdpa(TorchFunctionMode):
    """F.scaled_dot_product_attention -> the kernel torch's SDPA dispatch picks on Hopper (see the
    module docstring), so a trace on CPU fake tensors counts what a GPU launches."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        return self.sdpa(*args, **kwargs)

    @staticmethod
    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        q, k, v = query, key, value
        if attn_mask is not None and attn_mask.dtype == torch.bool:  # as torch: bool -> additive float
            attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask.logical_not(), -math.inf)
        d = q.shape[-1]
        if attn_mask is None and q.dtype in (torch.bfloat16, torch.float16) and d <= 256 and d % 8 == 0:
            return aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, scale=scale)[0]
        if attn_mask is not None:
            attn_mask = attn_mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        return aten._scaled_dot_product_efficient_attention(q, k, v, attn_mask, False, dropout_p, is_causal,
                                                            scale=scale)[0]


class AssumeScalars(TorchDispatchMode):
    """Reads every data-dependent scalar (``.item()``, ``bool(t)``) as 1 / True, which fake tensors
    cannot answer. Only for setup code whose questions have that answer (e.g. "is this all-ones
    text mask all ones?"); the counted step runs without it."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is aten._local_scalar_dense.default:
            return True if args[0].dtype == torch.bool else 1
        return func(*args, **(kwargs or {}))


# -- the trace -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpRow:
    """One dispatched op: which, where from, and what it costs."""

    op: str  # e.g. aten.addmm.default, ltxengine.triton_ada_norm.default
    site: str  # module path with block indices as *, e.g. transformer_blocks.*.ff.net.0.proj
    block: int | None  # the transformer block index the site lies in (None: outside the blocks)
    launches: int
    flops: int
    read_bytes: int
    write_bytes: int
    dtype: torch.dtype | None

    @property
    def bytes(self) -> int:
        return self.read_bytes + self.write_bytes

    def seconds(self, ceiling: Ceiling) -> float:
        """Roofline time on ``ceiling``, launch overhead excluded."""
        compute = self.flops / ceiling.flops_per_s(self.dtype) if self.flops else 0.0
        return max(compute, self.bytes / ceiling.bandwidth)

    def floor_seconds(self, ceiling: Ceiling) -> float:
        return self.flops / ceiling.flops_per_s(self.dtype) if self.flops else 0.0


BLOCKS = "transformer_blocks"
_BLOCK = re.compile(rf"^{BLOCKS}\.(\d+)(?=\.|$)")


def normalize_site(path: str) -> tuple[str, int | None]:
    """("transformer_blocks.*.ff.net.0.proj", 3) for "transformer_blocks.3.ff.net.0.proj": only the
    block index becomes *, so the blocks add up and the layers inside stay apart."""
    m = _BLOCK.match(path)
    return _BLOCK.sub(f"{BLOCKS}.*", path) or "(top)", int(m.group(1)) if m else None


class Counter(TorchDispatchMode):
    """Records an OpRow per dispatched op; ``sites`` follows the module stack through hooks."""

    def __init__(self):
        super().__init__()
        self.rows: list[OpRow] = []
        self.stack: list[str] = [""]
        self.zero_launch_ops: set[str] = set()
        self.unknown_flops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.namespace == "prim" or (not func._schema.returns and not any(
                a.is_write for a in func._schema.arguments)):
            return out
        site, block = normalize_site(self.stack[-1])
        if zero_launch(func):
            self.zero_launch_ops.add(str(func.overloadpacket))
            self.rows.append(OpRow(str(func), site, block, 0, 0, 0, 0, None))
            return out
        flops, unknown = op_flops(func, args, kwargs, out)
        if unknown:
            self.unknown_flops.add(unknown)
        read, written = moved_bytes(func, args, kwargs, out)
        self.rows.append(OpRow(str(func), site, block, 1, flops, read, written, _dtype(func, args)))
        return out

    def hook(self, model: torch.nn.Module) -> list:
        """Global module hooks that push / pop the path of each submodule of ``model`` it calls.
        Global, not per module: a module's own hooks would change what it runs (the models fuse a
        linear into the op after it only when the layer has no hooks: models/transformer.fusable)."""
        names = {id(m): name for name, m in model.named_modules() if name}

        def enter(module, args) -> None:  # returns None: the inputs stay as they are
            if id(module) in names:
                self.stack.append(names[id(module)])

        def leave(module, args, out) -> None:  # returns None: the output stays as it is
            if id(module) in names:
                self.stack.pop()

        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        return [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]


@dataclass(frozen=True)
class Trace:
    rows: tuple[OpRow, ...]
    zero_launch_ops: tuple[str, ...]
    unknown_flops: tuple[str, ...]


def count(fn, model: torch.nn.Module | None = None) -> Trace:
    """Run ``fn()`` (under no_grad) with the counter and CudaSdpa; sites from ``model``'s modules.
    Call it inside the FakeTensorMode that ``fn``'s tensors belong to to compute nothing."""
    counter = Counter()
    handles = counter.hook(model) if model is not None else []
    try:
        with torch.no_grad(), CudaSdpa(), counter:
            fn()
    finally:
        for h in handles:
            h.remove()
    return Trace(tuple(counter.rows), tuple(sorted(counter.zero_launch_ops)), tuple(sorted(counter.unknown_flops)))


# -- sums ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Totals:
    launches: int
    flops: int
    bytes: int
    seconds: float  # roofline, launches free (CUDA graph replay)
    floor_seconds: float  # FLOPs at peak only

    def eager_seconds(self, launch_us: float = LAUNCH_US) -> float:
        return self.seconds + self.launches * launch_us * 1e-6

    @property
    def ratio(self) -> float:
        return self.seconds / self.floor_seconds if self.floor_seconds else math.inf


def totals(rows, ceiling: Ceiling) -> Totals:
    rows = list(rows)
    return Totals(sum(r.launches for r in rows), sum(r.flops for r in rows), sum(r.bytes for r in rows),
                  sum(r.seconds(ceiling) for r in rows), sum(r.floor_seconds(ceiling) for r in rows))


def group(rows, key) -> dict[str, list[OpRow]]:
    groups = defaultdict(list)
    for r in rows:
        if r.launches:
            groups[key(r)].append(r)
    return dict(groups)


def launches_per_block(rows) -> dict[int, int]:
    per = defaultdict(int)
    for r in rows:
        if r.block is not None:
            per[r.block] += r.launches
    return dict(sorted(per.items()))
