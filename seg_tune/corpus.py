"""Corpora: utterances with their gold word boundaries.

An `Utterance` is a tuple of words, each word a tuple of phonemes (or characters). The model never
sees the word boundaries: they are the gold labels that segmentation is scored against.

Sources (all return `list[Utterance]`):
- tagged phoneme files (`load_tagged`): phonemes separated by whitespace plus a word-boundary
  token, either after every word (`;eword`, the wordseg convention) or between words
  (`WORD_BOUNDARY`, IPA-CHILDES). Both conventions parse the same way: boundary tokens split the
  line into words and empty words are dropped.
- orthographic text (`load_text`): every character is a unit, a space is a word boundary.
- Hugging Face datasets (`load_hf`): name/config/split/column through `datasets`, the column
  holding tagged phoneme strings or orthographic text; a local dataset folder works the same way.
- the embedded synthetic corpus (`synthetic_corpus`): seeded pseudo-words over a phoneme inventory
  with Zipfian frequencies; the default, so that everything runs without data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from seg_tune.errors import DataError, location

DEFAULT_BOUNDARY_TOKENS: tuple[str, ...] = (";eword", "WORD_BOUNDARY")
Convention = Literal["after", "between"]


@dataclass(frozen=True, slots=True)
class Utterance:
    """One utterance: a non-empty tuple of non-empty words, each a tuple of units (phonemes)."""

    words: tuple[tuple[str, ...], ...]

    @property
    def phonemes(self) -> tuple[str, ...]:
        return tuple(p for word in self.words for p in word)

    def __len__(self) -> int:
        return sum(len(w) for w in self.words)

    @property
    def word_starts(self) -> list[bool]:
        """One flag per phoneme: True where a word starts (always True at position 0)."""
        flags: list[bool] = []
        for word in self.words:
            flags.extend([True] + [False] * (len(word) - 1))
        return flags

    @classmethod
    def from_word_starts(cls, phonemes: Sequence[str], starts: Sequence[bool]) -> Utterance:
        """Rebuild words from phonemes and start flags (position 0 always starts a word)."""
        if len(phonemes) != len(starts):
            raise ValueError(f"{len(phonemes)} phonemes but {len(starts)} start flags")
        words: list[list[str]] = []
        for i, (p, start) in enumerate(zip(phonemes, starts, strict=True)):
            if start or i == 0:
                words.append([])
            words[-1].append(p)
        return cls(tuple(tuple(w) for w in words))

    def tagged(self, boundary_token: str = ";eword", convention: Convention = "after") -> str:
        """The utterance as one line of a tagged file."""
        sep = f" {boundary_token} "
        line = sep.join(" ".join(w) for w in self.words)
        return line + f" {boundary_token}" if convention == "after" else line

    def text(self) -> str:
        """Orthographic form: units concatenated, words separated by a space."""
        return " ".join("".join(w) for w in self.words)


# --------------------------------------------------------------------------- parsing one line


def parse_tagged_line(
    line: str, boundary_tokens: Iterable[str] = DEFAULT_BOUNDARY_TOKENS
) -> Utterance | None:
    """Parse one tagged line; None for a blank line. Raises ValueError for boundary-only lines."""
    tokens = line.split()  # runs of spaces, tabs, trailing spaces and CR all vanish here
    if not tokens:
        return None
    boundaries = set(boundary_tokens)
    words: list[tuple[str, ...]] = []
    current: list[str] = []
    for tok in tokens:
        if tok in boundaries:
            if current:
                words.append(tuple(current))
            current = []
        else:
            current.append(tok)
    if current:
        words.append(tuple(current))
    if not words:
        raise ValueError("the line holds only word-boundary tokens, no phonemes")
    return Utterance(tuple(words))


def parse_text_line(line: str) -> Utterance | None:
    """Parse one orthographic line (characters are units, whitespace separates words)."""
    words = tuple(tuple(w) for w in line.split())
    return Utterance(words) if words else None


# --------------------------------------------------------------------------- files


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.exists():
        raise DataError(f"{path}: no such file; give the path of a corpus file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give the path of a corpus file")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{location(path, lineno)}: bytes that are not UTF-8 "
                    f"(at byte {exc.start}: {raw[exc.start : exc.start + 4]!r}); "
                    "re-encode the file as UTF-8"
                ) from None


def _nonempty(utterances: list[Utterance], path: object) -> list[Utterance]:
    if not utterances:
        raise DataError(f"{path}: empty corpus (no utterance with a phoneme in it)")
    return utterances


def load_tagged(
    path: str | Path, boundary_tokens: Iterable[str] = DEFAULT_BOUNDARY_TOKENS
) -> list[Utterance]:
    """Load a tagged phoneme file (one utterance per line). Blank lines are skipped."""
    path = Path(path)
    tokens = tuple(boundary_tokens)
    utterances: list[Utterance] = []
    boundaries_seen = False
    for lineno, line in _read_lines(path):
        try:
            utt = parse_tagged_line(line, tokens)
        except ValueError as exc:
            raise DataError(f"{location(path, lineno)}: {exc}: {line.strip()[:60]!r}") from None
        if utt is not None:
            utterances.append(utt)
            boundaries_seen = boundaries_seen or len(utt.words) > 1 or _has_token(line, tokens)
    _refuse_unbounded(utterances, boundaries_seen, path, tokens)
    return _nonempty(utterances, path)


def _has_token(line: str, tokens: tuple[str, ...]) -> bool:
    return any(tok in line.split() for tok in tokens)


def _refuse_unbounded(
    utterances: list[Utterance], seen: bool, where: object, tokens: tuple[str, ...]
) -> None:
    """A tagged corpus with no word-boundary token anywhere would train and score F = 0 with
    every utterance one word: refuse it, naming the likely fix."""
    if utterances and not seen:
        raise DataError(
            f"{where}: no word-boundary token ({', '.join(tokens)}) in any line, so every "
            "utterance would be one word; give the file's token as boundary_tokens, or use "
            "kind: text for orthographic text (a space ends a word)"
        )


def _refuse_tagged_text(line: str, where: str) -> None:
    """Text read as orthographic whose lines hold a boundary token's spelling: the model would
    'learn' the boundaries from the letters of the token."""
    units = set(line.split())
    found = [tok for tok in DEFAULT_BOUNDARY_TOKENS if tok in units]
    if found:
        raise DataError(
            f"{where}: {found[0]!r} in orthographic text looks like a tagged phoneme file's "
            "word-boundary token; use kind: tagged (or format: tagged for a dataset)"
        )


def format_warnings(utterances: Sequence[Utterance], where: object) -> list[str]:
    """Signs of a corpus read in the wrong format that still loads: every word one unit long
    (a boundary token after every phoneme, or characters separated by spaces)."""
    words = [w for u in utterances for w in u.words]
    if len(words) > 1 and all(len(w) == 1 for w in words):
        return [
            f"{where}: every one of its {len(words):,} words is one unit long; check the "
            "boundary token (is it after every phoneme?) and the kind (tagged or text)"
        ]
    return []


def load_text(path: str | Path) -> list[Utterance]:
    """Load an orthographic text file: one utterance per line, characters as units."""
    path = Path(path)
    utterances = []
    for lineno, line in _read_lines(path):
        _refuse_tagged_text(line, location(path, lineno))
        if (utt := parse_text_line(line)) is not None:
            utterances.append(utt)
    return _nonempty(utterances, path)


def write_tagged(
    path: str | Path,
    utterances: Iterable[Utterance],
    boundary_token: str = ";eword",
    convention: Convention = "after",
) -> None:
    """Write utterances in the tagged format, one per line (the folder is made if missing)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(
        "".join(u.tagged(boundary_token, convention) + "\n" for u in utterances), encoding="utf-8"
    )


