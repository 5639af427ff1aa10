"""Cue extraction: the batched windows agree with one forward pass per position, and the cues
mean what the field means by them (checked by hand on the first utterance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seg_tune.config import ModelConfig
from seg_tune.corpus import Utterance, synthetic_corpus
from seg_tune.cues import CUE_NAMES, Cues, Window, compute_cues, reference_cues, window_start
from seg_tune.errors import ConfigError
from seg_tune.model import build_model
from seg_tune.tokenizer import UTT_BOUNDARY, build_tokenizer, encode

N_POSITIONS = 32


@pytest.fixture(scope="module")
def utterances() -> list[Utterance]:
    utts = synthetic_corpus(20, seed=5)
    long = Utterance(tuple(w for u in utts[:12] for w in u.words))  # longer than any window
    assert len(long) > 2 * N_POSITIONS
    return [*utts[12:15], long, *utts[15:19], Utterance((("a",),))]


@pytest.fixture(scope="module")
def tiny(utterances):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tok = build_tokenizer(utterances)
    cfg = ModelConfig(preset=None, n_layer=1, n_embd=32, n_head=2, n_positions=N_POSITIONS)
    return build_model(cfg, tok), tok


@pytest.mark.parametrize(("context", "stride"), [(16, 5), (16, 15), (12, 1), (N_POSITIONS, 16)])
def test_batched_equals_per_position_reference(tiny, utterances, context, stride):
    model, tok = tiny
    fast = compute_cues(model, tok, utterances, Window(context, stride, batch_size=3))
    slow = reference_cues(model, tok, utterances, Window(context, stride))
    assert fast.names == CUE_NAMES == slow.names
    assert fast.lengths.tolist() == [len(u) for u in utterances]
    for name in CUE_NAMES:
        assert fast.values[name].shape == (sum(len(u) for u in utterances),)
        np.testing.assert_allclose(fast.values[name], slow.values[name], rtol=1e-4, atol=1e-5)


def test_a_stream_shorter_than_the_window(tiny, utterances):
    model, tok = tiny
    short = utterances[:1]
    assert len(short[0]) + 1 < N_POSITIONS
    fast = compute_cues(model, tok, short, Window.for_model(model, N_POSITIONS, batch_size=2))
    slow = reference_cues(model, tok, short, Window.for_model(model, N_POSITIONS))
    for name in CUE_NAMES:
        np.testing.assert_allclose(fast.values[name], slow.values[name], rtol=1e-4, atol=1e-5)


def test_left_context_changes_the_cues(tiny, utterances):
    """Different windows give different predictions, so the equality above is informative."""
    model, tok = tiny
    full = compute_cues(model, tok, utterances, Window(16, 1))
    short = compute_cues(model, tok, utterances, Window(16, 15))
    assert not np.allclose(full.values["loss"], short.values["loss"], atol=1e-3)


def test_window_start_gives_enough_left_context():
    assert [window_start(i, 8, 3) for i in (1, 8, 9, 11, 12, 14, 15)] == [0, 0, 3, 3, 6, 6, 9]
    for context, stride in [(8, 3), (16, 15), (12, 1), (64, 32)]:
        for i in range(context + 1, 300):
            assert context - stride + 1 <= i - window_start(i, context, stride) <= context


def test_first_utterance_by_hand(tiny, utterances):
    """Cue definitions from one forward pass over `UTT u1`: logits at t-1 predict phoneme t."""
    model, tok = tiny
    ids = [tok.convert_tokens_to_ids(UTT_BOUNDARY), *encode(tok, utterances[:1])[0]]
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    assert len(ids) <= N_POSITIONS  # the whole utterance inside the first window
    cues = compute_cues(model, tok, utterances, Window(N_POSITIONS, 8))[0]
    bid = ids[0]
    for t, target in enumerate(ids[1:]):
        row = logits[t]
        p = torch.softmax(row, -1)
        order = torch.argsort(row, descending=True).tolist()
        assert cues["loss"][t] == pytest.approx(-math.log(p[target]), rel=1e-4)
        assert cues["entropy"][t] == pytest.approx(-(p * p.log()).sum().item(), rel=1e-4)
        assert cues["rank"][t] == pytest.approx(math.log2(1 + order.index(target)))
        assert cues["boundary_prob"][t] == pytest.approx(p[bid].item(), rel=1e-4, abs=1e-7)
    for name in ("loss", "entropy", "rank", "boundary_prob"):
        inc = cues[f"increase_{name}"]
        assert inc[0] == 0.0
        np.testing.assert_allclose(inc[1:], np.diff(cues[name]))


def test_increase_restarts_at_every_utterance(tiny, utterances):
    model, tok = tiny
    cues = compute_cues(model, tok, utterances, Window(16, 8))
    for utt in cues.per_utterance():
        assert utt["increase_loss"][0] == 0.0
        np.testing.assert_allclose(utt["increase_entropy"][1:], np.diff(utt["entropy"]))


def test_cues_container(tiny, utterances):
    model, tok = tiny
    cues = compute_cues(model, tok, utterances, Window(16, 8))
    per = cues.per_utterance()
    assert len(cues) == len(per) == len(utterances)
    assert [len(u["rank"]) for u in per] == [len(u) for u in utterances]
    part = cues.select(2, 5)
    assert isinstance(part, Cues) and len(part) == 3
    np.testing.assert_array_equal(part[1]["loss"], cues[3]["loss"])


def test_dropout_off_and_mode_restored(utterances):
    torch.manual_seed(1)
    tok = build_tokenizer(utterances)
    cfg = ModelConfig(preset=None, n_layer=1, n_embd=32, n_head=2, n_positions=32, dropout=0.5)
    model = build_model(cfg, tok).train()
    a = compute_cues(model, tok, utterances[:3])
    b = compute_cues(model, tok, utterances[:3])
    assert model.training
    np.testing.assert_array_equal(a.values["loss"], b.values["loss"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"context": 64}, "n_positions"),
        ({"context": 16, "stride": 16}, "stride 16"),
        ({"context": 16, "stride": 0}, "stride 0"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_windows_are_user_errors(tiny, utterances, kwargs, message):
    model, tok = tiny
    with pytest.raises(ConfigError, match=message):
        compute_cues(model, tok, utterances, Window.for_model(model, **kwargs))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"context": 1, "stride": 1}, "context 1: must be between 2 and"),
        ({"context": 16, "stride": 16}, r"stride 16: must be between 1 and context - 1 \(15\)"),
        ({"context": 16, "stride": 0}, "stride 0: must be between 1"),
        ({"context": 16, "stride": 4, "batch_size": 0}, "batch_size 0: must be at least 1"),
        ({"context": 16.0, "stride": 4}, "context 16.0: must be an integer"),
        ({"context": 16, "stride": True}, "stride True: must be an integer"),
        ({"context": 16, "stride": 4, "device": "gpu"}, "device 'gpu': not a torch device"),
    ],
)
def test_a_window_checks_its_fields_when_made(fields, message):
    with pytest.raises(ConfigError, match=message) as caught:
        Window(**fields)
    assert "\n" not in str(caught.value)


def test_a_window_is_one_frozen_value(tiny, utterances):
    model, tok = tiny
    window = Window(16, 8, 4, "cpu")
    assert window.device == torch.device("cpu") and window == Window(16, 8, 4, torch.device("cpu"))
    with pytest.raises(AttributeError):
        window.stride = 2  # type: ignore[misc]
    assert Window.for_model(model) == Window(N_POSITIONS, N_POSITIONS - N_POSITIONS // 4)
    with pytest.raises(ConfigError, match=r"context 64: .* n_positions \(32\)"):
        compute_cues(model, tok, utterances, Window(64, 8))  # made without the model: checked
