"""Progress of lm-eval's requests (issue 31 item 1): the models `ettin lm-eval` hands the harness count the
requests of each call as they are answered and say how it goes through ettin.eval.progress, as every other
evaluation step does: an estimate at this size after the first batch, then counts, rate and eta, and a closing
100% line.

    <run>/<checkpoint> lm-eval: loglikelihood 3,676 requests, about 0:04:10 at this size (14.7 requests/s over ...)
    <run>/<checkpoint> lm-eval: loglikelihood 1,184/3,676 requests, 14.9 requests/s, eta 0:02:47
    <run>/<checkpoint> lm-eval: loglikelihood 3,676/3,676 requests (100%), 14.8 requests/s, 0:04:08 in all

The harness calls a model once per request type (loglikelihood, loglikelihood_rolling, generate_until) with every
request of that type; `Counted` makes each call a step. Decoders run as lm-eval's own `hf` model (`CountedHFLM`):
it reports each answered request to its cache hook (lm-eval's public `set_cache_hook`, what its --use_cache
relies on), which the step counts, after each batch; its rolling log-likelihoods report only at the end of a call,
so they are asked for in pieces of ROLLING_PIECE requests. Encoders (`ettin-mlm`) count a request when every one
of its masked tokens is scored (ettin.eval.tasks.common.masked_pll's `items_done`), in the same batches. The
harness's own progress bars are switched off (disable_tqdm) where these lines replace them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from lm_eval.api.model import CacheHook
from lm_eval.models.huggingface import HFLM

from ettin.eval.progress import Progress

ROLLING_PIECE = 32  # rolling requests per call to a model that reports them only at the end of a call


class _CountingHook(CacheHook):
    """The model's cache hook, passed on, counting each answered request."""

    def __init__(self, inner: CacheHook, step: Progress):
        super().__init__(None)
        self.inner, self.step = inner, step

    def add_partial(self, attr, req, res) -> None:
        self.inner.add_partial(attr, req, res)
        self.step.update(1)


class Counted:
    """Mixin for an lm-eval model (before its class in the bases): each request-type call is one progress step.
    A model that counts its own requests sets `counts_by_cache_hook = False` and updates `self.step`."""

    counts_by_cache_hook = True
    step: Progress | None = None

    @contextlib.contextmanager
    def counting(self, kind: str, n: int) -> Iterator[Progress]:
        with Progress(kind, n, "requests") as step:
            hook = getattr(self, "cache_hook", None)
            if self.counts_by_cache_hook:
                self.set_cache_hook(_CountingHook(hook or CacheHook(None), step))
            self.step = step
            try:
                yield step
            finally:
                self.step = None
                if self.counts_by_cache_hook:
                    self.set_cache_hook(hook or CacheHook(None))

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        with self.counting("loglikelihood", len(requests)):
            return super().loglikelihood(requests, disable_tqdm=True)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        out: list = []
        with self.counting("loglikelihood_rolling", len(requests)):
            piece = ROLLING_PIECE if self.counts_by_cache_hook else max(1, len(requests))
            for lo in range(0, len(requests), piece):
                out += super().loglikelihood_rolling(requests[lo : lo + piece], disable_tqdm=True)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False):
        with self.counting("generate_until", len(requests)):
            return super().generate_until(requests, disable_tqdm=True)


class CountedHFLM(Counted, HFLM):
    """lm-eval's `hf` model, its requests counted (the harness sees an HFLM: model_type "hf")."""
