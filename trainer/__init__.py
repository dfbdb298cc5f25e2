"""Instruction fine-tuning of GPT-2, as in chapter 7 of *Build a Large Language Model (From Scratch)*."""

from trainer.errors import UserError
from trainer.model import CONFIGS, GPT, GPTConfig

__all__ = ["CONFIGS", "GPT", "GPTConfig", "UserError"]
