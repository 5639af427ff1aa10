"""Strategies on hand-made cue arrays, the cutoff search against brute force, the alignment of a
trained model's cues with word boundaries, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seg_tune.config import ModelConfig
from seg_tune.corpus import Utterance, load_tagged, synthetic_corpus, write_tagged
from seg_tune.cues import CUE_NAMES, Cues, Window, compute_cues
from seg_tune.metrics import SEGMENTATION_METRICS, ci_keys
from seg_tune.model import build_model
from seg_tune.score import SCORE_KEYS, TYPE_KEYS, score_starts
from seg_tune.segment import (
    FAIR_STRATEGIES,
    STRATEGIES,
    best_row,
    choose_cutoff,
    evaluate_segmentation,
    held_out_scores,
    segment_table,
    segmentations,
    spike,
    table_from_cues,
    threshold,
    vote,
)
from seg_tune.stream import token_stream
from seg_tune.tokenizer import boundary_id, build_tokenizer, encode

REPO = Path(__file__).resolve().parents[1]


def flags(*bits: int) -> list[bool]:
    return [bool(b) for b in bits]


def utt(phonemes: str, starts: list[bool]) -> Utterance:
    return Utterance.from_word_starts(list(phonemes), starts)


def split(flat: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1])


# --------------------------------------------------------------------------- spike / threshold / vote


def test_spike_by_hand():
    x = np.array([1, 3, 2, 2, 5, 1.0])
    assert spike(x, [6]).tolist() == flags(1, 1, 0, 0, 1, 0)  # a plateau (2, 2) is no spike


def test_spike_pads_each_utterance_with_zero():
    # second utterance: 2 > 0.5 and 2 > 1; its last value 1 < 2; the first utterance's last
    # value (4) is compared with the 0 padding, not with the next utterance's 0.5
    x = np.array([1, 3, 4, 0.5, 2, 1])
    assert spike(x, [3, 3]).tolist() == flags(1, 0, 1, 1, 1, 0)
    neg = np.array([-1, -2, -0.5])  # -0.5 > -2 but not > the padding 0
    assert spike(neg, [3]).tolist() == flags(1, 0, 0)


def test_threshold_is_strict_and_starts_utterances():
    x = np.array([0.0, 0.5, 0.7, 0.2, 0.0, 0.9])
    assert threshold(x, [4, 2], 0.5).tolist() == flags(1, 0, 1, 0, 1, 1)
    per_phoneme = np.array([0, 0, 0, 0, 1, 1.0])
    assert threshold(x, [4, 2], per_phoneme).tolist() == flags(1, 1, 1, 1, 1, 0)


def test_vote_needs_a_strict_majority():
    voters = [np.array(flags(0, 1, 1, 1)), np.array(flags(0, 0, 1, 1)), np.array(flags(0, 0, 0, 1))]
    assert vote(voters, [4]).tolist() == flags(1, 0, 1, 1)
    assert vote(voters[:2], [4]).tolist() == flags(1, 0, 1, 1)  # 1 of 2 is no majority at 1
    assert vote([np.array(flags(0, 1)), np.array(flags(0, 0))], [2]).tolist() == flags(1, 0)


def _cues(columns: dict[str, list[float]], lengths: list[int]) -> Cues:
    return Cues(
        {name: np.asarray(columns[name], dtype=float) for name in CUE_NAMES}, np.array(lengths)
    )


def test_vote_spike_counts_cues_that_spike():
    spikes_at_2_and_4 = [0, 0, 5, 0, 5, 0]
    spikes_at_2 = [0, 0, 5, 0, 0, 0]
    flat = [0.0] * 6
    columns = dict(
        zip(CUE_NAMES, [spikes_at_2_and_4] * 4 + [spikes_at_2] + [flat] * 3, strict=True)
    )
    gold = [utt("abcdef", flags(1, 0, 1, 0, 0, 0))]
    (seg,) = segmentations(_cues(columns, [6]), gold, strategies=["vote_spike"])
    assert (seg.cue, seg.strategy) == ("majority", "vote_spike")
    assert seg.starts.tolist() == flags(1, 0, 1, 0, 0, 0)  # 5/8 spike at 2; 4/8 at 4 is a tie


def test_vote_threshold_uses_cutoffs_chosen_on_the_cutoff_split():
    # on the cutoff split every cue is 1 exactly at the gold boundary: cutoff between 0 and 1
    split_gold = [utt("abcd", flags(1, 0, 1, 0))]
    split_cues = _cues({name: [9, 0, 1, 0] for name in CUE_NAMES}, [4])
    high, low = [0, 0.9, 0.2, 0], [0, 0.1, 0.2, 0.8]
    columns = dict(zip(CUE_NAMES, [high] * 5 + [low] * 3, strict=True))
    gold = [utt("wxyz", flags(1, 1, 0, 0))]
    segs = segmentations(
        _cues(columns, [4]),
        gold,
        cutoff_cues=split_cues,
        cutoff_gold=split_gold,
        strategies=["threshold", "vote_threshold"],
    )
    by_name = {s.name: s for s in segs}
    assert 0 < by_name["loss/threshold"].cutoffs[0] < 1
    assert by_name["majority/vote_threshold"].starts.tolist() == flags(1, 1, 0, 0)


# --------------------------------------------------------------------------- choosing cutoffs


def test_cutoff_on_a_toy_case():
    gold = [utt("abcdef", flags(1, 0, 1, 0, 0, 1))]
    x = np.array([9, 0.1, 0.8, 0.2, 0.3, 0.9])  # the gold boundaries have the two largest values
    for metric in ("boundary_noedge_fscore", "boundary_all_fscore", "token_fscore"):
        c = choose_cutoff(x, gold, metric=metric)
        assert 0.3 <= c < 0.8, metric
        assert threshold(x, [6], c).tolist() == gold[0].word_starts


def _random_case(seed: int, n_utts: int = 12) -> tuple[list[Utterance], np.ndarray]:
    """Gold utterances and a noisy cue (rounded, so that values tie) that peaks at boundaries."""
    rng = np.random.default_rng(seed)
    utts, values = [], []
    for _ in range(n_utts):
        n = int(rng.integers(1, 9))
        starts = [True, *(rng.random(n - 1) < 0.35)]
        utts.append(utt("abcdefgh"[:n], starts))
        values.append(np.round(np.asarray(starts, float) + rng.normal(0, 0.6, n), 1))
    return utts, np.concatenate(values)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("metric", ["boundary_noedge_fscore", "boundary_all_fscore"])
def test_exact_cutoff_search_matches_brute_force(seed, metric):
    gold, x = _random_case(seed)
    lengths = [len(u) for u in gold]
    distinct = np.unique(x)
    candidates = [distinct[0] - 1, *distinct, *((distinct[1:] + distinct[:-1]) / 2)]
    brute = max(
        score_starts(gold, split(threshold(x, lengths, c), lengths))[metric] for c in candidates
    )
    chosen = choose_cutoff(x, gold, metric=metric)
    got = score_starts(gold, split(threshold(x, lengths, chosen), lengths))[metric]
    assert got == pytest.approx(brute)


def test_oracle_is_at_least_the_fair_score():
    """With one cutoff chosen on a separate split, the oracle (best cutoff on the scored data)
    can only be better. (Cross-fitting uses two cutoffs, one per half, so there it could not be
    guaranteed.)"""
    gold, x = _random_case(10, n_utts=30)
    split_gold, split_x = _random_case(11, n_utts=30)
    rng = np.random.default_rng(0)
    noise = {name: rng.normal(0, 0.3 * i, x.size) for i, name in enumerate(CUE_NAMES)}
    split_noise = {name: rng.normal(0, 0.3 * i, split_x.size) for i, name in enumerate(CUE_NAMES)}
    lengths = [len(u) for u in gold]
    cues = _cues({n: x + noise[n] for n in CUE_NAMES}, lengths)
    split_cues = _cues(
        {n: split_x + split_noise[n] for n in CUE_NAMES}, [len(u) for u in split_gold]
    )
    table = table_from_cues(cues, gold, cutoff_cues=split_cues, cutoff_gold=split_gold)
    rows = {(r["cue"], r["strategy"]): r for r in table}
    assert len(table) == 3 * len(CUE_NAMES) + 2
    for name in CUE_NAMES:
        oracle, fair = rows[name, "threshold_oracle"], rows[name, "threshold"]
        assert oracle["oracle"] and not fair["oracle"]
        assert oracle["boundary_noedge_fscore"] >= fair["boundary_noedge_fscore"] - 1e-12
    assert not best_row(table)["oracle"]
    assert (
        best_row(table, include_oracle=True)["boundary_noedge_fscore"]
        >= best_row(table)["boundary_noedge_fscore"]
    )
    assert [r["oracle"] for r in table] == sorted(r["oracle"] for r in table)  # oracle rows last


def test_cross_fitting_applies_each_half_the_other_halfs_cutoff():
    gold, x = _random_case(3, n_utts=20)
    lengths = [len(u) for u in gold]
    cues = _cues(dict.fromkeys(CUE_NAMES, x), lengths)
    (seg,) = [s for s in segmentations(cues, gold, strategies=["threshold"]) if s.cue == "loss"]
    n_first = sum(lengths[:10])
    on_second = choose_cutoff(x[n_first:], gold[10:])
    on_first = choose_cutoff(x[:n_first], gold[:10])
    assert seg.cutoffs == (on_second, on_first)
    assert seg.starts[:n_first].tolist() == threshold(x[:n_first], lengths[:10], on_second).tolist()
    assert seg.starts[n_first:].tolist() == threshold(x[n_first:], lengths[10:], on_first).tolist()


# --------------------------------------------------------------------------- a trained tiny model


@pytest.fixture(scope="module")
def trained():
    """A 1-layer model trained ~2 s on the synthetic corpus, and held-out utterances."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    utts = synthetic_corpus(1500, seed=3, lexicon_size=60)
    train, held_out = utts[:1300], utts[1300:]
    tok = build_tokenizer(utts)
    cfg = ModelConfig(preset=None, n_layer=1, n_embd=32, n_head=2, n_positions=64, dropout=0.0)
    model = build_model(cfg, tok)
    stream = token_stream(encode(tok, train), boundary_id(tok))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(250):
        starts = torch.randint(0, stream.numel() - 65, (16,), generator=gen).tolist()
        batch = torch.stack([stream[s : s + 65] for s in starts])
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, tok, held_out


