"""The commands: one module per command (arguments, printing, exit codes), and the `seg-tune`
console script, whose `seg-tune SUBCOMMAND ...` runs that command (`seg-tune run` is
`python -m seg_tune.run`)."""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, str] = {
    "run": "tune a model: Ray Tune sweep over a search-space file",
    "train": "train one model from a run config",
    "segment": "segment a corpus with a trained model and score every cue x strategy",
    "score": "score a predicted segmentation against the gold one",
    "baseline": "transitional-probability baseline segmentation",
    "report": "Markdown report with plots of a finished experiment",
}


def _usage() -> str:
    lines = [
        "usage: seg-tune SUBCOMMAND [ARGS...]   (seg-tune SUBCOMMAND --help for its options)",
        "",
    ]
    lines += [f"  {name:<9} {text}" for name, text in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(
            f"error: unknown subcommand {name!r}; choose one of {', '.join(SUBCOMMANDS)}",
            file=sys.stderr,
        )
        return 2
    return importlib.import_module(f"seg_tune.cli.{name}").main(rest)


if __name__ == "__main__":
    sys.exit(main())