# --------------------------------------------------------------------------- overlap of splits

# A test split overlaps another split when more than OVERLAP_SHARE of its runs of OVERLAP_RUN
# consecutive utterances also occur, identical and in the same order, in that split (see
# `shared_run_share`, whose docstring gives the measurements behind both numbers).
OVERLAP_RUN = 4
OVERLAP_SHARE = 0.05


def _runs(utterances: Sequence[Utterance], k: int) -> Iterator[tuple[int, ...]]:
    """Each run of k consecutive utterances, as a tuple of the utterances' hashes."""
    ids = [hash(u.words) for u in utterances]
    if len(ids) < k:
        return iter(())
    return zip(*(ids[i : len(ids) - k + 1 + i] for i in range(k)), strict=True)


def shared_run_share(
    test: Sequence[Utterance], other: Sequence[Utterance], k: int = OVERLAP_RUN
) -> float:
    """The share of `test`'s runs of k consecutive utterances (k = len(test) when shorter) that
    also occur, identical and in the same order, in `other`: 1.0 for a copy of (a chunk of)
    `other`, near 0 for independent data. One hash set: ~0.02 s for 28k x 14k utterances.

    Why runs, and why k = 4 with a refusal above `OVERLAP_SHARE` = 5%: child-directed speech
    repeats short utterances ("yeah", "good girl") all the time, so a single shared utterance
    proves nothing, while a run of several identical consecutive utterances is rare. Measured on
    childes-en (data/childes-en: train 28,000 and dev 14,000 utterances, in transcript order),
    shares for k = 1, 2, 3, 4, 5..8:
      dev vs train:                          32%, 1.7%, 0.05%, 0.007% (1 run: "oʊ" x 4), 0
      dev's 2nd half vs train + 1st half:    41%, 3.8%, 0.2%,  0,                        0
      dev's 2nd half vs its 1st half:        34%, 3.1%, 0.13%, 0,                        0
      train's last 10% vs its first 90%:     26%, 1.8%, 0.04%, 0,                        0
      synthetic corpus, a 10% block vs rest: 50%, 6.8%, 0.7%,  0,                        0
      synthetic, 50-word lexicon, 6k vs 54k: 73%, 25%,  3.6%,  0.32%,                    0
      the same file twice, or a chunk copied: 100% for every k
    Natural repeats stay below 0.4% of the 4-runs (the longest shared runs are a word said over
    and over: "oʊ oʊ oʊ oʊ", "haɪ haɪ haɪ"), duplicated data is at 100%: the 5% line is over 15x
    above the first and 20x below the second. Single utterances could not separate them (natural
    shares reach 73%), so a shuffled copy of a split is not detected by this measure."""
    if not test or not other:
        return 0.0
    k = max(1, min(k, len(test)))
    seen = set(_runs(other, k))
    runs = list(_runs(test, k))
    return sum(run in seen for run in runs) / len(runs) if runs else 0.0


