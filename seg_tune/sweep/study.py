"""Studies: one file runs the same sweep across corpora or languages and training-set sizes.

A study file is a space file (any of its sections, exactly as today) plus a `study` section:

    study:
      name: childes-sizes          # default: the file's name
      corpora:                     # named data sections, each a whole `data` section
        childes-en: {train: {kind: tagged, path: ...}, valid: {kind: tagged, path: ...}}
      languages: [EnglishNA, French]   # and/or: "{language}" in the file's data section is
                                   #   replaced by each (IPA-CHILDES config names, say)
      sizes: [100000, 1000000]     # training-set sizes: `data.train_size.amount` of each cell
      size_unit: words             # or phonemes (the model's tokens), or utterances
      size_seed: 0                 # the draw of whole utterances (nested: a smaller size's
                                   #   sample is part of a larger one's)
      overrides:                   # sections merged into a cell's file, per axis value
        sizes: {1000000: {model: {preset: 5M}, experiment: {num_samples: 24}}}
        languages: {French: {training: {lr: 1.0e-3}}}
      eval_utterances: 2000        # every cell's final phase scores this many test utterances
                                   #   (final.test_utterances), or instead:
      eval_phonemes: 20000         # the first whole test utterances holding at least this many
                                   #   phonemes (final.test_phonemes; boundaries not counted)
      max_concurrent_cells: 2      # cells whose drivers run at once on the study's cluster

The cells are every corpus and language, times every size (no sizes: one cell each), named
`<corpus or language>-<size><w|u>` (`EnglishNA-100kw`). Each cell is a whole experiment of its
own, `<storage>/<study>/<cell>/` (`StudyLayout`), with its summary, report, final phase and wandb
group `<study>.<cell>`, run by the same driver as a space file (`seg_tune.cli.study` starts one
per cell on one Ray cluster). A cell's file is the study file without its `study` section, with
the cell's data and size and the overrides of its axis values merged in (a mapping merges key by
key, anything else replaces), its experiment named after the cell.

Every cell is validated as a space file is (`load_doc`), before Ray starts: an error names the
cell (`study.yaml (cell French-100kw): ...`). So is its test split against the evaluation sample:
a cell whose test split holds fewer phonemes than `eval_phonemes` is refused then (exit 2), since
scoring it on less would break the comparison. `eval_utterances` and `eval_phonemes` exclude each
other, and each excludes the other's key in the file's `final` section (`final.test_phonemes`
with `eval_utterances`, `final.test_utterances` with `eval_phonemes`).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seg_tune.errors import ConfigError
from seg_tune.sweep.keys import STUDY_SECTION

# study.json (`StudyLayout.study`): {"format", "name", "file", "unit", "cells": {cell: {"axis",
# "value", "size", "exit" (its driver's last exit status, null: not run yet), "started_at",
# "ended_at" (its driver's last start and end, local ISO time; null: not yet)}}}. Format 1
# files written before started_at existed lack the key: read it with .get.
STUDY_FORMAT = 1
LANGUAGE_FIELD = "{language}"


class Overrides(BaseModel):
    """Sections merged into the cells of one axis value (keys: corpus or language names, and
    sizes as numbers)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    corpora: dict[str, dict[str, Any]] = {}
    languages: dict[str, dict[str, Any]] = {}
    sizes: dict[int, dict[str, Any]] = {}


class StudySection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    corpora: dict[str, dict[str, Any]] = {}
    languages: list[str] = []
    sizes: list[int] = Field(default_factory=list)
    size_unit: Literal["words", "phonemes", "utterances"] = "words"
    size_seed: int = 0
    overrides: Overrides = Overrides()
    # every cell's final phase scores this many test utterances (final.test_utterances), or
    # the first whole test utterances holding at least eval_phonemes phonemes
    # (final.test_phonemes), so that corpora and languages are compared on equal amounts of
    # speech; one of the two; null both: all of each cell's test split
    eval_utterances: int | None = Field(None, ge=1)
    eval_phonemes: int | None = Field(None, ge=1)
    max_concurrent_cells: int = Field(2, ge=1)


@dataclass(frozen=True)
class Cell:
    """One experiment of a study."""

    name: str
    axis: Literal["corpus", "language"]
    value: str  # the corpus's or the language's name
    size: int | None  # data.train_size.amount; None: the whole training split
    doc: dict[str, Any]  # its space file, as a mapping of sections


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    section: StudySection
    cells: tuple[Cell, ...]

    @property
    def unit(self) -> str:
        return self.section.size_unit

    def cell(self, name: str) -> Cell:
        for cell in self.cells:
            if cell.name == name:
                return cell
        raise ConfigError(
            f"{self.path}: no cell {name!r} in study {self.name}; its cells: "
            + ", ".join(c.name for c in self.cells)
        )

    def spec(self, cell: Cell) -> Any:
        """The cell's ExperimentSpec, validated as a space file is (ConfigError naming it)."""
        from seg_tune.sweep.load import load_doc

        return load_doc(cell.doc, source=f"{self.path} (cell {cell.name})", default_name=cell.name)


def is_study(doc: Mapping[str, Any]) -> bool:
    return STUDY_SECTION in doc