def test_boundary_prob_spikes_find_words(trained):
    """Catches misaligned logits/targets: shifted by one, these cues land inside words."""
    model, tok, utts = trained
    cues = compute_cues(model, tok, utts)
    lengths = [len(u) for u in utts]
    f = score_starts(utts, split(spike(cues.values["boundary_prob"], lengths), lengths))
    gold = np.concatenate([u.word_starts for u in utts])
    first = np.concatenate([[True] + [False] * (n - 1) for n in lengths])
    rate = gold[~first].mean()
    rng = np.random.default_rng(0)
    baseline = np.mean(
        [
            score_starts(utts, split(rng.random(gold.size) < rate, lengths))[
                "boundary_noedge_fscore"
            ]
            for _ in range(5)
        ]
    )
    assert f["boundary_noedge_fscore"] > baseline + 0.2


def test_evaluate_segmentation_for_the_training_loop(trained):
    model, tok, utts = trained
    model.train()
    window = Window.for_model(model, 32, batch_size=8)
    result = evaluate_segmentation(model, tok, utts[:80], window=window)
    assert model.training
    numeric = {k: v for k, v in result.items() if k != "seg_best"}
    low, high = ci_keys("seg_boundary_noedge_fscore")
    assert set(numeric) == {*SEGMENTATION_METRICS, low, high}
    assert all(0.0 <= v <= 1.0 for v in numeric.values())
    # the bootstrap interval of the objective's row holds its value, and has a width
    assert result[low] <= result["seg_boundary_noedge_fscore"] <= result[high]
    assert result[high] - result[low] > 0.005
    cue, strategy = str(result["seg_best"]).split("/")
    assert strategy in FAIR_STRATEGIES and cue in (*CUE_NAMES, "majority")
    spikes = [result[f"spike_{cue}_bf"] for cue in CUE_NAMES]
    assert result["seg_boundary_noedge_fscore"] >= max(spikes)  # the best row includes spikes


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    model, tok, utts = trained
    root = tmp_path_factory.mktemp("cli") / "a dir with 'quotes' and spaces"
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    write_tagged(root / "data.txt", utts[:60])
    write_tagged(root / "cutoff.txt", utts[60:120], "WORD_BOUNDARY", "between")
    return root


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "seg_tune.segment", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120, check=False)