# --------------------------------------------------------------------------- Hugging Face datasets


def load_hf(name: str, **options: Any) -> list[Utterance]:
    """Load a dataset through `datasets.load_dataset` (a hub name, or a local folder or script);
    `options` are those of `load_hf_transcripts`, which also says where transcripts begin."""
    return load_hf_transcripts(name, **options)[0]


class Range(BaseModel):
    """A `where` condition on a numeric column: min <= value <= max (either end may be left
    out); rows without a value fail it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: float | None = None
    max: float | None = None

    def __str__(self) -> str:
        low = "" if self.min is None else f"{self.min:g}"
        high = "" if self.max is None else f"{self.max:g}"
        return f"{low}..{high}"

    def holds(self, value: Any) -> bool:
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


def _holds(condition: Any, value: Any) -> bool:
    if isinstance(condition, Range):
        return condition.holds(value)
    if isinstance(condition, Mapping):
        return Range.model_validate(condition).holds(value)
    return bool(value == condition)


def load_hf_transcripts(
    name: str,
    *,
    config: str | None = None,
    split: str = "train",
    column: str = "text",
    fmt: Literal["tagged", "text"] = "tagged",
    boundary_tokens: Iterable[str] = DEFAULT_BOUNDARY_TOKENS,
    max_rows: int | None = None,
    where: Mapping[str, Any] | None = None,
    transcript_column: str | None = None,
) -> tuple[list[Utterance], tuple[int, ...] | None]:
    """A dataset's utterances, and where transcripts begin: the indices (into the utterances)
    of the first utterance of each transcript, a transcript being a run of rows with one value
    of `transcript_column` (IPA-CHILDES: `transcript_id`); None without a transcript column.

    A folder written by `Dataset.save_to_disk` is loaded with `datasets.load_from_disk`. `where`
    keeps the rows whose columns equal the given values (IPA-CHILDES: `{is_child: false}` leaves
    out the children's own speech) or lie in a `Range` (`{target_child_age: {min: 12, max:
    36}}`), before `max_rows` counts them.
    """
    import datasets  # imported here: slow to import, and only this source needs it

    source = f"dataset {name!r}" + (f" (config {config!r})" if config else "")
    try:
        if Path(name).is_dir() and (Path(name) / "dataset_info.json").exists():
            ds = datasets.load_from_disk(name)
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name, config, split=split)
    except (FileNotFoundError, ValueError, KeyError, ConnectionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{source}, split {split!r}: could not be loaded: {first}") from None
    if column not in ds.column_names:
        raise DataError(
            f"{source}, split {split!r}: no column {column!r}; columns are {ds.column_names}"
        )
    if conditions := dict(where or {}):
        if missing := [key for key in conditions if key not in ds.column_names]:
            raise DataError(
                f"{source}, split {split!r}: 'where' names no column {missing[0]!r}; "
                f"columns are {ds.column_names}"
            )
        ds = ds.filter(lambda row: all(_holds(v, row[k]) for k, v in conditions.items()))
    if transcript_column is not None and transcript_column not in ds.column_names:
        raise DataError(
            f"{source}, split {split!r}: transcript_column {transcript_column!r} is not a "
            f"column; columns are {ds.column_names}"
        )
    if max_rows is not None:
        ds = ds.select(range(min(max_rows, len(ds))))
    rows = ds[column]
    keys = ds[transcript_column] if transcript_column is not None else None
    tokens = tuple(boundary_tokens)
    utterances: list[Utterance] = []
    starts: list[int] = []
    last_key: object = object()  # equal to no row's key: the first utterance starts one
    boundaries_seen = False
    for i, row in enumerate(rows):
        if row is None:
            continue
        try:
            if fmt == "tagged":
                utt = parse_tagged_line(row, tokens)
            else:
                _refuse_tagged_text(row, f"{source}, split {split!r}, row {i}")
                utt = parse_text_line(row)
        except ValueError as exc:
            raise DataError(f"{source}, split {split!r}, row {i}: {exc}: {row[:60]!r}") from None
        if utt is not None:
            if keys is not None and keys[i] != last_key:
                starts.append(len(utterances))
                last_key = keys[i]
            utterances.append(utt)
            boundaries_seen = boundaries_seen or len(utt.words) > 1 or _has_token(row, tokens)
    described = f"{source}, split {split!r}, column {column!r}"
    if fmt == "tagged":
        _refuse_unbounded(utterances, boundaries_seen, described, tokens)
    return _nonempty(utterances, described), tuple(starts) if keys is not None else None


# --------------------------------------------------------------------------- synthetic corpus

# The default phoneme inventory (ASCII stand-ins for IPA, so the default runs need no fonts) and
# word lengths (weights of 1, 2, 3, 4 syllables).
SYNTHETIC_CONSONANTS = (
    *("p", "b", "t", "d", "k", "g", "m", "n", "f", "v", "s", "z", "l", "r", "w", "j", "h"),
)
SYNTHETIC_VOWELS = ("a", "e", "i", "o", "u", "ae", "ai", "ou")
SYNTHETIC_SYLLABLE_WEIGHTS = (3.0, 4.0, 2.0, 1.0)


def synthetic_corpus(
    n_utterances: int = 6000,
    *,
    seed: int = 0,
    lexicon_size: int = 400,
    zipf_s: float = 1.1,
    max_words: int = 6,
    consonants: Sequence[str] = SYNTHETIC_CONSONANTS,
    vowels: Sequence[str] = SYNTHETIC_VOWELS,
    syllable_weights: Sequence[float] = SYNTHETIC_SYLLABLE_WEIGHTS,
) -> list[Utterance]:
    """The embedded corpus: seeded, so the same arguments give the same utterances.

    A lexicon of `lexicon_size` distinct pseudo-words of CV(C) syllables is drawn over the
    inventory (`consonants`, `vowels`: the default above, or a "language" of its own); a word has
    k syllables with weight `syllable_weights[k - 1]` (default 3:4:2:1 for one to four); word
    frequencies follow a Zipf law with exponent `zipf_s`; an utterance holds one to `max_words`
    words (short utterances are more frequent, as in child-directed speech). Word-internal
    transitions are more predictable than transitions across words, so the boundaries can be
    learnt. ValueError when the inventory cannot make `lexicon_size` distinct words.
    """
    if n_utterances < 1 or lexicon_size < 1 or max_words < 1:
        raise ValueError("n_utterances, lexicon_size and max_words must be positive")
    if not consonants or not vowels:
        raise ValueError("the inventory needs at least one consonant and one vowel")
    if not syllable_weights or min(syllable_weights) < 0 or sum(syllable_weights) <= 0:
        raise ValueError(
            f"syllable_weights {list(syllable_weights)}: weights of 1, 2, ... syllables, "
            "non-negative, at least one positive"
        )
    rng = random.Random(seed)
    lexicon = _pseudo_words(rng, lexicon_size, tuple(consonants), tuple(vowels), syllable_weights)
    weights = [1.0 / (rank**zipf_s) for rank in range(1, lexicon_size + 1)]
    cumulative = list(_accumulate(weights))
    length_weights = [math.exp(-0.45 * k) for k in range(max_words)]
    utterances = []
    for _ in range(n_utterances):
        n_words = rng.choices(range(1, max_words + 1), weights=length_weights)[0]
        words = rng.choices(lexicon, cum_weights=cumulative, k=n_words)
        utterances.append(Utterance(tuple(words)))
    return utterances


def _accumulate(values: Sequence[float]) -> Iterator[float]:
    total = 0.0
    for v in values:
        total += v
        yield total


def _pseudo_words(
    rng: random.Random,
    n: int,
    consonants: tuple[str, ...],
    vowels: tuple[str, ...],
    syllable_weights: Sequence[float],
) -> list[tuple[str, ...]]:
    seen: set[tuple[str, ...]] = set()
    words: list[tuple[str, ...]] = []
    lengths = range(1, len(syllable_weights) + 1)
    tries = 0
    while len(words) < n:
        tries += 1
        if tries > 200 * n + 10_000:
            raise ValueError(
                f"lexicon_size {n}: {len(consonants)} consonant(s), {len(vowels)} vowel(s) and "
                f"up to {len(syllable_weights)} syllable(s) made only {len(words)} distinct "
                "words; use a smaller lexicon, more phonemes or longer words"
            )
        n_syllables = rng.choices(lengths, weights=syllable_weights)[0]
        word: list[str] = []
        for _ in range(n_syllables):
            word.append(rng.choice(consonants))
            word.append(rng.choice(vowels))
            if rng.random() < 0.25:
                word.append(rng.choice(consonants))
        key = tuple(word)
        if key not in seen:
            seen.add(key)
            words.append(key)
    return words
