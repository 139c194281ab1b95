"""`playground train --engine trl`: TRL's DPOTrainer on our pairs and settings, one process
and two under `accelerate launch` (gloo on CPU), writing the checkpoint folder the app attaches."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli.common import run_cli
from cli.train import main as train_main
from playground.core.errors import PlaygroundError
from playground.models.checkpoints import CheckpointRecord, attach_checkpoint, pairs_sha256, read_record
from playground.models.roles import ModelsConfig, adapter_params, load_models
from playground.training.dpo import DPOConfig
from playground.training.trl_engine import check_loss, require_deepspeed_if_asked, require_trl, train_with_trl
from tests.test_dpo import separable_pairs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
# The 2-process run's per-step loss, reward margin and gradient norm against the 1-process run's:
# the same adapter, data order and gradient (DDP averages two half-batch means), so only float
# summation order differs (measured on CPU: loss ≤ 3e-7, margin ≤ 8e-7, grad norm ≤ 1e-7 over 4 steps).
DDP_TOLERANCE = 1e-5


def test_one_process_run_writes_a_checkpoint_the_app_attaches(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = separable_pairs(10)
    torch.manual_seed(0)
    models = load_models(ModelsConfig(sft=str(tiny_model_dir), device="cpu"))
    result = train_with_trl(models, pairs, DPOConfig(steps=3, lr=5e-3, batch_size=4), tmp_path / "ckpts")
    assert (result.train_pairs, result.heldout_pairs, len(result.steps)) == (8, 2, 3)
    assert result.steps[-1]["loss"] < result.steps[0]["loss"] - 0.02  # it learned the separable pairs
    assert result.heldout_before.accuracy == 0.5 and result.heldout_after.accuracy == 1.0

    record = read_record(result.checkpoint)
    assert record["engine"] == "trl" and record["processes"] == 1
    assert record["parent"] is None and record["hyperparameters"]["total_steps"] == 3
    assert record["pairs"]["sha256"] == pairs_sha256(pairs) and record["pairs"]["heldout"] == 2
    assert record["versions"]["trl"] and record["heldout"]["after"]["accuracy"] == 1.0
    for step in record["steps"]:
        assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected", "grad_norm", "learning_rate", "epoch"} <= set(step)
        assert step["pairs"] == 4
    assert [s["loss"] for s in record["steps"]] == [s["loss"] for s in result.steps]
    assert CheckpointRecord.parse(record).steps == 3

    # A fresh app process attaches the folder, and the attached adapter holds the trained weights.
    served = load_models(ModelsConfig(sft=str(tiny_model_dir), device="cpu"))
    role = attach_checkpoint(served, result.checkpoint)
    attached = {n.replace(f".{role.adapter}.", ".default."): p for n, p in served.policy.model.named_parameters()
                if f".{role.adapter}." in n}
    trained = adapter_params(models.policy.model)
    assert set(attached) == set(trained)
    assert all(torch.equal(attached[n], trained[n]) for n in trained)
    assert any(float(p.detach().abs().max()) > 0 for n, p in trained.items() if "lora_B" in n)

    # Training on from it: the reference stays the SFT model (TRL's own "ref" copy of the adapter is dropped).
    torch.manual_seed(0)
    again = load_models(ModelsConfig(sft=str(tiny_model_dir), policy=str(result.checkpoint), device="cpu"))
    second = train_with_trl(again, pairs, DPOConfig(steps=1, lr=5e-3, batch_size=4), tmp_path / "ckpts")
    assert "ref" not in again.policy.model.peft_config
    assert second.steps[0]["rewards/margins"] > 0  # measured against the SFT model, not against itself (0)
    assert read_record(second.checkpoint)["parent"]["id"] == result.checkpoint.name


def test_losses_trl_has_not_are_refused_by_name() -> None:
    for loss in ("sigmoid", "ipo", "hinge", "robust"):
        check_loss(DPOConfig(loss=loss))
    for loss in ("kto", "simpo", "orpo"):
        with pytest.raises(PlaygroundError, match=f"trains --loss sigmoid, ipo, hinge, robust .*{loss} is another"):
            check_loss(DPOConfig(loss=loss, batch_size=4))


def test_missing_trl_or_deepspeed_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("trl", "deepspeed") else real(name, *a))
    with pytest.raises(PlaygroundError, match=r"^--engine trl needs trl, not installed here: pip install -r "
                                              r"requirements-dev.txt"):
        require_trl()
    require_deepspeed_if_asked()  # not asked for
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(PlaygroundError, match="deepspeed is not installed: pip install deepspeed"):
        require_deepspeed_if_asked()


def test_shipped_accelerate_configs_parse() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    ddp = load_config_from_file(str(CONFIGS / "ddp.yaml"))
    assert (ddp.distributed_type, ddp.num_processes, ddp.mixed_precision) == ("MULTI_GPU", 2, "no")
    zero2 = load_config_from_file(str(CONFIGS / "deepspeed-zero2.yaml"))
    assert zero2.distributed_type == "DEEPSPEED" and zero2.deepspeed_config["zero_stage"] == 2


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train_main(argv))
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_cli_help_explains_the_engine(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = cli(["--help"], capsys)
    assert code == 0
    assert "--engine {ours,trl}" in out and "accelerate launch --config_file" in " ".join(out.split())


@pytest.mark.parametrize(("flags", "message"), [
    (["--loss", "simpo"], "error: --engine trl trains --loss sigmoid, ipo, hinge, robust (TRL's DPOTrainer); simpo "
                          "is another TRL trainer: use --engine ours for it"),
    (["--batch-size", "0"], "error: batch size must be ≥ 1"),
    (["--device", "tpu"], "error: unknown device 'tpu': expected auto, cpu, cuda, cuda:N or mps"),
])
def test_cli_bad_flags_are_one_line(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                    flags: list[str], message: str) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r.as_trl()) + "\n" for r in separable_pairs()))
    code, _, err = cli(["--engine", "trl", "--pairs", str(data), "--out", str(tmp_path / "ckpts"),
                        "--sft", str(tiny_model_dir), *flags], capsys)
    assert (code, err.strip()) == (1, message)
    assert not (tmp_path / "ckpts").exists()


def test_cli_unknown_engine_is_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--engine", "deepspeed", "--pairs", "p.jsonl", "--out", "o"])
    assert exit_info.value.code == 2
    assert "argument --engine: invalid choice: 'deepspeed'" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_train(launcher: list[str], flags: list[str], env: dict[str, str], out: Path) -> dict:
    done = subprocess.run([*launcher, "-m", "cli", "train", "--engine", "trl", *flags, "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = out.iterdir()
    return read_record(folder)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tiny_model_dir: Path, tmp_path: Path
                                                                        ) -> None:
    # 8 training pairs, a global batch of 4: every step is a full batch in both runs (a short last
    # batch would be padded with repeated pairs on one DDP process, a different step).
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r.as_trl()) + "\n" for r in separable_pairs(8)))
    flags = ["--pairs", str(data), "--sft", str(tiny_model_dir), "--steps", "4", "--batch-size", "4",
             "--lr", "5e-3", "--heldout", "0"]
    # CPU and gloo even on a GPU machine. `accelerate launch --cpu --num_processes 2` would start ONE
    # process (accelerate's CPU launcher spreads only over mpirun); the DDP config starts two.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PLAYGROUND_HOME": str(tmp_path / "home"),
           "OMP_NUM_THREADS": "1"}
    one = run_train([sys.executable], flags, env, tmp_path / "one")
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp.yaml"),
                  "--num_processes", "2", "--main_process_port", str(free_port())]
    two = run_train(accelerate, flags, env, tmp_path / "two")
    assert (one["processes"], two["processes"]) == (1, 2)
    assert len(one["steps"]) == len(two["steps"]) == 4
    assert one["steps"][-1]["loss"] < one["steps"][0]["loss"] - 0.05  # the curve moves, so agreement means something
    for a, b in zip(one["steps"], two["steps"], strict=True):
        for key in ("loss", "rewards/margins", "grad_norm", "logps/chosen"):
            assert b[key] == pytest.approx(a[key], abs=DDP_TOLERANCE * max(1.0, abs(a[key]))), key


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="the refusal is for a machine without "
                    "deepspeed (it cannot be installed on the development machines)")
def test_deepspeed_launch_without_deepspeed_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r.as_trl()) + "\n" for r in separable_pairs()))
    env = {**os.environ, "ACCELERATE_USE_DEEPSPEED": "true", "PLAYGROUND_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "cli", "train", "--engine", "trl", "--pairs", str(data),
                           "--out", str(tmp_path / "ckpts"), "--sft", str(tiny_model_dir)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: this run is launched with DeepSpeed (ACCELERATE_USE_DEEPSPEED), but deepspeed is not installed: "
        "pip install deepspeed, or launch with configs/accelerate/ddp.yaml"]
    assert not (tmp_path / "ckpts").exists()