def test_cli_table(saved):
    out = run_cli(saved / "model", saved / "data.txt", "--context", "32")
    assert out.returncode == 0, out.stderr
    names = {*CUE_NAMES, "majority"}
    rows = [r for r in map(str.split, out.stdout.splitlines()) if r and r[0] in names]
    assert len(rows) == 3 * len(CUE_NAMES) + 2
    oracle_rows = [r for r in rows if r[-1] == "ORACLE"]
    assert {r[1] for r in oracle_rows} == {"threshold_oracle"} and len(oracle_rows) == 8
    assert "best (not oracle)" in out.stdout


def test_cli_cutoffs_from_chooses_row_and_cutoffs_on_the_other_split(saved, trained):
    """Issue 11: `--cutoffs-from VALID` picks the fair row on VALID (cutoffs cross-fitted there,
    as in training) and scores DATA once with it and with cutoffs chosen on all of VALID."""
    model, tok, _ = trained
    data, valid = load_tagged(saved / "data.txt"), load_tagged(saved / "cutoff.txt")
    written = saved / "held out.txt"
    out = run_cli(
        saved / "model",
        saved / "data.txt",
        "--json",
        "--cutoffs-from",
        saved / "cutoff.txt",
        "--write-segmentation",
        written,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    window = Window.for_model(model)
    on_valid = best_row(
        table_from_cues(compute_cues(model, tok, valid, window), valid, strategies=FAIR_STRATEGIES)
    )
    assert (report["chosen_on_valid"]["cue"], report["chosen_on_valid"]["strategy"]) == (
        on_valid["cue"],
        on_valid["strategy"],
    )
    assert report["chosen_on_valid"]["boundary_noedge_fscore"] == pytest.approx(
        on_valid["boundary_noedge_fscore"]
    )
    expected = next(
        r
        for r in table_from_cues(
            compute_cues(model, tok, data, window),
            data,
            cutoff_cues=compute_cues(model, tok, valid, window),
            cutoff_gold=valid,
        )
        if (r["cue"], r["strategy"]) == (on_valid["cue"], on_valid["strategy"])
    )
    assert {k: report["chosen"][k] for k in SCORE_KEYS} == pytest.approx(
        {k: expected[k] for k in SCORE_KEYS}
    )
    assert (report["chosen"]["cutoffs"] is None) == (expected["cutoffs"] is None)
    assert report["chosen"] in report["rows"]
    assert [u.phonemes for u in load_tagged(written)] == [u.phonemes for u in data]

    text = run_cli(saved / "model", saved / "data.txt", "--cutoffs-from", saved / "cutoff.txt")
    assert (
        f"chosen on {saved / 'cutoff.txt'}: {on_valid['cue']}/{on_valid['strategy']}" in text.stdout
    )
    both = run_cli(
        saved / "model",
        saved / "data.txt",
        "--cutoffs-from",
        saved / "cutoff.txt",
        "--cutoff-data",
        saved / "cutoff.txt",
    )
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_cli_json_and_written_segmentation(saved, trained):
    model, tok, _ = trained
    written = saved / "seg out.txt"
    out = run_cli(
        saved / "model",
        saved / "data.txt",
        "--json",
        "--cutoff-data",
        saved / "cutoff.txt",
        "--write-segmentation",
        written,
        "--cue",
        "boundary_prob",
        "--strategy",
        "spike",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["rows"]) == 3 * len(CUE_NAMES) + 2
    assert {(r["cue"], r["strategy"]) for r in report["rows"]} >= {
        (c, s) for c in CUE_NAMES for s in STRATEGIES[:3]
    }
    assert all(set(SCORE_KEYS) <= set(r) for r in report["rows"])
    fair = [r for r in report["rows"] if not r["oracle"]]
    assert report["best"] == max(fair, key=lambda r: r["boundary_noedge_fscore"])
    assert "cutoff.txt" in report["fair_cutoffs"]
    data = load_tagged(saved / "data.txt")
    pred = load_tagged(written)
    assert [u.phonemes for u in pred] == [u.phonemes for u in data]
    lengths = [len(u) for u in data]
    cues = compute_cues(model, tok, data)
    expected = split(spike(cues.values["boundary_prob"], lengths), lengths)
    assert [u.word_starts for u in pred] == [e.tolist() for e in expected]


def test_cli_missing_model_dir(tmp_path):
    out = run_cli(tmp_path / "nope", tmp_path / "data.txt")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
    assert "not a model directory" in out.stderr and "Traceback" not in out.stderr


def test_benchmark_smoke_mode():
    cmd = [sys.executable, str(REPO / "bench" / "segment_speed.py"), "--smoke-test"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert "| **whole set: cues + segmentation + scoring** |" in out.stdout
    assert "`python bench/segment_speed.py --smoke-test`" in out.stdout


def test_held_out_scores_choose_the_row_and_cutoffs_on_valid_only(trained) -> None:
    """The final phase's scoring: the row the training loop would choose on valid, its cutoffs
    from valid, applied once to test (as `seg-tune segment TEST --cutoffs-from VALID`)."""
    model, tok, held_out = trained
    valid, test = held_out[:100], held_out[100:]
    out = held_out_scores(model, tok, valid, test)
    on_valid = evaluate_segmentation(model, tok, valid)
    chosen = out["chosen"]
    assert f"{chosen['cue']}/{chosen['strategy']}" == on_valid["seg_best"]
    assert chosen["boundary_noedge_fscore"] == on_valid["seg_boundary_noedge_fscore"]
    table = segment_table(model, tok, test, cutoff_utterances=valid)
    row = next(r for r in table if (r["cue"], r["strategy"]) == (chosen["cue"], chosen["strategy"]))
    assert out["test"] == row
    spikes = {r["cue"]: r["boundary_noedge_fscore"] for r in table if r["strategy"] == "spike"}
    assert out["spikes"] == spikes
    low, high = out["test_interval"]
    assert low <= row["boundary_noedge_fscore"] <= high
    assert (out["n_valid"], out["n_test"]) == (100, len(test))
    # the row chosen on test itself is at least as good on test: that is the optimism avoided
    assert best_row(table)["boundary_noedge_fscore"] >= row["boundary_noedge_fscore"]


def test_the_final_phase_scores_with_the_configs_type_key(trained) -> None:
    """A final model, its untrained control and the baselines are scored with the run's
    score.type_key (the synthetic inventory has a, i and ai: concatenation merges types)."""
    from types import SimpleNamespace

    from seg_tune.sweep.final import _score_model, _Splits, score_baselines

    model, tok, held_out = trained
    merged = [Utterance((("a", "i"), ("b", "a"))), Utterance((("ai",), ("b", "a")))] * 5
    valid, test = held_out[:100], held_out[100:] + merged
    by_key = {k: held_out_scores(model, tok, valid, test, type_key=k) for k in TYPE_KEYS}
    assert by_key["wordseg"]["test"]["type_fscore"] != by_key["phonemes"]["test"]["type_fscore"]
    data = SimpleNamespace(model_dump_json=lambda: "data")
    for key in TYPE_KEYS:
        cfg = SimpleNamespace(
            data=data, training=SimpleNamespace(block_size=64), score=SimpleNamespace(type_key=key)
        )
        splits = _Splits(valid_n=100, test_n=None, cache={"data": (valid, test, "test.txt")})
        scored = _score_model(model, tok, cfg, splits)
        assert scored["test"] == by_key[key]["test"] and scored["test_data"] == "test.txt"
    baselines = {k: score_baselines(test, k) for k in TYPE_KEYS}
    for name in ("tp", "simple"):
        w, p = baselines["wordseg"][name], baselines["phonemes"][name]
        assert any(w[row]["type_fscore"] != p[row]["type_fscore"] for row in w)


def test_cli_type_key(saved, trained, tmp_path) -> None:
    """`--type-key phonemes` keys types by phoneme sequence: only type scores move."""
    _, _, utts = trained
    merged = [Utterance((("a", "i"), ("b", "a"))), Utterance((("ai",), ("b", "a")))] * 5
    data = tmp_path / "merged.txt"
    write_tagged(data, [*utts[:40], *merged])
    rows = {}
    for key in TYPE_KEYS:
        out = run_cli(saved / "model", data, "--json", "--type-key", key)
        assert out.returncode == 0, out.stderr
        rows[key] = json.loads(out.stdout)["rows"]
    pairs = list(zip(rows["wordseg"], rows["phonemes"], strict=True))
    assert any(w["type_fscore"] != p["type_fscore"] for w, p in pairs)
    assert all(w["boundary_all_fscore"] == p["boundary_all_fscore"] for w, p in pairs)