def load_study(path: str | Path, doc: Mapping[str, Any] | None = None) -> Study:
    """The study in `path` (its cells built, not yet validated: `Study.spec`). ConfigError for
    a bad `study` section, naming the key, the value and what is allowed."""
    from seg_tune.sweep.load import read_space_doc

    path = Path(path)
    doc = read_space_doc(path) if doc is None else doc
    try:
        section = StudySection.model_validate(doc.get(STUDY_SECTION) or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"{path}: study.{where}: {err['msg']} (got {err.get('input')!r})"
        ) from None
    if not section.corpora and not section.languages:
        raise ConfigError(
            f"{path}: study: give `corpora` (named data sections) and/or `languages` (names put "
            f"in place of {LANGUAGE_FIELD} in the data section); it has neither"
        )
    if any(size <= 0 for size in section.sizes) or len(set(section.sizes)) < len(section.sizes):
        raise ConfigError(
            f"{path}: study.sizes: {section.sizes}: sizes must be distinct whole numbers above 0"
        )
    base = {k: v for k, v in doc.items() if k != STUDY_SECTION}
    if section.languages and LANGUAGE_FIELD not in repr(base.get("data")):
        raise ConfigError(
            f"{path}: study.languages {section.languages}: the data section has no "
            f"{LANGUAGE_FIELD} to replace (e.g. data.train.config: '{LANGUAGE_FIELD}')"
        )
    _refuse_two_samples(section, base.get("final"), path)
    name = section.name or _safe(path.stem)
    cells = _cells(base, section, name, path)
    return Study(name=name, path=path, section=section, cells=tuple(cells))


def _cells(base: dict[str, Any], section: StudySection, study: str, path: Path) -> list[Cell]:
    values: list[tuple[Literal["corpus", "language"], str, Any]] = [
        ("corpus", name, data) for name, data in section.corpora.items()
    ]
    values += [
        ("language", lang, _replace(base.get("data") or {}, LANGUAGE_FIELD, lang))
        for lang in section.languages
    ]
    unknown = [
        f"study.overrides.{axis}.{key}"
        for axis, keys, known in (
            ("corpora", section.overrides.corpora, section.corpora),
            ("languages", section.overrides.languages, section.languages),
            ("sizes", section.overrides.sizes, section.sizes),
        )
        for key in keys
        if key not in known
    ]
    if unknown:
        raise ConfigError(
            f"{path}: {unknown[0]}: not one of the study's {unknown[0].split('.')[2]}"
        )
    cells, seen = [], set()
    for axis, value, data in values:
        for size in section.sizes or [None]:
            name = _safe(value) + (
                "" if size is None else f"-{size_label(size, section.size_unit)}"
            )
            if name in seen:
                raise ConfigError(f"{path}: study: two cells are named {name!r}; rename one")
            seen.add(name)
            doc = copy.deepcopy(base)
            doc["data"] = copy.deepcopy(data)
            if size is not None:
                doc["data"]["train_size"] = {
                    "amount": size,
                    "unit": section.size_unit,
                    "seed": section.size_seed,
                }
            if (sample := _eval_sample(section)) is not None:
                doc["final"] = {**(doc.get("final") or {}), **sample}
            axis_overrides = (
                section.overrides.corpora if axis == "corpus" else section.overrides.languages
            )
            doc = _merge(doc, axis_overrides.get(value, {}))
            if size is not None:
                doc = _merge(doc, section.overrides.sizes.get(size, {}))
            experiment = dict(doc.get("experiment") or {})
            experiment["name"] = name
            doc["experiment"] = experiment
            wandb = dict(doc.get("wandb") or {})
            if wandb.get("group") is None:  # not given: one group per cell
                wandb["group"] = f"{study}.{name}"
            doc["wandb"] = wandb
            cells.append(Cell(name=name, axis=axis, value=value, size=size, doc=doc))
    return cells


_SAMPLE_KEYS = {"eval_utterances": "test_utterances", "eval_phonemes": "test_phonemes"}


def _eval_sample(section: StudySection) -> dict[str, int] | None:
    """The `final` keys of the study's evaluation sample, or None when it sets none."""
    for study_key, final_key in _SAMPLE_KEYS.items():
        if (value := getattr(section, study_key)) is not None:
            return {final_key: value}
    return None


def _refuse_two_samples(section: StudySection, final: Any, path: Path) -> None:
    """One evaluation sample per study: eval_utterances or eval_phonemes, and not the other
    kind in the file's `final` section (the cells would get both)."""
    given = [k for k in _SAMPLE_KEYS if getattr(section, k) is not None]
    if len(given) > 1:
        raise ConfigError(
            f"{path}: study.eval_utterances {section.eval_utterances} and study.eval_phonemes "
            f"{section.eval_phonemes}: give one of them (a sample of utterances or of "
            "phonemes), not both"
        )
    final = final if isinstance(final, Mapping) else {}
    for study_key in given:
        other = next(v for k, v in _SAMPLE_KEYS.items() if k != study_key)
        if final.get(other) is not None:
            raise ConfigError(
                f"{path}: study.{study_key} {getattr(section, study_key)} and final.{other} "
                f"{final[other]}: give one of them (the study's sample is every cell's final "
                f"phase sample), not both"
            )


def size_label(size: int, unit: str) -> str:
    """100000 words -> '100kw', 2000000 utterances -> '2Mu', 500000 phonemes -> '500kp',
    12345 words -> '12345w'."""
    suffix = {"words": "w", "phonemes": "p", "utterances": "u"}[unit]
    for factor, letter in ((1_000_000, "M"), (1_000, "k")):
        if size % factor == 0:
            return f"{size // factor}{letter}{suffix}"
    return f"{size}{suffix}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "cell"


def _replace(value: Any, field: str, by: str) -> Any:
    if isinstance(value, str):
        return value.replace(field, by)
    if isinstance(value, Mapping):
        return {k: _replace(v, field, by) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, field, by) for v in value]
    return value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` merged into `base`: mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_state(layout: Any) -> dict[str, Any]:
    """study.json of a `StudyLayout`; {} when there is none (or another format)."""
    try:
        data = json.loads(layout.study.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == STUDY_FORMAT else {}


def write_state(layout: Any, state: dict[str, Any]) -> None:
    from seg_tune.checkpoint import atomic_write_text

    layout.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(layout.study, json.dumps(state, indent=1))
