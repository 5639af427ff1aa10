"""seg_tune: tune character/phoneme GPT-2 language models for unsupervised word segmentation.

Stages of the data's path, one module each:
corpus -> tokenizer -> model -> train -> cues -> segment -> score (baseline: TP segmentation);
then search_space -> tune (Ray Tune) -> report, and the SLURM scripts in cluster/.
"""

__version__ = "0.1.0"
