"""bench/scenario_multi_gpu.py on the CPU: its arguments and its dry run (the plan with the comm model's
prediction and the torchrun commands). Its ranks need torch.distributed and GPUs; `--smoke` runs them on
the CPU under torchrun (about a minute on 2 cores, so not in CI)."""

import pytest

from bench import comm_model as C
from bench import scenario_multi_gpu as MG


def test_dry_run_prints_the_plan_and_the_commands(capsys):
    assert MG.main(["--dry-run", "--models", "ltx2.3-22b", "--sizes", "1536x1024x121"]) == 0
    out = capsys.readouterr().out.splitlines()
    step = C.make_step("ltx2.3-22b", "1536x1024x121")
    assert out[0].startswith("step ltx2.3-22b 1536x1024x121 batch 1: 24576 video / 126 audio tokens")
    assert f"2: {C.predict(step, 1, 2)['serial'] * 1e3:.0f} ms" in out[0]
    assert out[1] == "generate ltx2-19b two-stage 1536x1024x121: 30 stage-1 steps, guidance groups 1"
    assert [line.split()[2] for line in out[2:]] == ["1", "2", "4", "8"]
    assert all(line.startswith("torchrun --nproc-per-node") for line in out[2:])


def test_smoke_defaults():
    args = MG.parse(["--smoke", "--dry-run"])
    assert args.models == list(MG.SMOKE_MODELS) and list(args.sizes) == ["128x128x9"] and args.steps == 2
    args = MG.parse(["--parts", "generate", "--sizes", "1280x704x97", "--steps", "8"])
    assert args.parts == ["generate"] and args.sizes["1280x704x97"].width == 1280 and args.steps == 8


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "1000x512x121"], "multiples of 64"),
    (["--sizes", "768x512"], "WIDTHxHEIGHTxFRAMES"),
    (["--parts", "decode"], "unknown name 'decode'"),
    (["--models", "nope"], "unknown name 'nope'"),
    (["--batch", "0"], "--batch must be >= 1, got 0"),
    (["--reps", "0"], "--reps must be >= 1, got 0"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        MG.parse(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
