"""transformers' load report ("ModernBertModel LOAD REPORT ... decoder.bias | UNEXPECTED"), silenced where the weights
it lists are the ones a command expects to drop or to create: the pre-training head when a body or a classifier is
built from a masked-LM / causal-LM folder, and a classifier's new layers. Any other row (a weight missing from the
body, a shape mismatch, a conversion error) keeps the whole report."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

LM_HEAD = ("head.", "decoder.", "lm_head.")  # the pre-training head (and the tied decoder's bias): dropped
NEW_HEAD = ("classifier.", "score.", "head.")  # a sequence classifier's layers: newly initialised
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOGGER = "transformers.modeling_utils"  # where from_pretrained logs the report


def expected_only(report: str, unexpected: tuple[str, ...], missing: tuple[str, ...]) -> bool:
    """Whether every row of a load report is an UNEXPECTED key under `unexpected` or a MISSING key under `missing`."""
    text = _ANSI.sub("", report)
    if "LOAD REPORT" not in text:
        return False
    allowed = {"UNEXPECTED": unexpected, "MISSING": missing}
    rows = [[cell.strip() for cell in line.split("|")] for line in text.splitlines() if line.count("|") >= 2]
    rows = [r for r in rows if r[0] != "Key"]
    return bool(rows) and all(len(r) > 1 and r[0].startswith(allowed.get(r[1], ("\0",))) for r in rows)


class _Expected(logging.Filter):
    def __init__(self, unexpected: tuple[str, ...], missing: tuple[str, ...]):
        super().__init__()
        self.unexpected, self.missing = unexpected, missing

    def filter(self, record: logging.LogRecord) -> bool:
        return not expected_only(record.getMessage(), self.unexpected, self.missing)


@contextmanager
def expected_load_report(unexpected: tuple[str, ...] = LM_HEAD, missing: tuple[str, ...] = ()) -> Iterator[None]:
    """Within: a load report whose rows are all expected is not printed (see the module docstring)."""
    logger = logging.getLogger(_LOGGER)
    quiet = _Expected(unexpected, missing)
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
