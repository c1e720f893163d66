"""An lm-evaluation-harness model for encoders: `ettin-mlm`, registered with lm-eval (importing this module
registers it; it imports lm_eval at the top, so ettin imports it only inside `ettin lm-eval`).

Scoring rule, the masked pseudo-log-likelihood of ettin's own evaluation (ettin.eval.tasks.common.masked_pll,
called here, not re-implemented; Salazar et al. 2020): for a request (context, continuation), the two are
tokenized separately without special tokens, and log p(continuation | context) is the sum over the
continuation's tokens of log p(token) with that one token replaced by [MASK] in `[CLS] context continuation
[SEP]` (the rest of the continuation and the whole context visible). That is exactly how ettin's `piqa` task
scores an encoder's choices (ettin.eval.tasks.multiple_choice.choice_logliks), so the harness's acc / acc_bytes
on the same items are the same numbers. `loglikelihood_rolling` is the PLL of the whole text (no context).
`is_greedy` (what greedy-match metrics such as LAMBADA's acc read) is True when every continuation token is the
arg-max of the vocabulary at its own mask, in the same forward passes. Encoders do not generate:
`generate_until` raises (`ettin lm-eval` refuses generation tasks for encoders before running anything).

Arguments (`--model_args` style): pretrained (a Hugging Face folder written by ettin export-hf), device,
max_length (tokens per scored window, default 512), tokens_per_batch.

Progress: each call is a step of ettin.eval.progress counting requests as their last masked token is scored
(ettin.downstream.lmeval_progress).
"""

from __future__ import annotations

from pathlib import Path

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from ettin.downstream.lmeval_progress import Counted
from ettin.eval.tasks.common import Subject, masked_pll


def load_subject(folder: Path, device: str = "cpu", max_length: int = 512, tokens_per_batch: int = 8192) -> Subject:
    """ettin's evaluation Subject (the model and its `tokenizers` tokenizer) for a Hugging Face folder."""
    from ettin.hf import from_pretrained
    from ettin.io import read_tokenizer

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{folder}: no tokenizer.json")
    model = from_pretrained(folder)
    if model.config.objective != "mlm":
        raise ValueError(f"{folder}: ettin-mlm scores encoders (masked LMs); this is a {model.config.objective} "
                         "model (use lm-eval's `hf` model)")
    max_length = min(int(max_length), model.config.max_position_embeddings)
    return Subject(model, read_tokenizer(folder)[0], torch.device(device),
                   max_length=max_length, tokens_per_batch=int(tokens_per_batch))


class _PLL(LM):
    """The scoring; `EttinMLM` adds the progress of each call."""

    step = None  # the call's progress step (Counted), if any

    def __init__(self, pretrained: str, device: str = "cpu", max_length: int = 512, tokens_per_batch: int = 8192,
                 batch_size=None, **kwargs) -> None:  # batch_size: accepted from lm-eval, batching is by tokens
        super().__init__()
        self.subject = load_subject(Path(pretrained), device, max_length, tokens_per_batch)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k in ("device", "batch_size")}
        return cls(**(args | extra))

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        s = self.subject
        items = []
        for req in requests:
            context, continuation = req.args
            target = s.encode(continuation)
            if not target:
                raise ValueError(f"ettin-mlm: empty continuation {continuation!r}")
            items.append((s.encode(context), target, []))
        greedy: list[bool] = []
        return [(float(lp.sum()), g) for lp, g in zip(masked_pll(s, items, greedy, self._done()), greedy)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        s = self.subject
        items = [([], s.encode(req.args[0]), []) for req in requests]
        return [float(lp.sum()) for lp in masked_pll(s, items, items_done=self._done())]

    def _done(self):
        return self.step.update if self.step is not None else None

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError("ettin-mlm: an encoder does not generate text; use log-likelihood tasks")


@register_model("ettin-mlm")
class EttinMLM(Counted, _PLL):
    counts_by_cache_hook = False  # _PLL counts its requests itself, batch by batch
