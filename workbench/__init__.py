"""The evaluation workbench: one SQLite store, an LLM judge, lm-eval benchmarks and a review app."""
