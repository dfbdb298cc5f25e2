"""The trainer's GPT as an lm-evaluation-harness model named ``workbench``.

Importing this module registers the model, so ``lm_eval.simple_evaluate(model="workbench", ...)`` works.
The ``lm_eval`` command cannot import it by itself; run lm-eval's own command line through this module:

    python -m workbench.lm_backend --model workbench --model_args run=runs/demo,checkpoint=best \\
        --tasks wb_mmlu --include_path datasets/tasks --metadata '{"mmlu_dir": "../shared/datasets/mmlu"}'

Model arguments: ``run=RUN_DIR`` (+ ``checkpoint=best|last``) or ``weights=NAME_OR_DIR`` (a GPT-2 name or a
Hugging Face layout folder), ``device``, ``batch_size``.

Data-parallel: under ``torchrun --nproc_per_node N -m workbench.lm_backend ...`` (or ``workbench bench --nproc N``)
each process joins the process group torchrun describes (gloo on the CPU, nccl on CUDA, one GPU per process)
and reports its ``rank`` and ``world_size``; lm-eval's evaluator then deals the questions out, and gathers the
answers on rank 0 through the model's ``all_gather`` / ``gather_object`` / ``barrier``, which this class
provides with ``torch.distributed``. Only rank 0 gets results (and writes files); the others' bars are off.

Why it is faster than lm-eval's ``hf`` backend on the same weights, with the same numbers:
- requests with the same input tokens (the four answer letters of a multiple-choice question) share one row;
- rows that share a long prefix (the five worked examples of a few-shot prompt) compute that prefix once into
  a KV cache and run only their own suffixes after it;
- rows are left-padded so the scored positions line up at the end, and the vocabulary projection and
  log-softmax run only there (``last_only`` for one-token continuations) instead of over every position.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from trainer.errors import UserError
from trainer.generate import generate_tokens
from trainer.model import GPT, KVCache
from trainer.tokenizer import END_OF_TEXT_ID, get_tokenizer

logger = logging.getLogger(__name__)
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256
# Rows whose inputs agree on at least this many leading tokens compute that prefix once (a few-shot block).
MIN_SHARED_PREFIX = 32
# Most logits (floats) one batch may hold when whole continuations are scored: 512 MB in fp32.
LOGITS_BUDGET = 2**27


def load_model(
    run: str | None = None, checkpoint: str = "best", weights: str | None = None, device: str = "cpu"
) -> tuple[GPT, str]:
    """The GPT named by ``run`` (a trainer run folder) or ``weights`` (a name or HF folder), and a label."""
    if (run is None) == (weights is None):
        raise UserError("give exactly one of run=RUN_DIR or weights=NAME_OR_DIR")
    if run is not None:
        from trainer.checkpoint import load_run_model

        model, _ = load_run_model(run, checkpoint, device=device)
        return model, f"{os.path.abspath(run)}:{checkpoint}"
    from trainer.weights import load_pretrained

    return load_pretrained(weights, device=device), weights


def join_process_group(device: str | None) -> tuple[int, int, str | None]:
    """(rank, world size, device) of this process; joins the group that torchrun describes in the environment.

    One process (no ``WORLD_SIZE`` above 1) is rank 0 of 1 and nothing changes. Several processes on CUDA take
    one GPU each (``cuda:LOCAL_RANK``) and talk through nccl; on the CPU through gloo, each with its share of
    threads one process would use unless ``OMP_NUM_THREADS`` says otherwise (torchrun sets 1; torch's launch
    API sets nothing).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, device
    cuda = bool(device and device.startswith("cuda") and torch.cuda.is_available())
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    elif "OMP_NUM_THREADS" not in os.environ:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, torch.get_num_threads() // local_processes))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def in_document_order(per_rank: list):
    """Merge what each rank gathered back into one object in the order a single process builds it.

    lm-eval deals documents out round-robin (rank r takes documents r, r + N, r + 2N, ...) and gathers
    per-task dicts of lists (logged samples; per-metric values). Taking the lists' items in turn restores
    document order, so the samples and even the float sums behind standard errors are those of one process.
    Returns None for anything of another shape.
    """
    if all(isinstance(part, list) for part in per_rank):
        missing = object()
        turns = itertools.zip_longest(*per_rank, fillvalue=missing)
        return [item for turn in turns for item in turn if item is not missing]
    if all(isinstance(part, dict) for part in per_rank) and all(part.keys() == per_rank[0].keys() for part in per_rank):
        merged = {key: in_document_order([part[key] for part in per_rank]) for key in per_rank[0]}
        return None if any(value is None for value in merged.values()) else merged
    return None


