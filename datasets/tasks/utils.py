"""Glue for lm-eval's ``!function`` hook; the CSV reading and its checks live in ``workbench.bench``."""

from workbench.bench import load_mmlu

__all__ = ["load_mmlu"]
