"""One token per phoneme (or character), built with Hugging Face `tokenizers`.

Special tokens: PAD, UNK and UTT_BOUNDARY; the utterance-boundary token is the model's BOS and EOS
and separates utterances in the training stream. Word boundaries are never tokens: they are gold
labels only. The tokenizer is saved and loaded as a `PreTrainedTokenizerFast`
(`save_pretrained` / `AutoTokenizer.from_pretrained`), so the exported model is self-contained.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from seg_tune.corpus import Utterance

PAD, UNK, UTT_BOUNDARY = "PAD", "UNK", "UTT_BOUNDARY"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, UTT_BOUNDARY)


def build_tokenizer(utterances: Iterable[Utterance]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over whitespace-separated units; ids sorted for reproducibility."""
    return tokenizer_from_units({p for u in utterances for p in u.phonemes})


def tokenizer_from_units(units: Iterable[str]) -> PreTrainedTokenizerFast:
    """The tokenizer of `build_tokenizer` for a corpus whose units are `units` (any order)."""
    ordered = sorted(set(units) - set(SPECIAL_TOKENS))
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *ordered))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=UTT_BOUNDARY,
        eos_token=UTT_BOUNDARY,
        model_input_names=["input_ids", "attention_mask"],
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def encode(tokenizer: PreTrainedTokenizerFast, utterances: Sequence[Utterance]) -> list[list[int]]:
    """Token ids of each utterance's phonemes (no special tokens). Unknown units map to UNK."""
    vocab = tokenizer.get_vocab()
    unk = vocab[UNK]
    return [[vocab.get(p, unk) for p in u.phonemes] for u in utterances]


def boundary_id(tokenizer: PreTrainedTokenizerFast) -> int:
    return tokenizer.convert_tokens_to_ids(UTT_BOUNDARY)
