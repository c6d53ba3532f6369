#!/usr/bin/env bash
# What to run on a lent GPU machine, in as few device calls as possible (each call <= 10 min).
#   bash bench/gpu_session.sh check   # build csrc/ for sm_90a, then every GPU-marked kernel test
#   bash bench/gpu_session.sh bench   # the op benchmarks; records under $OUT/results (or bench/results)
#   bash bench/gpu_session.sh scenarios 2b   # one model per call: 2b | 13b | ltx2-19b (transformer step),
#                                            # then ltxv-095 | ltx2 (VAE decode),
#                                            # generate ltxv-098 | ltxv-2b | ltx2-19b (end to end),
#                                            # graphs 2b | ltx2-19b (executor step latency, generation memory)
#   bash bench/gpu_session.sh scenarios fp8 2b   # fp8 vs bf16 step + fp8 quality: 2b | 13b | ltx2-19b
#   bash bench/gpu_session.sh scenarios fp8-quality 2b   # the quality part alone (fp8_quality.py)
# The machine's image has its own torch/triton (no registry): install ltxengine without deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${OUT:-bench}/results
case "${1:-}" in
  check)
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
    $PY -m pip install -q --no-deps --no-build-isolation -e .
    $PY -m pytest -q -m gpu tests/kernels tests/ops -p no:cacheprovider -rs
    ;;
  bench)
    mkdir -p "$RESULTS"
    for script in ops_qk_norm_rope ops_adaln ops_fp8_gemm ops_conv3d; do
      $PY "bench/$script.py" --out "$RESULTS" "${@:2}"
    done
    ;;
  scenarios)
    mkdir -p "$RESULTS"
    case "${2:?model name}" in
      ltxv-095|ltx2) $PY bench/scenario_vae_decode.py --out "$RESULTS" --models "$2" "${@:3}" ;;
      generate) $PY bench/scenario_generate.py --out "$RESULTS" --models "${3:?ltxv-098 | ltxv-2b | ltx2-19b}" "${@:4}" ;;
      graphs) $PY bench/scenario_graphs.py --out "$RESULTS" --models "${3:?2b | ltx2-19b}" "${@:4}" ;;
      fp8) $PY bench/scenario_fp8.py --out "$RESULTS" --models "${3:?2b | 13b | ltx2-19b}" "${@:4}" ;;
      fp8-quality) $PY bench/fp8_quality.py --out "$RESULTS" --models "${3:?2b | 13b | ltx2-19b}" "${@:4}" ;;
      *) $PY bench/scenario_transformer.py --out "$RESULTS" --models "$2" "${@:3}" ;;
    esac
    ;;
  *)
    echo "usage: bash bench/gpu_session.sh check|bench|scenarios MODEL [script options]" >&2
    exit 2
    ;;
esac
