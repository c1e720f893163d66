"""The published Ettin numbers, transcribed for the report's reference block (data only, no logic).

Source: "Seq vs Seq: An Open Suite of Paired Encoders and Decoders" (arXiv 2507.11412), the paper tables as
cropped into `JHU-CLSP/ettin-encoder-vs-decoder:assets/encoder_results.jpg` and `.../decoder_results.jpg`,
transcribed in ../shared/reference/ettin.md sections 6.2 and 6.3. The images were read by eye: check the
digits against the paper before quoting one. Scores are percentages (0-100), as published.
"""

from __future__ import annotations

SOURCE = (
    "Seq vs Seq: An Open Suite of Paired Encoders and Decoders (arXiv 2507.11412), paper tables via "
    "JHU-CLSP/ettin-encoder-vs-decoder assets/encoder_results.jpg and assets/decoder_results.jpg "
    "(transcribed by eye)"
)

# Section 6.2: encoders (Ettin-Enc rows are the suite; the others are the paper's baselines), scores in %.
ENCODER_COLUMNS = ("CSN", "MLDR", "Clustering", "Retrieval", "MTEB v2", "SST-2", "MNLI", "GLUE Avg")
ENCODER_ROWS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("BERT-mini", (41.3, 16.8, 39.0, 34.7, 49.2, 88.3, 77.2, 76.4)),
    ("TinyBERT", (39.8, 14.2, 37.4, 33.3, 49.7, 91.2, 80.9, 77.0)),
    ("Ettin-Enc-17m", (59.1, 24.4, 39.1, 35.6, 48.9, 91.2, 79.5, 79.2)),
    ("BERT-small", (46.0, 19.9, 39.6, 38.1, 51.1, 90.1, 79.2, 79.0)),
    ("MiniLM L12", (48.3, 19.6, 37.8, 38.4, 51.3, 93.3, 85.6, 84.6)),
    ("Ettin-Enc-32m", (69.2, 28.4, 39.6, 39.7, 50.9, 92.0, 83.4, 83.5)),
    ("DistilBERT", (47.9, 23.7, 39.8, 40.8, 52.7, 92.2, 82.7, 81.5)),
    ("DistilRoBERTa", (60.3, 19.7, 39.3, 40.0, 51.8, 93.1, 84.7, 83.8)),
    ("Ettin-Enc-68m", (75.1, 30.1, 40.1, 43.1, 52.6, 94.4, 87.0, 87.2)),
    ("BERT base", (51.0, 24.8, 40.4, 41.2, 52.9, 93.1, 85.4, 84.7)),
    ("ModernBERT base", (75.9, 30.4, 41.3, 43.9, 54.0, 96.0, 89.1, 88.4)),
    ("Ettin-Enc-150m", (76.3, 31.8, 41.5, 45.7, 54.0, 95.8, 89.2, 88.9)),
    ("BERT large", (54.4, 25.3, 41.5, 42.9, 53.8, 93.3, 86.3, 85.2)),
    ("ModernBERT large", (78.3, 34.9, 41.5, 47.0, 55.0, 97.1, 90.8, 90.4)),
    ("Ettin-Enc-400m", (80.7, 36.2, 41.8, 48.4, 55.5, 96.7, 91.3, 90.8)),
    ("DeBERTa-v1-xl", (75.6, 28.1, 42.5, 47.2, 56.4, 97.1, 91.7, 90.7)),
    ("Ettin-Enc-1B", (82.3, 40.2, 41.9, 50.1, 56.0, 97.1, 91.8, 91.6)),
)

