"""Cues read out of a trained causal LM: one value per phoneme for each of eight measures.

The utterances are joined into one stream, with the utterance-boundary token in front of every
utterance (so in front of the first one too), exactly like the training stream:

    UTT u1 u1 u1 UTT u2 u2 UTT u3 ...

The logits at stream position i-1 predict token i, so every phoneme gets a prediction made from
everything before it (up to the context window). The positions of the boundary tokens are not
phonemes: their predictions are computed and dropped.

Cues (`CUE_NAMES`, the field's definitions; natural logarithms):
- `loss`: cross-entropy (surprisal) of the true phoneme, in nats;
- `entropy`: entropy of the predicted distribution, in nats;
- `rank`: log2(1 + rank of the true phoneme), rank 0 being the top prediction (ties: the number
  of tokens with a strictly larger logit);
- `boundary_prob`: probability of the utterance-boundary token;
- `increase_<cue>`: X[t] - X[t-1] within the utterance, 0 at its first phoneme.

Long streams are cut into windows of `context` tokens that start every `stride` tokens (a
`Window`, which also says how many windows go through the model at once and on which device;
`Window.for_model` fills in the defaults). The first window keeps all its predictions; every later one keeps only its last `stride`, which were made
with at least `context - stride + 1` tokens of left context. Phoneme i of the stream is therefore
predicted from the tokens `window_start(i) .. i-1` (see `window_start`), and `reference_cues`
recomputes exactly that with one forward pass per position, which is how the published code
worked and why it was slow. `compute_cues` stacks the windows into batches instead.

`compute_cues` returns a `Cues`: flat float64 arrays over all phonemes of all utterances (one per
cue) plus the utterance lengths. Flat arrays keep segmentation and scoring vectorised; `cues[i]`
gives utterance i as a dict of per-utterance arrays and `cues.per_utterance()` all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from seg_tune.errors import ConfigError
from seg_tune.metrics import CUE_NAMES
from seg_tune.tokenizer import UTT_BOUNDARY, encode

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from seg_tune.corpus import Utterance

__all__ = [
    "BASE_CUES",
    "CUE_NAMES",
    "Cues",
    "Window",
    "compute_cues",
    "default_context",
    "default_stride",
    "reference_cues",
    "window_start",
]

BASE_CUES: tuple[str, ...] = ("loss", "entropy", "rank", "boundary_prob")
MAX_DEFAULT_CONTEXT = 128  # the field uses 64 or 128; longer windows cost time, help little


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True, eq=False)
class Cues:
    """Cue values of a list of utterances, flat over all their phonemes.

    `values[name]` is a float64 array of `lengths.sum()` values; utterance i occupies
    `offsets[i] : offsets[i + 1]`.
    """

    values: Mapping[str, np.ndarray]
    lengths: np.ndarray  # int64, one per utterance

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.lengths))).astype(np.int64)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.values)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Utterance i: one array per cue, one value per phoneme."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return {name: v[lo:hi] for name, v in self.values.items()}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.per_utterance())

    def per_utterance(self) -> list[dict[str, np.ndarray]]:
        cuts = self.offsets[1:-1]
        split = {name: np.split(v, cuts) for name, v in self.values.items()}
        return [{name: split[name][i] for name in split} for i in range(len(self))]

    def select(self, start: int, stop: int) -> Cues:
        """Utterances start..stop-1 (a contiguous block), sharing memory with this object."""
        lo, hi = self.offsets[start], self.offsets[stop]
        values = {name: v[lo:hi] for name, v in self.values.items()}
        return Cues(values, self.lengths[start:stop])


def _with_increases(base: Mapping[str, np.ndarray], lengths: np.ndarray) -> Cues:
    """Add `increase_<cue>` (X[t] - X[t-1], 0 at each utterance's first phoneme)."""
    first = np.zeros(int(lengths.sum()), dtype=bool)
    first[np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)] = True
    values: dict[str, np.ndarray] = {}
    for name in BASE_CUES:
        x = np.asarray(base[name], dtype=np.float64)
        values[name] = x
        inc = np.zeros_like(x)
        inc[1:] = x[1:] - x[:-1]
        inc[first] = 0.0
        values[f"increase_{name}"] = inc
    return Cues({name: values[name] for name in CUE_NAMES}, lengths)


# --------------------------------------------------------------------------- the stream


def _boundary_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    vocab = tokenizer.get_vocab()
    if UTT_BOUNDARY in vocab:
        return vocab[UTT_BOUNDARY]
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise ConfigError(
        f"the tokenizer has no {UTT_BOUNDARY} token and no EOS token; "
        "use the tokenizer saved with the model by seg_tune"
    )


