#!/usr/bin/env bash
# What to run on a lent GPU machine. Device time is short (about 15 minutes a session, the machine's
# start included; 10 minutes a command), so the first call is ONE prepared run of at most 9 minutes:
#
#   here:        bash bench/gpu_session.sh prepare     # commit id + the diffusers wheel -> .gpu_session/
#   on the GPU:  bash bench/gpu_session.sh             # device run: carry [".gpu_session"], timeout_s 570
#   check here:  bash bench/gpu_session.sh --dry-run   # the stages, budgets and commands; runs nothing
#
# The session runs these stages in order of value. Each has a time budget; a stage's deadline is the
# sum of the budgets up to it, counted from the start, so a stage that hangs is stopped (SIGINT, then
# SIGKILL 10 s later) at its deadline and cannot eat the later stages' time, and a stage that ends
# early leaves its time to the next. A failed stage does not stop the rest.
#   env        GPU, driver, nvcc, python, torch, triton, diffusers versions, commit
#   install    the carried wheels; pip install --no-deps --no-build-isolation -e . (builds csrc/ for sm_90a)
#   tests      every GPU-marked test: each kernel (triton and cuda), the ops' backends, the executor's
#              CUDA graph capture/replay and memory (pytest -m gpu, junit file)
#   2b-step    one LTX-Video 2B transformer step, bf16: ltxengine (torch and auto kernels) vs diffusers eager
#   epilogue   the output projections with the gated residual in the GEMM's epilogue (Triton) against cuBLAS
#              + the residual pass "auto" runs today, at the 2B and d4096 shapes: whether they may join "auto"
#              (ops/linear_gated_residual.py; issue 24's 2B and LTX-2 goals on the roofline estimate)
#   2b-graphs  the 2B guided denoising step without executor, with the eager executor, with CUDA graphs
#   2b-fp8     the 2B step in fp8 (both policies) against bf16
#   ltx2-step  one LTX-2 19B transformer step, bf16: ltxengine vs diffusers eager
#   roofline   the roofline estimate (bench/roofline.py, fake tensors, CPU only) of the steps measured above,
#              written next to their measured times: roofline_calibration.md
# Results go to ${OUT:-bench}/results/ as they come (the device tool returns at most 8 files from $OUT):
# gpu_session_summary.txt (GPU, commit, the env stage's facts, one line per stage: status, seconds used,
# budget), gpu_session.log (every stage's output), gpu_tests.xml (junit), and the bench scripts' records
# (scenario_transformer.jsonl, ops_linear_epilogue.jsonl, scenario_graphs.jsonl, scenario_fp8.jsonl: each
# record carries the GPU name, versions and commit) and roofline_calibration.md: 8 files. Exit status 0 when every
# stage passed, else 1.
# GPU_SESSION_BUDGETS="15 120 ..." (seconds, one per stage) replaces the budgets; GPU_SESSION_DRY_RUN=1
# is --dry-run.
#
# Single steps, one device call each (the machine's image has its own torch/triton and no registry):
#   bash bench/gpu_session.sh check   # build csrc/ for sm_90a, then every GPU-marked test
#   bash bench/gpu_session.sh bench   # the op benchmarks; records under $OUT/results (or bench/results)
#   bash bench/gpu_session.sh scenarios 2b   # one model per call: 2b | 13b | ltx2-19b (transformer step),
#                                            # then ltxv-095 | ltx2 (VAE decode),
#                                            # generate ltxv-098 | ltxv-2b | ltx2-19b (end to end),
#                                            # graphs 2b | ltx2-19b (executor step latency, generation memory)
#   bash bench/gpu_session.sh scenarios fp8 2b   # fp8 vs bf16 step + fp8 quality: 2b | 13b | ltx2-19b
#   bash bench/gpu_session.sh scenarios fp8-quality 2b   # the quality part alone (fp8_quality.py)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${OUT:-bench}/results
PREPARED=.gpu_session         # made here by `prepare`, carried to the device machine
SITE=/tmp/gpu_session_site    # the carried wheels are installed here (the image has no registry)
LIMIT_S=540                   # the session's budgets add up to at most this (9 minutes)
TEST_DIRS="tests/kernels tests/ops tests/executor tests/quant"   # every folder with GPU-marked tests
EPILOGUE_SHAPES=ltxv-2b-attn-out,ltxv-2b-ff-down,d4096-attn-out,d4096-ff-down  # the gated residual's GEMMs

STAGES=(env install tests 2b-step epilogue 2b-graphs 2b-fp8 ltx2-step roofline)
# Guesses until a session has run (nothing has been timed on a GPU yet): the summary records the
# seconds each stage used, to set these from. roofline joins the records with the estimates made by
# `prepare` (a second); were they missing it traces the 6 steps itself (about 30 s of CPU).
BUDGETS=(15 120 130 50 70 45 40 55 15)

