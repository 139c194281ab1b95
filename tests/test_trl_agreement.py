"""Our log-probs, rewards and DPO loss agree with TRL's DPOTrainer (fp32, CPU) within 1e-3.

TRL is the field's reference implementation; this is a test-only dependency. The policy is the
real SmolLM2 with a randomly perturbed LoRA adapter, so policy and reference differ.
"""

import copy
from pathlib import Path

import pytest
import torch

from playground.models.roles import Models, ModelsConfig, load_models
from playground.scoring.scorer import Scorer
from tests.test_models import perturbed_policy

pytestmark = pytest.mark.integration

BETA = 0.1
STRING_ROWS = [
    {"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " Berlin, obviously."},
    {"prompt": "Q: What is 2 + 2?\nA:", "chosen": " 4", "rejected": " It is five, or maybe six."},
    {"prompt": "Write a haiku about rain.\n", "chosen": "Soft rain on the roof\nwhispers to the sleeping town\n",
     "rejected": "Rain."},
]
CHAT_ROWS = [
    {"prompt": [{"role": "user", "content": "Say hi."}],
     "chosen": [{"role": "assistant", "content": "Hi! How can I help you today?"}],
     "rejected": [{"role": "assistant", "content": "No."}]},
    {"prompt": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Capital of Italy?"}],
     "chosen": [{"role": "assistant", "content": "Rome."}],
     "rejected": [{"role": "assistant", "content": "The capital of Italy is Milan, a lovely city."}]},
]


@pytest.fixture(scope="module")
def models(default_model_dir: Path) -> Models:
    return perturbed_policy(load_models(ModelsConfig(models_dir=default_model_dir.parent)), seed=0, scale=0.02)


def trl_numbers(models: Models, rows: list[dict], tmp_path: Path) -> dict:
    """Per-row policy/reference log-probs from TRL's precompute pass, and TRL's batch loss/rewards."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    policy = copy.deepcopy(models.policy.model).merge_and_unload()  # plain model with the adapter folded in
    reference = copy.deepcopy(models.policy.model).unload()  # the same base without the adapter
    args = DPOConfig(output_dir=str(tmp_path / "trl"), bf16=False, gradient_checkpointing=False, use_cpu=True,
                     precompute_ref_log_probs=True, per_device_train_batch_size=len(rows), beta=BETA,
                     report_to="none", dataloader_drop_last=False, seed=0)
    data = Dataset.from_list(rows)
    # TRL reads its reference log-probs from the model passed as ref_model: pass the policy once to
    # read the policy's per-row numbers, then the real reference for the loss.
    as_policy = DPOTrainer(model=copy.deepcopy(policy), ref_model=policy, args=args, train_dataset=data,
                           processing_class=models.tokenizer)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data,
                         processing_class=models.tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    return {
        "policy_chosen": as_policy.train_dataset["ref_chosen_logps"],
        "policy_rejected": as_policy.train_dataset["ref_rejected_logps"],
        "ref_chosen": trainer.train_dataset["ref_chosen_logps"],
        "ref_rejected": trainer.train_dataset["ref_rejected_logps"],
        "loss": float(loss),
        "rewards_chosen": metrics["rewards/chosen"],
        "rewards_rejected": metrics["rewards/rejected"],
        "margins": metrics["rewards/margins"],
    }


@pytest.mark.parametrize("rows", [STRING_ROWS, CHAT_ROWS], ids=["string", "conversational"])
def test_matches_trl(models: Models, rows: list[dict], tmp_path: Path) -> None:
    theirs = trl_numbers(models, rows, tmp_path)
    ours = Scorer(models, batch_size=4).score_pairs([(r["prompt"], r["chosen"], r["rejected"]) for r in rows], BETA)
    tol = 1e-3
    assert [s.chosen.logp_policy for s in ours] == pytest.approx(list(theirs["policy_chosen"]), abs=tol)
    assert [s.rejected.logp_policy for s in ours] == pytest.approx(list(theirs["policy_rejected"]), abs=tol)
    assert [s.chosen.logp_ref for s in ours] == pytest.approx(list(theirs["ref_chosen"]), abs=tol)
    assert [s.rejected.logp_ref for s in ours] == pytest.approx(list(theirs["ref_rejected"]), abs=tol)
    n = len(ours)
    assert sum(s.dpo_loss for s in ours) / n == pytest.approx(theirs["loss"], abs=tol)
    assert sum(s.chosen.reward for s in ours) / n == pytest.approx(theirs["rewards_chosen"], abs=tol)
    assert sum(s.rejected.reward for s in ours) / n == pytest.approx(theirs["rewards_rejected"], abs=tol)
    assert sum(s.reward_margin for s in ours) / n == pytest.approx(theirs["margins"], abs=tol)
    # The perturbation must be visible, or agreement would be trivial.
    assert max(abs(s.chosen.log_ratio) for s in ours) > 0.01
