"""bench/roofline.py and its counter: the counts of a hand-computed case exactly, and the tool end to
end on tiny configs of both families and every implementation (fake tensors: nothing is computed)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from bench import roofline as R
from bench import roofline_count as rc
from bench import roofline_report as report

ROOT = Path(__file__).resolve().parents[2]
BF16 = 2  # bytes per element
# a ceiling with round numbers, so the expected times are plain arithmetic
UNIT = rc.Ceiling("unit", bf16_flops=1e12, bandwidth=1e9, fp32_flops=1e11)


def _trace(fn):
    mode = FakeTensorMode()
    with mode:
        return rc.count(fn(mode))


def _launching(trace):
    return [r for r in trace.rows if r.launches]


def test_linear_counts_one_gemm_with_its_bytes_and_flops():
    def run(mode):
        x = torch.empty(2, 8, 16, dtype=torch.bfloat16)  # M = 16 rows, K = 16
        w, b = torch.empty(32, 16, dtype=torch.bfloat16), torch.empty(32, dtype=torch.bfloat16)  # N = 32
        return lambda: F.linear(x, w, b)

    trace = _trace(run)
    (gemm,) = _launching(trace)
    assert gemm.op == "aten.addmm.default" and gemm.launches == 1
    assert gemm.flops == 2 * 16 * 32 * 16
    assert gemm.read_bytes == (2 * 8 * 16 + 32 * 16 + 32) * BF16 and gemm.write_bytes == 16 * 32 * BF16
    assert {"aten.t", "aten.view"} <= set(trace.zero_launch_ops)  # the reshapes around the GEMM launch nothing
    t = rc.totals(trace.rows, UNIT)
    assert t.seconds == pytest.approx(max(16384 / 1e12, 2624 / 1e9))  # memory-bound: 2624 bytes at 1 GB/s
    assert t.eager_seconds() == pytest.approx(t.seconds + rc.LAUNCH_US * 1e-6)


def test_attention_is_one_kernel_as_on_a_gpu():
    b, h, s, d, text = 2, 2, 8, 8, 4

    def run(mode):
        q, k, v = (torch.empty(b, h, s, d, dtype=torch.bfloat16) for _ in range(3))
        kt, vt = (torch.empty(b, h, text, d, dtype=torch.bfloat16) for _ in range(2))
        bias = torch.zeros(b, 1, 1, text, dtype=torch.bfloat16)
        return lambda: (F.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, kt, vt, bias))

    flash, efficient = [r for r in _launching(_trace(run)) if "scaled_dot_product" in r.op]
    assert flash.op == "aten._scaled_dot_product_flash_attention.default"  # no mask, bf16: flash
    assert flash.flops == 4 * b * h * s * s * d
    # q, k, v read; the output and its fp32 log-sum-exp written (the RNG seeds are not device traffic)
    assert flash.read_bytes == 3 * b * h * s * d * BF16
    assert flash.write_bytes == b * h * s * d * BF16 + b * h * s * 4
    assert efficient.op == "aten._scaled_dot_product_efficient_attention.default"  # a mask: memory-efficient
    assert efficient.flops == 4 * b * h * s * text * d
    # the broadcast mask is read once per distinct element (b x text), not per head and query
    assert efficient.read_bytes == (b * h * s * d + 2 * b * h * text * d + b * text) * BF16
    assert efficient.write_bytes == b * h * s * d * BF16


def test_custom_and_inplace_ops_read_and_write_what_their_schema_says():
    from ltxengine.ops import FUSED_OPS, library

    fields, _ = library.build("triton", FUSED_OPS)

    def run(mode):
        x, y = torch.empty(2, 8, 32, dtype=torch.bfloat16), torch.empty(2, 8, 32, dtype=torch.bfloat16)
        gate = torch.empty(2, 1, 32, dtype=torch.bfloat16)
        return lambda: (fields["gated_residual"](x, y, gate), x.add_(y), torch.empty(4).copy_(torch.empty(4)))

    rows = _launching(_trace(run))
    fused, add, copy = rows[0], rows[1], rows[-1]
    assert fused.op == "ltxengine.triton_gated_residual.default" and fused.flops == 0
    assert fused.read_bytes == (2 * 2 * 8 * 32 + 2 * 32) * BF16 and fused.write_bytes == 2 * 8 * 32 * BF16
    assert add.op == "aten.add_.Tensor" and add.read_bytes == 2 * 512 * BF16 and add.write_bytes == 512 * BF16
    assert copy.op == "aten.copy_.default" and copy.read_bytes == 16 and copy.write_bytes == 16


def test_fused_gemm_without_a_formula_is_counted_as_the_gemm_it_reads():
    x, w, out = torch.empty(3, 5, 16), torch.empty(32, 16), torch.empty(3, 5, 32)
    assert rc.gemm_like_flops({"x": x, "weight": w, "bias": None}, [out]) == 2 * 15 * 32 * 16
    assert rc.gemm_like_flops({"x": x, "scale": torch.empty(16)}, [out]) == 0


def test_time_is_the_slower_of_compute_and_memory_at_the_dtype_rate():
    row = rc.OpRow("aten.mm.default", "(top)", None, 1, flops=10 ** 9, read_bytes=10 ** 5, write_bytes=0,
                   dtype=torch.float32)
    assert row.seconds(UNIT) == pytest.approx(1e9 / 1e11)  # fp32: no tensor cores
    fp8 = rc.OpRow("aten._scaled_mm.default", "(top)", None, 1, 10 ** 9, 10 ** 9, 0, torch.float8_e4m3fn)
    assert fp8.seconds(UNIT) == pytest.approx(1.0) and fp8.floor_seconds(UNIT) == pytest.approx(1e9 / 2e12)
    assert rc.H100_SXM.fp8_flops == 2 * 989e12 and rc.H200.bandwidth == 4.8e12


def test_sites_name_blocks_with_a_star():
    assert rc.normalize_site("transformer_blocks.12.attn1.to_q") == ("transformer_blocks.*.attn1.to_q", 12)
    assert rc.normalize_site("transformer_blocks.0.ff.net.2") == ("transformer_blocks.*.ff.net.2", 0)
    assert rc.normalize_site("proj_in") == ("proj_in", None)
    assert rc.normalize_site("") == ("(top)", None)


@pytest.fixture(scope="module")
def tiny_cases():
    return R.cases(["tiny-2b", "tiny-ltx2"], R.SMOKE_SIZES, ["guided"], R.IMPLS, log=lambda *a: None)


def test_tiny_configs_of_both_families_trace_for_every_implementation(tiny_cases):
    by = {(c.model, c.impl): c for c in tiny_cases}
    assert len(by) == 2 * len(R.IMPLS) and {c.batch for c in tiny_cases if c.model == "tiny-ltx2"} == {4}
    for (model, impl), c in by.items():
        per_block = rc.launches_per_block(c.trace.rows)
        assert sorted(per_block) == list(range(c.layers)), (model, impl)
        assert len(set(per_block.values())) == 1, (model, impl, per_block)  # every block launches the same
        assert any(r.site.startswith("transformer_blocks.*.attn1") for r in c.trace.rows), (model, impl)
        assert rc.totals(c.trace.rows, rc.H100_SXM).floor_seconds > 0
    for model in ("tiny-2b", "tiny-ltx2"):
        auto, torch_ = by[(model, "auto")].trace, by[(model, "torch")].trace
        assert any(r.op.startswith("ltxengine.triton_") for r in auto.rows)  # the fused kernels are traced
        assert not any(r.op.startswith("ltxengine.") for r in torch_.rows)
        assert rc.totals(auto.rows, rc.H100_SXM).launches < rc.totals(torch_.rows, rc.H100_SXM).launches
        # the same GEMMs and attentions whatever the elementwise backend
        assert rc.totals(auto.rows, rc.H100_SXM).flops == rc.totals(torch_.rows, rc.H100_SXM).flops


@pytest.mark.parametrize("model,kinds", [("tiny-2b", 1), ("tiny-ltx2", 6)])
def test_packed_modulation_tables_take_their_adds_out_of_every_block(model, kinds, monkeypatch):
    """models/tables.py: each kind of table + temb add runs once per forward, not once per block:
    ``kinds`` launches fewer per block (LTX-Video: scale_shift_table; LTX-2.0: video, audio and the
    a2v / v2a tables' scale-shift and gate rows), the same ``kinds`` launches at the top level."""
    def traced():
        return R.trace_case(model, "s", (160, 96, 17), 1, "triton", False)
    packed = traced()
    monkeypatch.setattr("ltxengine.models.packing.pack_tables", lambda m: 0)  # every block adds its own
    per_block = traced()
    layers = packed.layers
    assert layers >= 2
    blocks = [rc.launches_per_block(c.trace.rows) for c in (packed, per_block)]
    assert all(blocks[0][i] == blocks[1][i] - kinds for i in range(layers))
    launches = [rc.totals(c.trace.rows, rc.H100_SXM).launches for c in (packed, per_block)]
    assert launches[0] == launches[1] - kinds * (layers - 1)


def test_fused_gemms_of_the_triton_backend_count_the_gemms_they_replace():
    # linear_gelu / linear_gated_residual are custom ops: their FLOPs come from CUSTOM_FLOPS, not flop_counter
    triton, torch_ = (R.trace_case("tiny-2b", "s", (160, 96, 17), 1, impl, False).trace for impl in ("triton", "torch"))
    fused = {r.op for r in triton.rows if r.op.startswith("ltxengine.triton_linear")}
    assert fused == {"ltxengine.triton_linear_gelu.default", "ltxengine.triton_linear_gated_residual.default"}
    assert not triton.unknown_flops
    assert rc.totals(triton.rows, rc.H100_SXM).flops == rc.totals(torch_.rows, rc.H100_SXM).flops > 0


def test_fp8_linear_is_a_quantization_and_a_scaled_mm_at_the_fp8_rate():
    ops = R.auto_ops_as_on_cuda()  # quantize_fp8: CUDA kernel; scaled_mm: cuBLASLt (torch._scaled_mm)

    def run(mode):
        x = torch.empty(2, 8, 16, dtype=torch.bfloat16)  # M = 16 tokens, K = 16
        w = torch.empty(32, 16, dtype=torch.float8_e4m3fn)  # N = 32
        scale, bias = torch.empty((), dtype=torch.float32), torch.empty(32, dtype=torch.bfloat16)
        return lambda: ops.fp8_linear(x, w, scale, bias)

    quantize, expand, mm = _launching(_trace(run))
    assert quantize.op == "ltxengine.cuda_quantize_fp8.default" and quantize.flops == 0
    assert quantize.read_bytes == 16 * 16 * BF16 and quantize.write_bytes == 16 * 16 + 16 * 4  # e4m3 + row scales
    # cuBLASLt takes two row-wise vectors: the per-tensor weight scale is expanded to (1, N) first
    assert expand.op == "aten.clone.default" and expand.write_bytes == 32 * 4
    assert mm.op == "aten._scaled_mm.default" and mm.flops == 2 * 16 * 32 * 16 and mm.dtype == torch.float8_e4m3fn
    assert mm.read_bytes == 16 * 16 + 32 * 16 + 16 * 4 + 32 * 4 + 32 * BF16 and mm.write_bytes == 16 * 32 * BF16
    assert mm.floor_seconds(UNIT) == pytest.approx(16384 / 2e12)  # fp8 peak: twice bf16


def test_auto_fp8_runs_the_policys_targets_in_fp8(monkeypatch):
    # 7 blocks: fp8-scaled-mm converts block 1 only (the first block and the last five stay bf16)
    monkeypatch.setitem(R.M.TRANSFORMERS, "tiny-2b-7", dataclasses.replace(R.M.TRANSFORMERS["tiny-2b"], num_layers=7))
    auto, fp8 = (R.trace_case("tiny-2b-7", "s", (160, 96, 17), 2, impl, True).trace for impl in ("auto", "auto-fp8"))
    mms = [r for r in fp8.rows if r.op == "aten._scaled_mm.default"]
    # attn1 q/k/v packed (one GEMM) and out, attn2 q / out (its k/v read the context projected once per
    # generation), ff in / out; each GEMM quantizes its input once
    assert len(mms) == 6 and {r.block for r in mms} == {1} and not fp8.unknown_flops
    # attn1's q/k/v and ff's up-projection inputs are quantized by the adaLNs that write them (ada_norm_fp8
    # ops), attn2's q (the raw stream) by attn1's residual (gated_residual_fp8); the two output projections'
    # by quantize_fp8 / gelu_quantize_fp8
    assert len([r for r in fp8.rows if r.op.endswith("quantize_fp8.default")]) == 3
    norm8 = [r for r in fp8.rows if "ada_norm_fp8" in r.op]
    assert len(norm8) == 2 and {r.block for r in norm8} == {1} and not any("ada_norm_fp8" in r.op for r in auto.rows)
    res8 = [r for r in fp8.rows if "gated_residual_fp8" in r.op]
    assert len(res8) == 1 and res8[0].block == 1 and not any("gated_residual_fp8" in r.op for r in auto.rows)
    c = R.M.TRANSFORMERS["tiny-2b"]
    tokens = 2 * math.prod(R.T.latent_grid(c, R.geometry("tiny-2b-7", (160, 96, 17))))  # batch 2
    qkv = [r for r in mms if r.site == "transformer_blocks.*.attn1"]
    assert len(qkv) == 1 and qkv[0].flops == 2 * tokens * (3 * c.inner_dim) * c.inner_dim
    assert not any("scaled_mm" in r.op for r in auto.rows)
    t_auto, t_fp8 = rc.totals(auto.rows, UNIT), rc.totals(fp8.rows, UNIT)
    assert t_fp8.flops == t_auto.flops  # the same GEMMs, block 1's at the fp8 rate
    fp8_flops = sum(r.flops for r in mms)
    assert t_fp8.floor_seconds == pytest.approx(t_auto.floor_seconds - fp8_flops / 2e12)


def test_auto_fp8_head_gates_write_only_their_to_outs_fp8_input(monkeypatch):
    # LTX-2.3, 7 blocks: fp8-scaled-mm converts block 1 only; there each of the six gated attentions' head
    # gates writes its fp8 to_out's e4m3 input and row scales (head_gate_fp8), not the bf16 gated output
    # for a quantizer to read back
    cfg = dataclasses.replace(R.M.TRANSFORMERS["tiny-ltx2.3"], num_layers=7)
    monkeypatch.setitem(R.M.TRANSFORMERS, "tiny-ltx2.3-7", cfg)
    auto, fp8 = (R.trace_case("tiny-ltx2.3-7", "s", (160, 96, 17), 1, impl, False).trace
                 for impl in ("auto", "auto-fp8"))
    gate8 = [r for r in fp8.rows if "head_gate_fp8" in r.op]
    assert len(gate8) == 6 and {r.block for r in gate8} == {1} and not fp8.unknown_flops
    assert not any("head_gate_fp8" in r.op for r in auto.rows)
    assert not any(r.op == "ltxengine.triton_head_gate.default" and r.block == 1 for r in fp8.rows)
    plain = {r.site: r for r in auto.rows if r.op == "ltxengine.triton_head_gate.default" and r.block == 1}
    for r in gate8:  # the same reads (x, logits); bf16 writes halved, plus one fp32 scale per row
        p = plain[r.site]
        elements, scales = p.write_bytes // 2, r.write_bytes - p.write_bytes // 2
        assert r.read_bytes == p.read_bytes and scales > 0 and scales % 4 == 0 and elements % (scales // 4) == 0
        assert not any("quantize_fp8" in q.op and q.site == r.site and q.write_bytes == p.write_bytes // 2
                       for q in fp8.rows)


def test_tables_are_marked_as_estimates(tiny_cases):
    files = report.files(tiny_cases, [rc.H100_SXM, rc.H200])
    assert set(files) == {"roofline_summary.md", "roofline_tiny-2b.md", "roofline_tiny-ltx2.md"}
    for text in files.values():
        assert report.MARK in text and "us per launch" in text
    assert "| tiny-ltx2 | 160x96x17 | 4 (guided) | auto |" in files["roofline_summary.md"]
    assert "Per site" in files["roofline_tiny-ltx2.md"] and "transformer_blocks.*.ff" in files["roofline_tiny-2b.md"]


def test_calibration_puts_measured_next_to_estimated(tmp_path):
    record = {"op": "transformer_step", "impl": "ltxengine-auto", "status": "ok", "smoke": False, "dtype": "bfloat16",
              "median_ms": 2.0, "env": {"gpu": "NVIDIA H200"},
              "dims": {"model": "tiny-2b", "width": 160, "height": 96, "frames": 17, "batch": 2}}
    skipped = [dict(record, impl="diffusers+compile"), dict(record, status="failed"), dict(record, smoke=True)]
    pairs = R.calibration([record, *skipped], log=lambda *a: None)
    assert len(pairs) == 1 and pairs[0][2] is rc.H200 and pairs[0][1]["batch"] == 2
    text = report.calibration_md(pairs)
    assert "| H200 | tiny-2b | 160x96x17 | 2 | auto | 2.0 |" in text
    # estimates made beforehand (gpu_session.sh prepare) are used as they are, not traced again
    known = dict(pairs[0][1], ceilings={"H200": {"seconds": 1e-3, "eager_seconds": 4e-3, "floor_seconds": 5e-4}})
    (again,) = R.calibration([record], [known], log=lambda *a: None)
    assert again[1] is known
    assert "| 2.0 | 4.00 | 1.00 | 0.50 | 0.50 |" in report.calibration_md([again])


def test_command_line_writes_the_tables_and_refuses_bad_options(tmp_path, capsys):
    out = tmp_path / "estimates.json"
    assert R.main(["--smoke", "--impls", "auto", "--batch", "1", "--out", str(tmp_path), "--json", str(out)]) == 0
    assert (tmp_path / "roofline_summary.md").read_text().startswith("# Roofline estimate")
    estimates = json.loads(out.read_text())
    assert [(e["model"], e["batch"], e["impl"]) for e in estimates] == [("tiny-2b", 1, "auto"),
                                                                         ("tiny-ltx2", 1, "auto")]
    assert set(estimates[0]["ceilings"]) == {"H100 SXM", "H200"}
    assert R.main(["--calibrate", str(tmp_path / "none.jsonl")]) == 2
    records = tmp_path / "records.jsonl"
    records.write_text("")  # no step measured: an empty table, and a missing estimates file is no error
    missing = str(tmp_path / "none.json")
    assert R.main(["--calibrate", str(records), "--estimates", missing, "--out", str(tmp_path)]) == 0
    assert "no measured bfloat16 step" in (tmp_path / "roofline_calibration.md").read_text()
    for argv, match in ((["--models", "nope"], "--models"), (["--sizes", "700x512x121"], "--sizes"),
                        (["--batch", "0"], "--batch"), (["--write", "--smoke"], "--write")):
        with pytest.raises(SystemExit):
            R.parse_args(argv)
        assert match in capsys.readouterr().err


def test_gpu_session_roofline_command_is_accepted(tmp_path):
    """The session's roofline stage parses with this script's options (test_gpu_session checks the others)."""
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_session.sh"), "--dry-run"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    (command,) = [line.split(" command: ", 1)[1] for line in r.stdout.splitlines() if " roofline budget=" in line]
    argv = shlex.split(command)
    assert argv[0] == sys.executable and argv[1] == "bench/roofline.py"
    args = R.parse_args(argv[2:])
    assert args.calibrate == f"{tmp_path}/results/scenario_transformer.jsonl" and args.out == f"{tmp_path}/results"
    assert args.estimates == ".gpu_session/roofline_estimates.json"  # written by `prepare`


def test_ltxengine_bench_runs_it_by_name(capsys):
    from ltxengine.cli import main

    assert main(["bench", "roofline", "--smoke", "--models", "tiny-2b", "--impls", "torch", "--batch", "1"]) == 0
    assert "| tiny-2b | 160x96x17 | 1 | torch |" in capsys.readouterr().out