q() { printf '%q' "$1"; }

stage_command() {
  local r; r=$(q "$RESULTS")
  case $1 in
    env) echo "set -o pipefail; bash bench/gpu_session.sh facts 2>&1 | tee -a $r/gpu_session_summary.txt" ;;
    install) echo "bash bench/gpu_session.sh wheels && $PY -m pip install -q --no-deps --no-build-isolation -e . && $PY -c 'import ltxengine._C as c; print(\"built\", c.__file__)'" ;;
    # pytest is started with Python's SIGINT handler restored (a device run may start us with SIGINT
    # ignored): stopped at its deadline, it still writes the junit file and the failures so far.
    tests) echo "$PY -c 'import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); sys.exit(pytest.main(sys.argv[1:]))' -m gpu $TEST_DIRS -p no:cacheprovider -v -rfEs --durations=25 --continue-on-collection-errors --junitxml=$r/gpu_tests.xml" ;;
    2b-step) echo "$PY bench/scenario_transformer.py --out $r --models 2b --batch 2 --no-compile --reps 10 --warmup 2" ;;
    epilogue) echo "$PY bench/ops_linear_epilogue.py --out $r --shapes $EPILOGUE_SHAPES --reps 20 --warmup 3" ;;
    2b-graphs) echo "$PY bench/scenario_graphs.py --out $r --models 2b --parts step --reps 10 --warmup 2 --profile-steps 2" ;;
    2b-fp8) echo "$PY bench/scenario_fp8.py --out $r --models 2b --batch 2 --no-quality --reps 10 --warmup 2" ;;
    ltx2-step) echo "$PY bench/scenario_transformer.py --out $r --models ltx2-19b --batch 2 --no-compile --reps 5 --warmup 1" ;;
    roofline) echo "$PY bench/roofline.py --calibrate $r/scenario_transformer.jsonl --estimates $PREPARED/roofline_estimates.json --out $r" ;;
    *) echo "gpu_session: no stage $1" >&2; return 2 ;;
  esac
}

load_budgets() {
  if [ -n "${GPU_SESSION_BUDGETS:-}" ]; then
    read -r -a BUDGETS <<<"$GPU_SESSION_BUDGETS"
  fi
  local b total=0
  if [ "${#BUDGETS[@]}" -ne "${#STAGES[@]}" ]; then
    echo "gpu_session: GPU_SESSION_BUDGETS must give ${#STAGES[@]} budgets (${STAGES[*]}), got '${BUDGETS[*]}'" >&2
    exit 2
  fi
  for b in "${BUDGETS[@]}"; do
    if ! [[ $b =~ ^[1-9][0-9]*$ ]]; then
      echo "gpu_session: budgets must be positive whole seconds, got '$b'" >&2
      exit 2
    fi
    total=$((total + b))
  done
  if [ "$total" -gt "$LIMIT_S" ]; then
    echo "gpu_session: the budgets add up to $total s, more than the session's $LIMIT_S s" >&2
    exit 2
  fi
}

commit_id() {  # a device machine gets the working tree without .git: `prepare` wrote the id down
  git rev-parse HEAD 2>/dev/null || cat "$PREPARED/commit" 2>/dev/null || echo unknown
}

plan() {
  local i deadline=0
  echo "gpu_session: ${#STAGES[@]} stages, $(IFS=+; echo $((${BUDGETS[*]}))) s of budget (limit $LIMIT_S s); results -> $RESULTS"
  for i in "${!STAGES[@]}"; do
    deadline=$((deadline + BUDGETS[i]))
    echo "stage $((i + 1)) ${STAGES[i]} budget=${BUDGETS[i]}s deadline=${deadline}s command: $(stage_command "${STAGES[i]}")"
  done
}

now_ms() { date +%s%3N; }

run_stage() {  # name, milliseconds until its deadline, log -> the stage's status word(s)
  local name=$1 left_ms=$2 log=$3 cmd rc
  cmd=$(stage_command "$name")
  if [ "$left_ms" -lt 100 ]; then
    echo "skipped (no time left)"
    return
  fi
  echo "=== $name ($((left_ms / 1000)) s to its deadline): $cmd" >>"$log"
  # Straight into the log, not through a pipe: a process the stage leaves behind would hold a pipe
  # open and keep the session waiting past the deadline.
  timeout -s INT -k 10 "$((left_ms / 1000)).$(printf '%03d' $((left_ms % 1000)))" bash -c "$cmd" >>"$log" 2>&1
  rc=$?
  case $rc in
    0) echo ok ;;
    124|137) echo "timeout" ;;
    *) echo "failed rc=$rc" ;;
  esac
}

