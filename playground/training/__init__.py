"""Updates of the policy's LoRA adapter (DPO) and of a reward model, from preference pairs."""