@dataclass
class _Row:
    """One model input: tokens fed to the model and the requests scored from its last positions."""

    tokens: list[int]
    requests: list[tuple[int, list[int]]]  # (request index, continuation tokens scored at the end)

    @property
    def scored(self) -> int:
        return max(len(cont) for _, cont in self.requests)


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@register_model("workbench")
class WorkbenchLM(TemplateLM):
    """lm-eval model over the trainer's GPT (tiktoken GPT-2 tokenizer, end-of-text as the prefix token)."""

    def __init__(
        self,
        run: str | None = None,
        checkpoint: str = "best",
        weights: str | None = None,
        device: str | None = None,
        batch_size: int | str | None = None,
        model: GPT | None = None,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        **_ignored,
    ) -> None:
        super().__init__()
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line asks for cuda by default; its hf backend falls back the same way.
            logger.warning("CUDA is not available; running on the CPU")
            device = "cpu"
        self._rank, self._world_size, device = join_process_group(device)
        self._device = torch.device(device or "cpu")
        if model is not None:
            self.model, self.label = model.to(self._device).eval(), "in-memory GPT"
        else:
            self.model, self.label = load_model(run, checkpoint, weights, str(self._device))
        self.tokenizer = get_tokenizer()
        self.batch_size = DEFAULT_BATCH_SIZE if batch_size in (None, "auto") else int(batch_size)
        self.max_length = self.model.config.context_length
        self.max_gen_toks = int(max_gen_toks)

    # ------------------------------------------------------------------ tokenization
    @property
    def eot_token_id(self) -> int:
        return END_OF_TEXT_ID

    @property
    def tokenizer_name(self) -> str:
        return "gpt2-tiktoken"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # Special tokens written in the text are recognised, as Hugging Face's GPT-2 tokenizer does.
        return self.tokenizer.encode(string, allowed_special="all")

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def get_model_info(self) -> dict:
        return {
            "model_num_parameters": self.model.num_parameters(),
            "model_dtype": str(self.model.wte.weight.dtype),
            "model_source": self.label,
        }

    # ------------------------------------------------------------------ data-parallel (lm-eval's evaluator calls these)
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` concatenated in rank order (a number becomes one entry)."""
        if self.world_size == 1:
            return tensor
        tensor = tensor.reshape(1) if tensor.dim() == 0 else tensor
        gathered = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(gathered, tensor)
        return torch.cat(gathered)

    def gather_object(self, obj, dst: int = 0) -> list | None:
        """Every rank's ``obj`` on ``dst`` (None elsewhere), merged into document order where lm-eval split it."""
        if self.world_size == 1:
            return [obj]
        gathered = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, gathered, dst=dst)
        if gathered is None:
            return None
        merged = in_document_order(gathered)
        return gathered if merged is None else [merged]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    # ------------------------------------------------------------------ log-likelihood
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """Score continuations; rows are deduplicated, grouped by shared prefix and sorted by length."""
        rows: dict[tuple[int, ...], _Row] = {}
        for index, (_, context, continuation) in enumerate(requests):
            if not continuation:
                raise ValueError(f"request {index}: empty continuation")
            # As lm-eval's hf backend: keep the last max_length+1 tokens and feed all but the last one.
            tokens = (context + continuation)[-(self.max_length + 1) :][:-1]
            rows.setdefault(tuple(tokens), _Row(tokens, [])).requests.append((index, continuation))

        results: list[tuple[float, bool] | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank > 0, desc="scoring", unit="request")
        with bar as progress:
            for prefix, family in self._families(list(rows.values())):
                prefix_cache = self._prefill(prefix) if prefix else None
                one_token = all(row.scored == 1 for row in family)
                start = 0
                while start < len(family):
                    batch = family[start : start + self._rows_per_batch(family[start], one_token)]
                    start += len(batch)
                    for row, log_probs in zip(batch, self._score_batch(batch, prefix, prefix_cache), strict=True):
                        for index, continuation in row.requests:
                            results[index] = self._answer(log_probs, continuation)
                            request_strings = requests[index][0]
                            if request_strings is not None:
                                self.cache_hook.add_partial("loglikelihood", request_strings, results[index])
                            progress.update(1)
        return results

    @staticmethod
    def _families(rows: list[_Row]) -> list[tuple[list[int], list[_Row]]]:
        """Split rows into (shared prefix, rows) families, each sorted longest first.

        Sorting the inputs lexicographically puts rows with a common beginning next to each other; a run of
        neighbours agreeing on ``MIN_SHARED_PREFIX`` tokens or more becomes a family. Rows that share nothing
        long form one family with an empty prefix. The prefix stops short of every row's scored positions.
        """
        rows.sort(key=lambda row: row.tokens)
        runs: list[list[_Row]] = []
        for row in rows:
            if runs and _common_prefix_length(runs[-1][-1].tokens, row.tokens) >= MIN_SHARED_PREFIX:
                runs[-1].append(row)
            else:
                runs.append([row])
        families, loners = [], []
        for run in runs:
            if len(run) == 1:
                loners.extend(run)
                continue
            shared = _common_prefix_length(run[0].tokens, run[-1].tokens)  # sorted: first vs last suffices
            shared = min(shared, *(len(row.tokens) - row.scored for row in run))
            families.append((run[0].tokens[:shared], run))
        if loners:
            families.append(([], loners))
        for _, family in families:
            family.sort(key=lambda row: -len(row.tokens))
        return families

    def _rows_per_batch(self, longest: _Row, one_token: bool) -> int:
        """``batch_size`` rows, fewer when several positions per row need full-vocabulary logits."""
        if one_token:
            return self.batch_size
        logits_per_row = len(longest.tokens) * self.model.config.vocab_size
        return max(1, min(self.batch_size, LOGITS_BUDGET // logits_per_row))

    @torch.no_grad()
    def _prefill(self, prefix: list[int]) -> KVCache:
        cache = KVCache(self.model.config, 1, len(prefix), self._device, self.model.wte.weight.dtype)
        self.model(torch.tensor([prefix], device=self._device), cache=cache, last_only=True)
        return cache

    @torch.no_grad()
    def _score_batch(self, batch: list[_Row], prefix: list[int], prefix_cache: KVCache | None) -> list[torch.Tensor]:
        """Log-probabilities ``[scored, vocab]`` at the last scored positions of each row."""
        past = len(prefix)
        suffixes = [row.tokens[past:] for row in batch]
        width = max(len(s) for s in suffixes)
        pad = [width - len(s) for s in suffixes]
        tokens = torch.tensor([[0] * p + s for p, s in zip(pad, suffixes, strict=True)], device=self._device)
        real = torch.tensor([[0] * p + [1] * len(s) for p, s in zip(pad, suffixes, strict=True)], device=self._device)
        positions = (past + torch.cumsum(real, dim=1) - 1).clamp(min=past)
        attention_mask = torch.cat([torch.ones(len(batch), past, dtype=real.dtype, device=self._device), real], 1)
        cache = None
        if prefix_cache is not None:
            cache = KVCache(self.model.config, len(batch), past + width, self._device, self.model.wte.weight.dtype)
            for layer in range(self.model.config.n_layers):
                cache.keys[layer][:, :, :past] = prefix_cache.keys[layer]
                cache.values[layer][:, :, :past] = prefix_cache.values[layer]
            cache.length = past
        scored = max(row.scored for row in batch)
        logits = self.model(
            tokens, attention_mask=attention_mask, position_ids=positions, cache=cache, last_only=scored == 1
        )
        return list(F.log_softmax(logits[:, -scored:].float(), dim=-1))

    @staticmethod
    def _answer(log_probs: torch.Tensor, continuation: list[int]) -> tuple[float, bool]:
        log_probs = log_probs[-len(continuation) :]
        target = torch.tensor(continuation, device=log_probs.device)
        greedy = bool((log_probs.argmax(dim=-1) == target).all())
        return float(log_probs.gather(1, target[:, None]).sum()), greedy

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood in windows of the context length, as lm-eval's hf backend cuts them."""
        windows, owners = [], []
        for index, (text,) in enumerate(request.args for request in requests):
            for context, continuation in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, context, continuation))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (log_prob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm), strict=True):
            totals[owner] += log_prob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled) continuations with the KV-cache generator, cut at the first stop sequence."""
        eos = self.tok_decode([self.eot_token_id])
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(index)
        results: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank > 0, desc="generating", unit="request")
        with bar as progress:
            for indices in groups.values():
                settings = normalize_gen_kwargs(copy.deepcopy(requests[indices[0]].args[1]), self.max_gen_toks)
                until = handle_stop_sequences(settings.pop("until", None), eos=eos)
                max_new = min(int(settings.pop("max_gen_toks")), self.max_length - 1)
                keep = self.max_length - max_new
                # An empty context starts from end-of-text, as lm-eval's hf backend does for log-likelihoods.
                prompts = [self.tok_encode(requests[i].args[0])[-keep:] or [self.eot_token_id] for i in indices]
                generated = generate_tokens(
                    self.model,
                    prompts,
                    max_new_tokens=max_new,
                    temperature=float(settings.get("temperature") or 0.0) if settings.get("do_sample") else 0.0,
                    top_k=settings.get("top_k"),
                    top_p=settings.get("top_p"),
                    eos_id=self.eot_token_id,
                    batch_size=self.batch_size,
                )
                for index, tokens in zip(indices, generated, strict=True):
                    text = postprocess_generated_text(self.tok_decode(tokens), until, None)
                    results[index] = text
                    self.cache_hook.add_partial("generate_until", requests[index].args, text)
                    progress.update(1)
        return results


def main() -> int:
    """lm-eval's own command line (it reads ``sys.argv``) with the ``workbench`` model registered; a mistake in
    our model's arguments is one error line and exit 2, as in our own commands."""
    from lm_eval.__main__ import cli_evaluate

    try:
        cli_evaluate()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
