"""Instruction fine-tuning of GPT-2, as in chapter 7 of *Build a Large Language Model (From Scratch)*.

Modules: ``model`` (GPT-2 with a KV cache), ``weights`` (OpenAI's weights in the Hugging Face layout),
``tokenizer``, ``data`` (formats, split, collate), ``train``, ``generate``, ``checkpoint``.
"""
