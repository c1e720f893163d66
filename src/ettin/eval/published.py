"""The published Ettin numbers for the report's reference block (data only).

Source: "Seq vs Seq: An Open Suite of Paired Encoders and Decoders" (arXiv 2507.11412), the paper tables as
cropped into `JHU-CLSP/ettin-encoder-vs-decoder:assets/encoder_results.jpg` and `.../decoder_results.jpg`,
transcribed in ../shared/reference/ettin.md sections 6.2 and 6.3 (Ettin rows only). The images were read by
eye: check the digits against the paper before quoting one. Scores are percentages (0-100), as published.
"""

SOURCE = ("Seq vs Seq: An Open Suite of Paired Encoders and Decoders (arXiv 2507.11412), paper tables via "
          "JHU-CLSP/ettin-encoder-vs-decoder assets/encoder_results.jpg and decoder_results.jpg (read by eye)")

ENCODER_COLUMNS = ("CSN", "MLDR", "Clustering", "Retrieval", "MTEB v2", "SST-2", "MNLI", "GLUE Avg")
ENCODER_ROWS = (
    ("Ettin-Enc-17m", (59.1, 24.4, 39.1, 35.6, 48.9, 91.2, 79.5, 79.2)),
    ("Ettin-Enc-32m", (69.2, 28.4, 39.6, 39.7, 50.9, 92.0, 83.4, 83.5)),
    ("Ettin-Enc-68m", (75.1, 30.1, 40.1, 43.1, 52.6, 94.4, 87.0, 87.2)),
    ("Ettin-Enc-150m", (76.3, 31.8, 41.5, 45.7, 54.0, 95.8, 89.2, 88.9)),
    ("Ettin-Enc-400m", (80.7, 36.2, 41.8, 48.4, 55.5, 96.7, 91.3, 90.8)),
    ("Ettin-Enc-1B", (82.3, 40.2, 41.9, 50.1, 56.0, 97.1, 91.8, 91.6)),
)
# lm-evaluation-harness tasks (DECODER_NOTE spells the short names out).
DECODER_COLUMNS = ("ARC", "HS", "LMB", "OBQA", "PIQA", "SciQ", "SIQA", "TQA", "WG", "WSC", "Avg")
DECODER_ROWS = (
    ("Ettin-Dec-17m", (21.3, 27.1, 23.0, 27.2, 57.7, 71.1, 35.4, 2.6, 50.9, 48.0, 36.4)),
    ("Ettin-Dec-32m", (23.5, 28.5, 28.5, 28.2, 57.7, 77.5, 36.4, 3.8, 53.1, 50.2, 38.7)),
    ("Ettin-Dec-68m", (25.3, 33.4, 35.2, 29.4, 61.8, 83.2, 38.8, 5.6, 50.1, 55.3, 41.8)),
    ("Ettin-Dec-150m", (28.6, 40.3, 43.2, 29.2, 66.6, 89.6, 40.1, 11.2, 53.7, 59.0, 46.2)),
    ("Ettin-Dec-400m", (33.6, 54.3, 52.3, 34.4, 71.0, 91.8, 45.5, 18.3, 57.6, 71.8, 53.1)),
    ("Ettin-Dec-1B", (39.7, 62.9, 58.4, 41.6, 74.4, 93.8, 48.2, 29.3, 62.7, 79.1, 59.0)),
)
DECODER_NOTE = ("HS HellaSwag, LMB LAMBADA, OBQA OpenBookQA, SIQA SocialIQA, TQA TriviaQA, WG WinoGrande, "
                "Avg the average")