def _stream(
    tokenizer: PreTrainedTokenizerBase, utterances: Sequence[Utterance]
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(stream, lengths, phoneme_mask): `UTT u1 UTT u2 ... uN` and which positions are phonemes."""
    if not utterances:
        raise ConfigError("no utterances to compute cues on; give at least one utterance")
    ids = encode(tokenizer, utterances)  # type: ignore[arg-type]
    bid = _boundary_token_id(tokenizer)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.full(int(lengths.sum()) + len(ids), bid, dtype=np.int64)
    is_phoneme = np.ones(len(flat), dtype=bool)
    boundary_pos = np.concatenate(([0], np.cumsum(lengths + 1)[:-1])).astype(np.int64)
    is_phoneme[boundary_pos] = False
    flat[is_phoneme] = np.fromiter((t for x in ids for t in x), dtype=np.int64)
    return torch.from_numpy(flat), lengths, is_phoneme


def default_context(model: PreTrainedModel) -> int:
    """The model's n_positions capped at 128."""
    n_positions = int(getattr(model.config, "n_positions", MAX_DEFAULT_CONTEXT))
    return min(n_positions, MAX_DEFAULT_CONTEXT)


def default_stride(context: int) -> int:
    """context - context // 4: each window keeps its last three quarters (96 of 128 tokens).

    Cost grows as context / stride. Measured on childes-en dev with a 0.8M model, spike
    boundary F of every cue moved by less than 0.005 between strides 16, 64, 96 and 120 (at
    context 128), while stride 96 needs 1.5x fewer forward tokens than 64 (the usual half).
    """
    return max(1, context - context // 4)


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} {value!r}: must be an integer")
    return int(value)


@dataclass(frozen=True)
class Window:
    """How cues are read off a model: windows of `context` tokens that start every `stride`
    tokens, `batch_size` windows per forward pass, inputs sent to `device` (None: the model's
    device; the model is never moved).

    Checked when made: a ConfigError naming the field, its value and what is allowed.
    `Window.for_model` fills in the defaults for a model and checks `context` against its
    n_positions (as `compute_cues` does for any window it is given).
    """

    context: int
    stride: int
    batch_size: int = 64
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        context = _check_int("context", self.context)
        if context < 2:
            raise ConfigError(f"context {context}: must be between 2 and the model's n_positions")
        stride = _check_int("stride", self.stride)
        if not 1 <= stride <= context - 1:
            raise ConfigError(
                f"stride {stride}: must be between 1 and context - 1 ({context - 1}), so that "
                "every kept prediction has at least one token of left context"
            )
        batch_size = _check_int("batch_size", self.batch_size)
        if batch_size < 1:
            raise ConfigError(f"batch_size {batch_size}: must be at least 1")
        device = self.device
        if device is not None and not isinstance(device, torch.device):
            try:
                device = torch.device(device)
            except (RuntimeError, TypeError):
                raise ConfigError(
                    f"device {self.device!r}: not a torch device; give e.g. cpu, cuda, cuda:1 or mps"
                ) from None
        for name, value in (("context", context), ("stride", stride), ("batch_size", batch_size)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "device", device)

    @classmethod
    def for_model(
        cls,
        model: PreTrainedModel,
        context: int | None = None,
        stride: int | None = None,
        batch_size: int = 64,
        device: torch.device | str | None = None,
    ) -> Window:
        """A window for `model`: `context` defaults to its n_positions capped at 128
        (`default_context`), `stride` to `default_stride(context)`."""
        context = default_context(model) if context is None else _check_int("context", context)
        _check_context(model, context)  # before the stride, which is checked against it
        stride = default_stride(context) if stride is None else stride
        return cls(context, stride, batch_size, device)

    def check_model(self, model: PreTrainedModel) -> Window:
        """This window, if `model` can read it (context <= n_positions); else ConfigError."""
        _check_context(model, self.context)
        return self

    def input_device(self, model: PreTrainedModel) -> torch.device:
        """Where the inputs go: `device`, or the model's device."""
        if isinstance(self.device, torch.device):  # a str is made a torch.device when checked
            return self.device
        return next(model.parameters()).device


def _check_context(model: PreTrainedModel, context: int) -> None:
    n_positions = int(getattr(model.config, "n_positions", 1 << 30))
    if not 2 <= context <= n_positions:
        raise ConfigError(
            f"context {context}: must be between 2 and the model's n_positions ({n_positions})"
        )


def _window(model: PreTrainedModel, window: Window | None) -> Window:
    return Window.for_model(model) if window is None else window.check_model(model)


def window_start(i: int, context: int, stride: int) -> int:
    """First stream position of the window whose prediction of token i is kept (i >= 1).

    Windows start at multiples of `stride`; the first keeps targets 1..context, window k >= 1
    keeps targets k*stride + context - stride + 1 .. k*stride + context.
    """
    if i <= context:
        return 0
    return stride * -(-(i - context) // stride)  # ceil((i - context) / stride) windows on


# --------------------------------------------------------------------------- cues of logits


def _cues_of_logits(logits: torch.Tensor, targets: torch.Tensor, bid: int) -> torch.Tensor:
    """(..., 4) tensor of loss, entropy, rank, boundary_prob from logits (..., V), targets (...)."""
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    true_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    true_logit = logits.gather(-1, targets.unsqueeze(-1))
    entropy = -(logp.exp() * logp).sum(-1)
    rank = (logits > true_logit).sum(-1)
    return torch.stack(
        [-true_logp, entropy, torch.log2(1.0 + rank.float()), logp[..., bid].exp()], dim=-1
    )


class _EvalMode:
    """Dropout off while cues are computed; the caller's train/eval mode restored after."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def _split(per_position: np.ndarray, lengths: np.ndarray, is_phoneme: np.ndarray) -> Cues:
    """Cues for the stream's targets 1..L-1 -> Cues over phonemes only."""
    kept = per_position[is_phoneme[1:]]  # (n_phonemes, 4)
    return _with_increases({name: kept[:, k] for k, name in enumerate(BASE_CUES)}, lengths)


# --------------------------------------------------------------------------- batched


def compute_cues(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    utterances: Sequence[Utterance],
    window: Window | None = None,
) -> Cues:
    """The eight cues of every phoneme, from one forward pass per batch of windows.

    `window` (default `Window.for_model(model)`): the window length `context` (default: the
    model's n_positions capped at 128), the distance `stride` between window starts (default
    `default_stride`: every kept prediction had at least context // 4 + 1 tokens of left
    context), `batch_size` windows per forward pass, and the `device` the inputs go to (default:
    the model's device; the model is not moved).
    """
    window = _window(model, window)
    context, stride, batch_size = window.context, window.stride, window.batch_size
    stream, lengths, is_phoneme = _stream(tokenizer, utterances)
    bid = _boundary_token_id(tokenizer)
    n_tokens = stream.numel()
    context = min(context, n_tokens - 1)  # a short stream fits one window: no padding
    n_extra = max(0, -(-(n_tokens - 1 - context) // stride))  # windows after the first
    padded_len = n_extra * stride + context + 1  # inputs and the target after the last input
    padded = torch.full((padded_len,), bid, dtype=torch.long)
    padded[:n_tokens] = stream
    inputs = padded[:-1].unfold(0, context, stride)  # (n_windows, context), a view
    targets = padded[1:].unfold(0, context, stride)
    keep = _keep_mask(inputs.shape[0], context, stride, n_tokens)
    dev = window.input_device(model)
    chunks: list[torch.Tensor] = []
    with _EvalMode(model), torch.inference_mode():
        for lo in range(0, inputs.shape[0], batch_size):
            x = inputs[lo : lo + batch_size].to(dev)  # (B, context)
            kept = keep[lo : lo + batch_size].to(dev)  # (B, context) bool
            logits = model(input_ids=x, use_cache=False).logits[kept]  # (n_kept, V), in order
            y = targets[lo : lo + batch_size].to(dev)[kept]  # (n_kept,)
            chunks.append(_cues_of_logits(logits, y, bid).cpu())  # (n_kept, 4)
    per_target = torch.cat(chunks).double().numpy()  # targets 1..L-1, in stream order
    return _split(per_target, lengths, is_phoneme)


def _keep_mask(n_windows: int, context: int, stride: int, n_tokens: int) -> torch.Tensor:
    """(n_windows, context) bool: which predictions of each window are kept.

    Window k's output j predicts stream token k*stride + j + 1; window 0 keeps them all, later
    windows keep j >= context - stride; predictions past the stream's end (padding) are dropped.
    """
    j = torch.arange(context)
    k = torch.arange(n_windows).unsqueeze(1)
    target = k * stride + j + 1
    return ((k == 0) | (j >= context - stride)) & (target < n_tokens)


# --------------------------------------------------------------------------- reference


def reference_cues(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    utterances: Sequence[Utterance],
    window: Window | None = None,
) -> Cues:
    """The same cues, slowly: one forward pass per phoneme over its own left context.

    Token i is predicted from tokens `window_start(i, context, stride) .. i-1`, the left context
    `compute_cues` gives it with the same `window`, so the two agree to float precision (its
    `batch_size` is not used here). With `stride=1` every phoneme gets the full `context` tokens
    before it, as in the published per-position code.
    """
    window = _window(model, window)
    context, stride = window.context, window.stride
    stream, lengths, is_phoneme = _stream(tokenizer, utterances)
    bid = _boundary_token_id(tokenizer)
    dev = window.input_device(model)
    rows: list[torch.Tensor] = []
    with _EvalMode(model), torch.inference_mode():
        for i in range(1, stream.numel()):
            if not is_phoneme[i]:
                rows.append(torch.zeros(4))  # boundary-token target: dropped by _split
                continue
            left = stream[window_start(i, context, stride) : i].to(dev).unsqueeze(0)
            logits = model(input_ids=left, use_cache=False).logits[0, -1]
            rows.append(_cues_of_logits(logits, stream[i].to(dev), bid).cpu())
    return _split(torch.stack(rows).double().numpy(), lengths, is_phoneme)
