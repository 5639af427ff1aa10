"""Every key of a run config and of a space file, with its default, its type and what it means,
for `seg-tune train --print-defaults` and `seg-tune run --print-defaults`.

Nothing here is written twice: the keys, defaults and types come from the pydantic models, and
the meaning of a key is the comment at its field in the model's source (the line's trailing
comment, and the comment lines right above it). So the reference cannot drift from the code. The
printout is valid YAML: loading it gives the defaults.
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any

import yaml
from pydantic import BaseModel

from seg_tune.sweep.keys import model_class

_FIELD_RE = re.compile(r"^    (\w+)\s*:")  # a field at class level (4 spaces in)


def field_notes(cls: type[BaseModel]) -> dict[str, str]:
    """The comment at each field of `cls`: its trailing comment and the lines right above."""
    notes: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#") and line.startswith("    #"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD_RE.match(line)
        if match and match.group(1) in cls.model_fields:
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            notes[match.group(1)] = " ".join([*above, trailing]).strip()
        above = []
    return notes


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(str(v) for v in args)
    if args and origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in args)
    if origin is tuple:
        return f"list of {_type_name(args[0])}" if args else "list"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", None) or str(annotation)


def _doc(cls: type) -> str:
    """The first line of the class's own docstring (not one inherited from a base)."""
    doc = cls.__dict__.get("__doc__") or ""
    return doc.strip().split("\n")[0]


def _scalar(value: Any) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=True, width=1_000_000)
        .strip()
        .removesuffix("\n...")
    )


def describe(cls: type[BaseModel], indent: int = 0, skip: tuple[str, ...] = ()) -> list[str]:
    """YAML lines for `cls`'s fields: `key: default  # type; meaning`, sub-models nested;
    `skip`: dotted keys left out."""
    pad = " " * indent
    lines: list[str] = []
    notes = field_notes(cls)
    for name, info in cls.model_fields.items():
        if name in skip:
            continue
        value = (  # as declared, not as resolved
            None if info.is_required() else info.get_default(call_default_factory=True)
        )
        sub = model_class(info.annotation)
        note = notes.get(name, "")
        if sub is not None and isinstance(value, BaseModel):
            doc = note or _doc(sub)
            lines.append(f"{pad}{name}:{'  # ' + doc if doc else ''}")
            inner = tuple(k.split(".", 1)[1] for k in skip if k.startswith(f"{name}."))
            lines += describe(sub, indent + 2, inner)
            continue
        shown = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        if isinstance(shown, tuple):
            shown = list(shown)
        comment = "; ".join(part for part in (_type_name(info.annotation), note) if part)
        lines.append(f"{pad}{name}: {_scalar(shown)}  # {comment}")
        if sub is not None and value is None and sub.__name__ not in _SHOWN_ELSEWHERE:
            # off by default: its keys, commented out, for when it is turned on
            lines += [f"{pad}#   {line.strip()}" for line in describe(sub)]
    return lines


_SHOWN_ELSEWHERE = ("DataSource",)  # data.valid: its keys are those of data.train


def run_config_reference() -> str:
    """`seg-tune train --print-defaults`: a run config with every key at its default."""
    from seg_tune.config import DataSource, RunConfig

    head = [
        "# seg_tune run config: every key at its default (`seg-tune train CONFIG.yaml`).",
        "# data.train / data.valid / data.test are data sources; their keys:",
        *(f"#   {line}" for line in describe(DataSource)),
    ]
    return "\n".join([*head, *describe(RunConfig)]) + "\n"


def space_reference() -> str:
    """`seg-tune run --print-defaults`: every section of a space file at its default, the
    distributions a `space` may use, and the run config sections."""
    from seg_tune.config import RunConfig
    from seg_tune.sweep import spec
    from seg_tune.sweep.distributions import _DISTRIBUTIONS, _TYPE_ALIASES

    lines = [
        "# seg_tune space file: every section and key at its default (`seg-tune run SPACE.yaml`).",
        "# Format reference with examples: search_spaces/README.md.",
    ]
    sections = {
        "experiment": spec.ExperimentSection,
        "scheduler": spec.AshaScheduler,
        "searcher": spec.Searcher,
        "resources": spec.Resources,
        "failure": spec.Failure,
        "checkpoints": spec.Checkpoints,
        "wandb": spec.Wandb,
        "hub": spec.Hub,
        "final": spec.FinalSection,
    }
    for name, cls in sections.items():
        if name == "scheduler":
            lines.append("# scheduler: asha (below) or {type: fifo} (no early stopping)")
        lines.append(f"{name}:")
        lines += describe(cls, 2)
    # a sweep sets these itself (from experiment.metric/mode and ASHA's rungs)
    run = describe(
        RunConfig,
        skip=("training.select_metric", "training.select_mode", "training.checkpoint_at_steps"),
    )
    lines += [
        "# data, model, training, score: the defaults every trial starts from (run config):",
        *run,
    ]
    lines += [
        "# space: {DOTTED.KEY: DISTRIBUTION}, keys are dotted fields of data., model., training.",
        "space: {}",
        "# distributions (type: its keys); other names: "
        + ", ".join(f"{alias} = {canon}" for alias, canon in _TYPE_ALIASES.items()),
    ]
    for kind, cls in _DISTRIBUTIONS.items():
        keys = ", ".join(f for f in cls.model_fields if f != "type")
        lines.append(f"#   {kind}: {keys}{'  (' + _doc(cls) + ')' if _doc(cls) else ''}")
    return "\n".join(lines) + "\n"