session() {
  load_budgets
  if [ "${DRY_RUN:-0}" = 1 ]; then
    plan
    return 0
  fi
  mkdir -p "$RESULTS"
  local summary=$RESULTS/gpu_session_summary.txt log=$RESULTS/gpu_session.log
  local i start t0 used status deadline=0 failures=0 gpu
  export PYTHONUNBUFFERED=1 LTXENGINE_COMMIT=${LTXENGINE_COMMIT:-$(commit_id)}
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  {
    echo "gpu_session $(date -u +%Y-%m-%dT%H:%M:%SZ) gpu=${gpu:-none} commit=$LTXENGINE_COMMIT"
    plan | sed 's/^/# /'
  } | tee -a "$summary"
  start=$(now_ms)
  for i in "${!STAGES[@]}"; do
    deadline=$((deadline + BUDGETS[i] * 1000))
    t0=$(now_ms)
    status=$(run_stage "${STAGES[i]}" $((start + deadline - t0)) "$log")
    used=$(( ($(now_ms) - t0) / 1000 ))
    [ "$status" = ok ] || failures=$((failures + 1))
    printf '%-10s %-16s %4d s used of %4d s budget\n' "${STAGES[i]}" "$status" "$used" "${BUDGETS[i]}" \
      | tee -a "$summary"
  done
  echo "total $(( ($(now_ms) - start) / 1000 )) s, $failures stage(s) not ok; results in $RESULTS" | tee -a "$summary"
  [ "$failures" -eq 0 ]
}

facts() {
  echo "commit: $(commit_id)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  if command -v nvcc >/dev/null; then nvcc --version | tail -n 2; else echo "nvcc: not found"; fi
  "$PY" - <<'EOF'
import importlib, platform
import torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| cudnn", torch.backends.cudnn.version())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs",
          round(p.total_memory / 2**30, 1), "GiB")
for name in ("triton", "diffusers", "transformers", "safetensors", "av", "pytest"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:  # noqa: BLE001 - a fact to record, not a failure
        print(name, "unavailable:", type(e).__name__, e)
EOF
}

wheels() {  # install what `prepare` carried (the image has no diffusers) into $SITE
  local found=("$PREPARED"/wheels/*.whl)
  if [ ! -e "${found[0]}" ]; then
    echo "no carried wheels in $PREPARED/wheels (run 'bash bench/gpu_session.sh prepare' here and carry $PREPARED)"
    return 0
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "${found[@]}"
}

prepare() {  # here, before the device call: what the bare device machine cannot get by itself
  local exclude pin
  mkdir -p "$PREPARED/wheels"
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qxF "/$PREPARED/" "$exclude" 2>/dev/null || echo "/$PREPARED/" >>"$exclude"
  if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "$(git rev-parse HEAD)+uncommitted" >"$PREPARED/commit"
  else
    git rev-parse HEAD >"$PREPARED/commit"
  fi
  pin=$(grep -o 'diffusers==[0-9][0-9.]*' pyproject.toml | head -n 1)
  rm -f "$PREPARED"/wheels/*.whl
  # diffusers is pure Python; its requirements are in the image (importlib_metadata is optional on 3.12)
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$PREPARED/wheels" "$pin"
  # the roofline estimates of the steps the session measures (the roofline stage joins them with the
  # measured times): traced here, on fake tensors, so the device does not spend its minutes on them
  "$PY" bench/roofline.py --models 2b,ltx2-19b --sizes 768x512x121 --batch 2 --gpu h100 \
    --json "$PREPARED/roofline_estimates.json" >/dev/null \
    || echo "prepare: roofline estimates failed; the device's roofline stage will trace them itself"
  echo "prepared: commit $(cat "$PREPARED/commit"), $(ls "$PREPARED/wheels")"
}

DRY_RUN=${GPU_SESSION_DRY_RUN:-0}
case "${1:-}" in
  ""|session) session ;;
  --dry-run) DRY_RUN=1 session ;;
  facts) facts ;;
  wheels) wheels ;;
  prepare) prepare ;;
  check)
    set -e
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
    $PY -m pip install -q --no-deps --no-build-isolation -e .
    # shellcheck disable=SC2086
    $PY -m pytest -q -m gpu $TEST_DIRS -p no:cacheprovider -rs
    ;;
  bench)
    set -e
    mkdir -p "$RESULTS"
    for script in ops_qk_norm_rope ops_adaln ops_fp8_gemm ops_conv3d ops_linear_epilogue ops_gguf_linear; do
      $PY "bench/$script.py" --out "$RESULTS" "${@:2}"
    done
    ;;
  scenarios)
    set -e
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
    echo "usage: bash bench/gpu_session.sh [--dry-run | prepare | facts | check | bench | scenarios MODEL [script options]]" >&2
    exit 2
    ;;
esac
