"""Typed, frozen configuration of one training run, validated once at the edge.

A run's YAML file has four sections (every key optional; defaults give a small model on the
embedded synthetic corpus):

    data:      {train: SOURCE, valid: SOURCE | null, valid_fraction: 0.1,
                test: SOURCE | null, test_fraction: null, train_size: TrainSize | null}
    model:     {preset: 800k, n_layer, n_head, n_embd, n_inner, n_positions, dropout}
    training:  {steps, batch_size, block_size, optimizer, lr, ...}
    score:     {type_key: wordseg}

A SOURCE is `{kind: synthetic | tagged | text | hf, ...}` (see `DataSource`). Unknown keys, wrong
types and out-of-range values are refused with one line naming the file, the key and the value.
The resolved config is saved with every checkpoint and exported model.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seg_tune import corpus
from seg_tune.errors import ConfigError, FieldError
from seg_tune.metrics import REPORTED_METRICS
from seg_tune.model import PRESETS
from seg_tune.score import DEFAULT_TYPE_KEY, TypeKey


class Strict(BaseModel):
    """Frozen, and refuses unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DataSource(Strict):
    """Where utterances come from. Fields other than `kind` apply to one kind only."""

    kind: Literal["synthetic", "tagged", "text", "hf"] = "synthetic"
    # tagged, text: a local file
    path: str | None = None
    boundary_tokens: tuple[str, ...] = corpus.DEFAULT_BOUNDARY_TOKENS  # word-boundary spellings
    # hf: a dataset on the hub or in a local folder
    name: str | None = None
    config: str | None = None  # hf: the dataset config (e.g. a language of IPA-CHILDES)
    split: str = "train"  # hf: the split
    column: str = "text"  # hf: the column holding the utterances
    format: Literal["tagged", "text"] = "tagged"  # hf: how the column is written
    # hf: keep rows whose columns equal these, or lie in a range: {is_child: false,
    # target_child_age: {min: 12, max: 36}} (both ends included; a row without a value is left out)
    where: dict[str, str | int | float | bool | corpus.Range] | None = None
    # hf: the column naming each row's transcript (IPA-CHILDES: transcript_id); held-out blocks
    # of this source (valid_fraction, test_fraction) are then cut between transcripts
    transcript_column: str | None = None
    # synthetic: the embedded corpus
    n_utterances: int = Field(6000, ge=1)
    seed: int = 0  # synthetic: the corpus seed
    lexicon_size: int = Field(400, ge=1)  # synthetic: distinct words
    # synthetic: a "language" of its own: its phonemes, and its word lengths as the weights of
    # 1, 2, ... CV(C) syllables (defaults: corpus.SYNTHETIC_CONSONANTS, _VOWELS, _SYLLABLE_WEIGHTS)
    consonants: tuple[str, ...] | None = None
    vowels: tuple[str, ...] | None = None
    syllable_weights: tuple[float, ...] | None = None
    # any kind: drop the first N utterances (e.g. a file's second half as a test split)
    skip_utterances: int = Field(0, ge=0)
    # any kind: keep the first N utterances (after skip_utterances)
    max_utterances: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check_kind(self) -> DataSource:
        if self.kind in ("tagged", "text"):
            if not self.path:
                raise ValueError(f"kind {self.kind!r} needs 'path' (a corpus file)")
            if not Path(self.path).is_file():
                raise ValueError(f"path {self.path!r}: no such file")
        if self.kind == "hf" and not self.name:
            raise ValueError("kind 'hf' needs 'name' (a dataset name or local folder)")
        if self.where and self.kind != "hf":
            raise ValueError(
                f"'where' filters dataset rows: kind {self.kind!r} has none (use kind: hf)"
            )
        self._check_inventory()
        if self.transcript_column and self.kind != "hf":
            raise ValueError(
                f"transcript_column {self.transcript_column!r} names a dataset column: kind "
                f"{self.kind!r} has none (use kind: hf; a file's held-out blocks are cut by "
                "utterance: give data.valid/data.test with skip_utterances/max_utterances to "
                "cut it elsewhere)"
            )
        return self

    def _inventory(self) -> dict[str, tuple[Any, ...]]:
        """The synthetic language's own settings (`corpus.synthetic_corpus` keywords) given."""
        fields = {
            "consonants": self.consonants,
            "vowels": self.vowels,
            "syllable_weights": self.syllable_weights,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def _check_inventory(self) -> None:
        given = self._inventory()
        if given and self.kind != "synthetic":
            raise ValueError(
                f"{', '.join(given)} make a synthetic language: kind {self.kind!r} reads its "
                "phonemes from its data (use kind: synthetic)"
            )
        from seg_tune.tokenizer import SPECIAL_TOKENS

        reserved = {*self.boundary_tokens, *SPECIAL_TOKENS}
        for key in ("consonants", "vowels"):
            phonemes = given.get(key)
            if phonemes is None:
                continue
            bad = [p for p in phonemes if not p or p != p.strip() or " " in p or p in reserved]
            if not phonemes or bad or len(set(phonemes)) != len(phonemes):
                raise ValueError(
                    f"{key} {list(phonemes)}: give distinct phonemes, each a non-empty string "
                    "without spaces that is no boundary or special token"
                )
        weights = self.syllable_weights
        if weights is not None and (not weights or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(
                f"syllable_weights {list(weights)}: the weights of words of 1, 2, ... "
                "syllables, non-negative, at least one positive"
            )

    def load(self) -> list[corpus.Utterance]:
        return self.load_marked()[0]

    def load_marked(self) -> tuple[list[corpus.Utterance], tuple[int, ...] | None]:
        """The utterances, and the indices of those that begin a transcript (the first is 0);
        None when the source does not say where transcripts begin (see transcript_column)."""
        starts: tuple[int, ...] | None = None
        if self.kind == "synthetic":
            inventory = self._inventory()
            try:
                utts = corpus.synthetic_corpus(
                    self.n_utterances, seed=self.seed, lexicon_size=self.lexicon_size, **inventory
                )
            except ValueError as e:
                raise ConfigError(f"{self.describe()}: {e}") from None
        elif self.kind == "tagged":
            utts = corpus.load_tagged(self.path, self.boundary_tokens)  # type: ignore[arg-type]
        elif self.kind == "text":
            utts = corpus.load_text(self.path)  # type: ignore[arg-type]
        else:
            utts, starts = corpus.load_hf_transcripts(
                self.name,  # type: ignore[arg-type]
                config=self.config,
                split=self.split,
                column=self.column,
                fmt=self.format,
                boundary_tokens=self.boundary_tokens,
                max_rows=self.max_utterances and self.skip_utterances + self.max_utterances,
                where=self.where,
                transcript_column=self.transcript_column,
            )
        if self.skip_utterances:
            if self.skip_utterances >= len(utts):
                raise ConfigError(
                    f"skip_utterances {self.skip_utterances}: {self.describe()} has only "
                    f"{len(utts)} utterance(s); skip fewer"
                )
            utts = utts[self.skip_utterances :]
        if self.max_utterances:
            utts = utts[: self.max_utterances]
        if starts is not None:  # the first utterance kept begins a transcript (or its rest)
            shifted = (s - self.skip_utterances for s in starts)
            starts = (0, *(s for s in shifted if 0 < s < len(utts)))
        return utts, starts

    def describe(self) -> str:
        where = self._where()
        if self.skip_utterances or self.max_utterances:
            first = self.skip_utterances + 1
            last = f"{self.skip_utterances + self.max_utterances:,}" if self.max_utterances else ""
            where += f", utterances {first:,}..{last}"
        return where

    def _where(self) -> str:
        if self.kind == "synthetic":
            return f"synthetic corpus (seed {self.seed}, {self.n_utterances} utterances)"
        if self.kind == "hf":
            rows = "".join(f", {k}={v}" for k, v in (self.where or {}).items())
            return f"dataset {self.name} [{self.config or '-'}:{self.split}:{self.column}{rows}]"
        return f"{self.kind} file {self.path}"


# how much of a training split an utterance is, per TrainSize.unit
_SIZE_MEASURES = {
    "words": lambda u: len(u.words),
    "phonemes": len,
    "utterances": lambda u: 1,
}


class TrainSize(Strict):
    """A training-set size: `amount` words (or phonemes, or utterances) of the training split,
    drawn as whole utterances in one seeded order, so that a smaller amount's sample is part of
    a larger one's (`DataConfig.sized`)."""

    amount: int = Field(gt=0)
    unit: Literal["words", "phonemes", "utterances"] = "words"  # phonemes: the model's tokens
    seed: int = 0


class DataConfig(Strict):
    """The train and validation splits, and the held-out test split.

    Without `valid`, the last `valid_fraction` of train's utterances is held out for validation.
    The test split is `test` (a source), or with `test_fraction` a block of train's utterances:
    train's order becomes [train | test | valid] without `valid` (valid stays the tail it is
    without a test split), train's tail with `valid` given. Blocks are contiguous whole
    utterances: corpus files are in transcript order, so a block keeps transcripts whole except
    at its two ends. When the source says where transcripts begin (`transcript_column`), the
    cuts move to the nearest transcript starts, and every transcript is in one split only.
    `load` never reads the test split: `load_test` does (the final phase, and
    the sweep driver's overlap check before the search).

    `train_size` ({amount: N, unit: words | phonemes | utterances, seed: 0}) then keeps N gold
    words (or N phonemes, or N utterances) of the training split only, as whole utterances
    (`sized`): the shortest prefix
    of one seeded order of them, back in corpus order, so that a smaller amount's sample is part
    of a larger one's with the same seed. Valid and test are cut first and never change with it;
    an amount above what the training split holds is refused (ConfigError) where it is read."""

    train: DataSource = DataSource()
    valid: DataSource | None = None  # null: the last valid_fraction of train is held out
    valid_fraction: float = Field(0.1, gt=0, lt=1)  # of train, when valid is null
    # the held-out test split: a source like train; null: none, or a block of train
    # (test_fraction). A sweep reads it only to refuse one that overlaps train or valid, before
    # Ray starts, and in its final phase; no trial reads it
    test: DataSource | None = None
    # of train, when test is null: the block before valid's tail (valid null) or train's tail
    test_fraction: float | None = Field(None, gt=0, lt=1)
    # train on this many words (or utterances) of the training split only, after valid and test
    # are cut; null: all of it
    train_size: TrainSize | None = None

    @model_validator(mode="after")
    def _check_test(self) -> DataConfig:
        if self.test is not None and self.test_fraction is not None:
            raise ValueError(
                f"test and test_fraction ({self.test_fraction}) are both given: the test split "
                "is a source (test) or a block of train (test_fraction), not both"
            )
        fractions = (self.test_fraction or 0) + self.valid_fraction
        if self.test_fraction and self.valid is None and fractions >= 1:
            raise ValueError(
                f"test_fraction {self.test_fraction} + valid_fraction {self.valid_fraction} "
                "leave no training utterances; together they must be below 1"
            )
        return self

    @property
    def has_test(self) -> bool:
        """A test split is configured (data.test or data.test_fraction)."""
        return self.test is not None or self.test_fraction is not None

    def _cuts(self, n: int, starts: tuple[int, ...] | None = None) -> tuple[int, int]:
        """(end of train, end of test) in train's n utterances; valid follows up to n. With
        `starts` (where transcripts begin), each cut moves to the transcript start nearest it."""
        n_valid = 0 if self.valid is not None else max(1, round(n * self.valid_fraction))
        n_test = max(1, round(n * self.test_fraction)) if self.test_fraction else 0
        held = [f"test_fraction {self.test_fraction}"] if n_test else []
        held += [f"valid_fraction {self.valid_fraction}"] if n_valid else []
        if n_valid + n_test >= n:
            raise ConfigError(
                f"data.train ({self.train.describe()}): {n} utterance(s) cannot be split into "
                f"train and held-out utterances ({', '.join(held)}); use more data"
                + ("" if self.valid is not None else " or give data.valid")
            )
        end_test, end_train = n - n_valid, n - n_valid - n_test
        if starts is None or not held:
            return end_train, end_test
        if n_valid:
            end_test = _nearest(starts, end_test, below=n)
        if n_test and end_test is not None:
            end_train = _nearest(starts, end_train, below=end_test)
        else:
            end_train = end_test
        if end_train is None or end_test is None:
            raise ConfigError(
                f"data.train ({self.train.describe()}): its {len(starts)} transcript(s) "
                f"(column {self.train.transcript_column!r}) cannot be cut into train and "
                f"held-out blocks of whole transcripts ({', '.join(held)}); use more "
                "transcripts, or give data.valid and data.test"
            )
        return end_train, end_test

    def _blocks(
        self, source: tuple[list[corpus.Utterance], tuple[int, ...] | None]
    ) -> tuple[list[corpus.Utterance], list[corpus.Utterance], list[corpus.Utterance]]:
        """Train's utterances (and its transcript starts) cut into (train, the test block, the
        validation tail); the last two are empty when test_fraction is unset or valid given."""
        train, starts = source
        end_train, end_test = self._cuts(len(train), starts)
        return train[:end_train], train[end_train:end_test], train[end_test:]

    def sized(self, fit: list[corpus.Utterance]) -> list[corpus.Utterance]:
        """The training utterances `train_size` keeps (all without it): the shortest prefix of
        one seeded order of them that holds `amount` words (or phonemes, boundaries not counted,
        or utterances), back in corpus order. One order per seed, whatever the amount: samples
        are nested."""
        size = self.train_size
        if size is None:
            return fit
        order = list(range(len(fit)))
        random.Random(size.seed).shuffle(order)
        measure = _SIZE_MEASURES[size.unit]
        have = sum(measure(u) for u in fit)
        if have < size.amount:
            raise ConfigError(
                f"data.train_size.amount: {size.amount:,} {size.unit}, but the training split of "
                f"data.train ({self.train.describe()}) has {have:,} {size.unit}; lower the "
                "amount or use more data"
            )
        kept, count = [], 0
        for i in order:
            if count >= size.amount:
                break
            kept.append(i)
            count += measure(fit[i])
        return [fit[i] for i in sorted(kept)]

    def load(self) -> tuple[list[corpus.Utterance], list[corpus.Utterance]]:
        """Train and validation utterances (never the test split: a block of train that is the
        test split is left out of train). Without `valid`, the tail of train is held out."""
        fit, _, tail = self._blocks(self.train.load_marked())
        return self.sized(fit), self.valid.load() if self.valid is not None else tail

    def load_splits(self) -> Splits:
        """Train, validation and test utterances, train read once (the final phase and the
        driver's overlap check; a trial calls `load`)."""
        whole, starts = self.train.load_marked()
        fit, block, tail = self._blocks((whole, starts))
        valid = self.valid.load() if self.valid is not None else tail
        test = self.test.load() if self.test is not None else block if self.has_test else None
        return Splits(self.sized(fit), valid, test, len(whole), starts is not None, len(fit))

    def load_test(self) -> list[corpus.Utterance] | None:
        """The test utterances; None when there is no test split. Only the final phase (and the
        sweep driver's overlap check) reads them."""
        if self.test is not None:
            return self.test.load()
        if self.test_fraction is None:
            return None
        return self._blocks(self.train.load_marked())[1]

    def describe_valid(self) -> str:
        """Where the validation utterances come from."""
        if self.valid is not None:
            return self.valid.describe()
        return f"the last {self.valid_fraction:g} of {self.train.describe()}"

    def describe_test(self, splits: Splits | None = None) -> str:
        """Where the test utterances come from, e.g. "utterances 22,401..25,200 of tagged file
        X" (1-based, inclusive); "" when there is none. `splits`: this config's loaded splits
        (`load_splits`), else train is read to find the block."""
        if self.test is not None:
            return self.test.describe()
        if self.test_fraction is None:
            return ""
        splits = splits or self.load_splits()
        end_train = splits.n_train_block
        end_test = end_train + len(splits.test or [])
        whole = ", whole transcripts" if splits.by_transcript else ""
        return (
            f"utterances {end_train + 1:,}..{end_test:,} of {self.train.describe()} "
            f"(test_fraction {self.test_fraction:g} of its {splits.n_source:,}{whole})"
        )

    def refuse_overlap(self, splits: Splits) -> None:
        """ConfigError (one line naming both sources) when the test split overlaps train or
        valid: more than `corpus.OVERLAP_SHARE` (5%) of its runs of `corpus.OVERLAP_RUN` (4)
        consecutive utterances occur identically in that split (the rule and its measured
        margin: `corpus.shared_run_share`). A test source that is train's or valid's own file
        scores 100%, as does a copy of a chunk of either."""
        test = splits.test or []
        for name, utts, where in (
            ("data.train", splits.train, self.train.describe()),
            ("data.valid", splits.valid, self.describe_valid()),
        ):
            share = corpus.shared_run_share(test, utts)
            if share > corpus.OVERLAP_SHARE:
                k = min(corpus.OVERLAP_RUN, len(test))
                raise ConfigError(
                    f"data.test ({self.describe_test(splits)}) overlaps {name} ({where}): "
                    f"{share:.0%} of its runs of {k} consecutive utterances also occur there (at most "
                    f"{corpus.OVERLAP_SHARE:.0%} allowed; independent splits of child-directed "
                    "speech share under 0.5%); give a test split disjoint from train and valid"
                )


@dataclass(frozen=True)
class Splits:
    """A data config's three splits (`DataConfig.load_splits`)."""

    train: list[corpus.Utterance]
    valid: list[corpus.Utterance]
    test: list[corpus.Utterance] | None
    n_source: int  # utterances of the train source before the cuts (`describe_test`)
    by_transcript: bool  # the held-out blocks were cut between transcripts
    n_train_block: int  # train's block, before `train_size` drew from it (`describe_test`)


def _nearest(starts: tuple[int, ...], cut: int, *, below: int) -> int | None:
    """The transcript start nearest `cut` in 0 < start < below (the earlier on a tie); None
    when there is none."""
    inside = [s for s in starts if 0 < s < below]
    return min(inside, key=lambda s: (abs(s - cut), s)) if inside else None


class ScoreConfig(Strict):
    """How segmentations are scored (`seg_tune.score`)."""

    # what a word type is (type P/R/F): wordseg = its phonemes concatenated with no separator,
    # as wordseg does (`a ɪ` and `aɪ` are one type); phonemes = its phoneme sequence (two types)
    type_key: TypeKey = DEFAULT_TYPE_KEY


class ModelConfig(Strict):
    """GPT-2 shape. A preset fills layers/width/heads; explicit values override it."""

    preset: Literal["400k", "800k", "1M", "5M", "19M"] | None = "800k"  # the size (parameters)
    n_layer: int = Field(0, ge=0)  # 0 = from the preset
    n_embd: int = Field(0, ge=0)  # width; 0 = from the preset
    n_head: int = Field(0, ge=0)  # attention heads; 0 = from the preset
    n_inner: int | None = Field(None, ge=1)  # feed-forward width; None = 4 * n_embd
    n_positions: int = Field(256, ge=2)  # the longest context, in tokens
    dropout: float = Field(0.1, ge=0, lt=1)  # on embeddings, attention and residuals

    @model_validator(mode="after")
    def _resolve(self) -> ModelConfig:
        layers, width, heads = PRESETS[self.preset] if self.preset else (0, 0, 0)
        values = {
            "n_layer": self.n_layer or layers,
            "n_embd": self.n_embd or width,
            "n_head": self.n_head or heads,
        }
        for key, value in values.items():
            if value < 1:
                raise ValueError(f"{key} is needed when preset is null")
            object.__setattr__(self, key, value)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} must be divisible by n_head {self.n_head}")
        return self


class EarlyStopping(Strict):
    """Stop a run whose selection metric has not improved for a while (a normal finish)."""

    patience_evals: int = Field(..., ge=1)  # evaluations without an improvement before it stops
    min_delta: float = Field(0.0, ge=0)  # an improvement smaller than this does not count


class TrainingConfig(Strict):
    steps: int = Field(2000, ge=1)  # optimizer steps (a sweep: experiment.max_steps)
    epochs: float | None = Field(None, gt=0)  # when set: steps = ceil(epochs * blocks / batch)
    batch_size: int = Field(32, ge=1)  # sequences per step (over all workers)
    block_size: int = Field(128, ge=2)  # tokens per training sequence (<= model.n_positions)
    optimizer: Literal["adamw", "sgd"] = "adamw"  # sgd uses momentum
    lr: float = Field(1e-3, gt=0)  # peak learning rate (after warmup)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    weight_decay: float = Field(0.01, ge=0)  # decoupled (AdamW); L2 for sgd
    warmup_steps: int = Field(100, ge=0)  # linear warmup from 0 to lr
    lr_schedule: Literal["linear", "cosine", "constant"] = "linear"  # decay after warmup
    grad_clip: float = Field(1.0, ge=0)  # 0 = no clipping
    eval_every_steps: int = Field(200, ge=1)  # validation loss (and segmentation) every N
    eval_max_batches: int | None = Field(None, ge=1)  # None = the whole validation split
    segment_every_steps: int = Field(0, ge=0)  # 0 = at every evaluation
    segment_utterances: int = Field(500, ge=0)  # validation subset scored; 0 = no segmentation
    checkpoint_every_steps: int = Field(500, ge=1)  # and at every new best evaluation
    # also evaluate and checkpoint at these steps (the tuner sets ASHA's rungs here, so that a
    # trial paused at a rung resumes from that very step)
    checkpoint_at_steps: tuple[int, ...] = ()
    keep_checkpoints: int = Field(2, ge=1)  # newest kept (a sweep: the newest bests + latest)
    log_every_steps: int = Field(10, ge=1)  # progress bar updates
    seed: int = 0  # model init and batch order
    threads: int | None = Field(None, ge=1)  # torch threads per worker; None = leave as is
    # The best checkpoint (and a standalone run's best_model/) is the evaluation with the best
    # value of this reported metric; a sweep sets its objective here. An evaluation that did not
    # compute it (segmentation not due at that step) does not count.
    select_metric: str = "valid_loss"
    select_mode: Literal["min", "max"] = "min"  # the direction in which it is better
    # null: train the whole budget; {patience_evals: N, min_delta: x}: stop after N evaluations
    # without an improvement of more than x on select_metric (a sweep: on its objective)
    early_stopping: EarlyStopping | None = None

    @model_validator(mode="after")
    def _check_select(self) -> TrainingConfig:
        if self.select_metric not in REPORTED_METRICS:
            raise ValueError(
                f"select_metric {self.select_metric!r} is not a reported metric; e.g. "
                "valid_loss, seg_boundary_noedge_fscore (see seg_tune.metrics.REPORTED_METRICS)"
            )
        if self.select_mode != REPORTED_METRICS[self.select_metric]:
            raise ValueError(
                f"select_mode {self.select_mode!r}: {self.select_metric} is better when "
                f"{'lower' if REPORTED_METRICS[self.select_metric] == 'min' else 'higher'}"
            )
        return self


class RunConfig(Strict):
    """Everything one training run needs."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    score: ScoreConfig = ScoreConfig()

    @model_validator(mode="after")
    def _check_context(self) -> RunConfig:
        if self.training.block_size > self.model.n_positions:
            raise ValueError(
                f"training.block_size {self.training.block_size} exceeds model.n_positions "
                f"{self.model.n_positions}"
            )
        return self

    def with_overrides(self, overrides: Mapping[str, Any]) -> RunConfig:
        """A new config with dotted keys replaced, e.g. {"training.lr": 3e-3}; validated."""
        data = self.model_dump(mode="json")
        if "model.preset" in overrides:  # shapes come from the new preset unless given too
            for key in ("n_layer", "n_embd", "n_head"):
                if f"model.{key}" not in overrides:
                    data["model"][key] = 0
        for dotted, value in overrides.items():
            set_dotted(data, dotted, value)
        return validate(RunConfig, data, source="overrides")


M = TypeVar("M", bound=BaseModel)


def set_dotted(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """`doc` with the dotted key ("training.lr") set to `value`, sections made as needed."""
    node = doc
    *parents, leaf = dotted.split(".")
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[leaf] = value


def with_dotted(doc: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `doc` with each dotted key of `overrides` set."""
    out = copy.deepcopy(dict(doc))
    for dotted, value in overrides.items():
        set_dotted(out, dotted, value)
    return out


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line: the source, the dotted key, the value received and what is allowed."""
    return FieldError.first(exc).line(source)


def validate(cls: type[M], data: Any, *, source: str) -> M:
    try:
        return cls.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; give a YAML config file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; give a YAML config file") from None


def load_run_config(path: str | Path) -> RunConfig:
    return validate(RunConfig, read_yaml(path), source=str(path))
