"""Downstream fine-tuning and scoring through the libraries people already use (`ettin finetune ...`,
`ettin lm-eval`). Shared pieces live in ettin.downstream.common; each command in its own module. The heavy
libraries (the `downstream` extra) are imported inside the commands, never at import time here."""
