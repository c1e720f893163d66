"""lm-evaluation-harness task configs that read local files (see ettin.downstream.lmeval)."""
