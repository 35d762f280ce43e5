"""The balanced design: every listener hears every condition alike, clips are dealt evenly, one repeat."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from cadenza.errors import ParameterError
from cadenza.listening.design import ANCHOR, N_CHECK_TRIALS, REFERENCE, Design, listener_seed

CONDITIONS = {
    "lstm": [f"l{i}" for i in range(3)],
    "gru": [f"g{i}" for i in range(5)],
    "wavenet": [f"w{i}" for i in range(7)],
    REFERENCE: [f"r{i}" for i in range(4)],
    ANCHOR: [f"a{i}" for i in range(4)],
}


def test_acr_blocks_are_balanced_over_conditions_and_clips() -> None:
    design = Design(CONDITIONS, n_per_condition=2, seed=3)
    counts = {c: Counter() for c in CONDITIONS}
    orders = set()
    for listener in range(40):
        block = design.block(listener)
        first = [t for t in block if t.repeat_of is None]
        repeats = [(k, t) for k, t in enumerate(block) if t.repeat_of is not None]
        # every condition the same number of times (two each; all five conditions)
        per_condition = Counter(design.condition_of[t.tokens[0]] for t in first)
        assert per_condition == dict.fromkeys(CONDITIONS, 2)
        # no clip twice, except the one repeat, which comes at least two trials later
        assert len({t.tokens for t in first}) == len(first)
        ((at, repeat),) = repeats
        assert block[repeat.repeat_of].tokens == repeat.tokens and at - repeat.repeat_of >= 3
        for t in first:
            counts[design.condition_of[t.tokens[0]]][t.tokens[0]] += 1
        # after any number of listeners, the clips of a condition are within one rating of each other
        for c, tokens in CONDITIONS.items():
            heard = [counts[c][t] for t in tokens]
            assert max(heard) - min(heard) <= 1, (listener, c, heard)
        orders.add(tuple(t.tokens for t in block))
    assert len(orders) == 40  # each listener has an order of their own


def test_blocks_depend_only_on_the_design_and_the_listener_number() -> None:
    a = Design(CONDITIONS, n_per_condition=2, seed=3)
    b = Design.from_dict(a.to_dict())
    assert b.block(7) == a.block(7)  # b deals 0..6 lazily first
    assert a.block(0) != Design(CONDITIONS, n_per_condition=2, seed=4).block(0)
    assert listener_seed(3, 7) == listener_seed(3, 7) != listener_seed(3, 8)


def test_a_condition_smaller_than_the_request_is_heard_whole() -> None:
    design = Design({"x": ["x0"], "y": ["y0", "y1", "y2"]}, n_per_condition=2, seed=0, use_repeat=False)
    block = design.block(0)
    assert sorted(t.tokens[0] for t in block)[:1] == ["x0"] and len(block) == 3


def test_ab_blocks_meet_every_pair_with_sides_balanced() -> None:
    design = Design(CONDITIONS, mode="ab", n_per_condition=1, seed=1)
    left = Counter()
    n_listeners = 20
    for listener in range(n_listeners):
        block = design.block(listener)
        first = [t for t in block if t.repeat_of is None]
        pairs = Counter(frozenset(design.condition_of[x] for x in t.tokens) for t in first)
        for a, b in itertools.combinations(CONDITIONS, 2):
            expected = N_CHECK_TRIALS if {a, b} == {REFERENCE, ANCHOR} else 1
            assert pairs[frozenset((a, b))] == expected
        for t in first:
            left[(design.condition_of[t.tokens[0]], design.condition_of[t.tokens[1]])] += 1
        (repeat,) = [t for t in block if t.repeat_of is not None]
        assert repeat.tokens == block[repeat.repeat_of].tokens[::-1]  # sides swapped
    for a, b in itertools.combinations(CONDITIONS, 2):
        if {a, b} != {REFERENCE, ANCHOR}:
            assert left[(a, b)] == left[(b, a)] == n_listeners // 2


def test_bad_designs_are_refused() -> None:
    with pytest.raises(ParameterError):
        Design(CONDITIONS, mode="mushra")
    with pytest.raises(ParameterError):
        Design(CONDITIONS, n_per_condition=0)
    with pytest.raises(ParameterError):
        Design({"x": []})
    with pytest.raises(ParameterError):
        Design({"x": ["t"], "y": ["t"]})
    with pytest.raises(ParameterError):
        Design({"x": ["t"]}, mode="ab")
    with pytest.raises(ParameterError):
        Design(CONDITIONS).block(-1)