# Section 6.3: decoders on lm-evaluation-harness tasks, scores in %.
DECODER_COLUMNS = ("ARC", "HS", "LMB", "OBQA", "PIQA", "SciQ", "SIQA", "TQA", "WG", "WSC", "Avg")
DECODER_ROWS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("Pythia-14m", (21.2, 26.0, 7.1, 26.2, 55.2, 43.8, 33.4, 0.0, 50.3, 51.6, 31.5)),
    ("Ettin-Dec-17m", (21.3, 27.1, 23.0, 27.2, 57.7, 71.1, 35.4, 2.6, 50.9, 48.0, 36.4)),
    ("Ettin-Dec-32m", (23.5, 28.5, 28.5, 28.2, 57.7, 77.5, 36.4, 3.8, 53.1, 50.2, 38.7)),
    ("DistilGPT", (23.0, 27.5, 25.0, 26.8, 59.8, 62.6, 36.1, 0.3, 50.4, 53.8, 36.5)),
    ("Ettin-Dec-68m", (25.3, 33.4, 35.2, 29.4, 61.8, 83.2, 38.8, 5.6, 50.1, 55.3, 41.8)),
    ("SmolLM2-135m", (29.1, 43.1, 42.9, 32.4, 68.4, 78.5, 39.4, 5.0, 53.7, 59.7, 45.2)),
    ("Pythia-160m", (24.0, 30.2, 32.9, 26.4, 62.0, 67.2, 36.9, 0.4, 52.4, 58.2, 39.1)),
    ("Ettin-Dec-150m", (28.6, 40.3, 43.2, 29.2, 66.6, 89.6, 40.1, 11.2, 53.7, 59.0, 46.2)),
    ("Pythia-410m", (24.7, 40.6, 51.5, 29.4, 67.0, 72.3, 39.0, 1.8, 53.6, 65.2, 44.5)),
    ("SmolLM2-360m", (37.6, 56.3, 53.5, 37.6, 71.8, 86.6, 40.7, 18.4, 58.6, 70.3, 53.1)),
    ("Ettin-Dec-400m", (33.6, 54.3, 52.3, 34.4, 71.0, 91.8, 45.5, 18.3, 57.6, 71.8, 53.1)),
    ("OLMo-1B-0724", (32.3, 66.1, 61.0, 35.6, 75.1, 91.8, 49.2, 1.2, 61.6, 76.9, 55.1)),
    ("Llama-3.2-1B", (36.2, 63.7, 62.1, 37.2, 75.0, 88.4, 43.2, 24.9, 60.6, 74.7, 56.6)),
    ("Ettin-Dec-1B", (39.7, 62.9, 58.4, 41.6, 74.4, 93.8, 48.2, 29.3, 62.7, 79.1, 59.0)),
)

DECODER_COLUMN_NAMES = {
    "ARC": "ARC",
    "HS": "HellaSwag",
    "LMB": "LAMBADA",
    "OBQA": "OpenBookQA",
    "PIQA": "PIQA",
    "SciQ": "SciQ",
    "SIQA": "SocialIQA",
    "TQA": "TriviaQA",
    "WG": "WinoGrande",
    "WSC": "WSC",
    "Avg": "average",
}

# The published encoder-versus-decoder findings, per task family (reference sections 0, 5 and 6.1).
# "ahead" is the objective the paper found better (for bias: the one choosing neutral pronouns more often).
DIRECTIONS: dict[str, dict[str, str | None]] = {
    "classification": {
        "ahead": "encoder",
        "claim": "encoders beat decoders on classification: a 400M encoder outperforms a 1B decoder on MNLI; "
        "MNLI 150M encoder 89.2 > 400M decoder 88.2",
        "source": "paper abstract; HF blog 'Ettin Suite' (reference sections 0 and 5)",
    },
    "retrieval": {
        "ahead": "encoder",
        "claim": "encoders beat decoders on retrieval (MS MARCO dev nDCG@10 across sizes)",
        "source": "paper figure enc_vs_dec.jpg (reference section 5)",
    },
    "multiple choice": {
        "ahead": "decoder",
        "claim": "decoders beat encoders on the lm-eval generative-task average (PIQA is one of its tasks): "
        "decoders about 36 to 59, encoders about 35 to 51 across sizes",
        "source": "paper figure enc_vs_dec.jpg (reference section 5), table of section 6.3",
    },
    "generation": {
        "ahead": "decoder",
        "claim": "decoders beat encoders on generative tasks ('and vice versa for generative tasks')",
        "source": "paper abstract (reference section 0)",
    },
    "language modelling": {
        "ahead": "decoder",
        "claim": "decoders are the generative models; the paper ranks them on downstream generative tasks, "
        "not on perplexity against encoders",
        "source": "paper abstract (reference section 0)",
    },
    "bias": {
        "ahead": "encoder",  # here 'ahead' means the higher neutral-pronoun rate, not a better score
        "claim": "encoders choose neutral pronouns more often (60%+ neutral vs 30%+ for decoders); both show a "
        "male bias, decoders slightly more",
        "source": "HF blog 'Ettin Suite', WinoGender gotcha split (reference section 6.1)",
    },
}
