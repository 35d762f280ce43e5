"""Who hears what, in which order: a balanced block of trials for every listener.

A test has *conditions* (each model, the hidden reference, the anchor), each a pool of clips
named by opaque tokens. Listener ``i`` (numbered in order of arrival) gets block ``i``:

- **ACR** (absolute category rating): ``n_per_condition`` clips of every condition, so every
  listener rates every condition equally often. Within a condition the clips go to whoever
  comes next least-heard-first (ties broken with the test's seed), so after any number of
  listeners the clips of a condition have been dealt out within one of each other, and no
  listener hears a clip twice - except the one repeated trial.
- **A/B**: every pair of conditions ``n_per_condition`` times (the reference-anchor pair at
  least :data:`N_CHECK_TRIALS` times, the screening rule needs them), each side's clip dealt
  least-heard-first, the left/right sides alternating from listener to listener.

The trials are shuffled with the listener's own seed (:func:`listener_seed`, stored with the
listener), then one trial from the first half is repeated in the second half, at least a
third of the block later (A/B: with its sides swapped), to measure consistency.

A block depends only on the design and the listener's number, so a listener who leaves and
comes back gets the same block, and the analysis rebuilds every block from the stored design.

Examples
--------
>>> design = Design({"lstm": ["a1", "a2"], "gru": ["b1", "b2"]}, n_per_condition=1, seed=0)
>>> block = design.block(0)
>>> len(block), sum(t.repeat_of is not None for t in block)
(3, 1)
>>> sorted(design.condition_of[t.tokens[0]] for t in block if t.repeat_of is None)
['gru', 'lstm']
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from cadenza.errors import ParameterError

__all__ = ["MODES", "N_CHECK_TRIALS", "Design", "Trial", "listener_seed"]

#: ``acr``: rate each clip 1-5; ``ab``: pick the more musical clip of a pair.
MODES = ("acr", "ab")
#: In A/B mode the hidden reference meets the anchor at least this often per listener.
N_CHECK_TRIALS = 3
#: The condition names of the hidden reference and the anchor.
REFERENCE = "reference"
ANCHOR = "anchor"


@dataclasses.dataclass(frozen=True)
class Trial:
    """One screen of the test: one clip to rate (ACR) or two to compare (A/B, left then right).

    ``repeat_of`` is the index of the trial this one repeats (None for a first presentation).
    """

    tokens: tuple[str, ...]
    repeat_of: int | None = None

    def to_dict(self) -> dict:
        return {"tokens": list(self.tokens), "repeat_of": self.repeat_of}


def listener_seed(seed: int, listener: int) -> int:
    """The seed that shuffles listener ``listener``'s block (stored with the listener)."""
    return int(np.random.SeedSequence([int(seed), int(listener)]).generate_state(1)[0])


class Design:
    """The balanced design of one test: conditions and their clips, mode, clips per listener, seed.

    Parameters
    ----------
    conditions : mapping of str to sequence of str
        Each condition's clip tokens (at least one each; tokens unique over the test).
    mode : {"acr", "ab"}
    n_per_condition : int
        ACR: clips of each condition per listener (capped at the condition's size).
        A/B: trials of each pair of conditions per listener.
    seed : int
        The test's seed: deals the clips and seeds every listener's order.
    use_repeat : bool
        Repeat one trial per block (the consistency check).
    """

    def __init__(
        self,
        conditions: Mapping[str, Sequence[str]],
        *,
        mode: str = "acr",
        n_per_condition: int = 5,
        seed: int = 0,
        use_repeat: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ParameterError(f"mode must be one of {MODES}, got {mode!r}")
        if n_per_condition < 1:
            raise ParameterError(f"n_per_condition must be at least 1, got {n_per_condition}")
        if not conditions or any(len(tokens) == 0 for tokens in conditions.values()):
            raise ParameterError("every condition needs at least one clip")
        if mode == "ab" and len(conditions) < 2:
            raise ParameterError("an A/B test needs at least two conditions")
        self.conditions = {str(c): tuple(tokens) for c, tokens in conditions.items()}
        self.condition_of = {t: c for c, tokens in self.conditions.items() for t in tokens}
        if len(self.condition_of) != sum(map(len, self.conditions.values())):
            raise ParameterError("clip tokens must be unique over the whole test")
        self.mode = mode
        self.n_per_condition = int(n_per_condition)
        self.seed = int(seed)
        self.use_repeat = bool(use_repeat)
        self._counts = {c: np.zeros(len(t), np.int64) for c, t in self.conditions.items()}
        self._blocks: list[list[Trial]] = []
        self._lock = threading.Lock()

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "n_per_condition": self.n_per_condition,
            "seed": self.seed,
            "use_repeat": self.use_repeat,
            "conditions": {c: list(t) for c, t in self.conditions.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Design:
        return cls(
            d["conditions"],
            mode=d["mode"],
            n_per_condition=d["n_per_condition"],
            seed=d["seed"],
            use_repeat=d.get("use_repeat", True),
        )

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """A/B: the pairs of conditions, in a fixed order."""
        return list(itertools.combinations(self.conditions, 2))

    def block(self, listener: int) -> list[Trial]:
        """The trials of listener ``listener`` (0, 1, 2, ... in order of arrival), in their order."""
        if listener < 0:
            raise ParameterError(f"listener numbers start at 0, got {listener}")
        with self._lock:  # blocks are dealt in order: block i depends on blocks 0..i-1
            while len(self._blocks) <= listener:
                self._blocks.append(self._deal(len(self._blocks)))
            return list(self._blocks[listener])

    def n_trials(self) -> int:
        return len(self.block(0))

    # ------------------------------------------------------------------ dealing
    def _take(self, condition: str, rng: np.random.Generator, avoid: set[str]) -> str:
        """The least-heard clip of ``condition`` not in ``avoid`` (when possible), ties at random."""
        tokens, counts = self.conditions[condition], self._counts[condition]
        used = np.array([t in avoid for t in tokens])
        order = np.lexsort((rng.random(len(tokens)), counts, used))  # last key first
        k = int(order[0])
        counts[k] += 1
        avoid.add(tokens[k])
        return tokens[k]

    def _deal(self, listener: int) -> list[Trial]:
        rng = np.random.default_rng([self.seed, listener, 1])
        heard: set[str] = set()
        trials: list[Trial] = []
        if self.mode == "acr":
            for c in self.conditions:
                for _ in range(min(self.n_per_condition, len(self.conditions[c]))):
                    trials.append(Trial((self._take(c, rng, heard),)))
        else:
            for p, (a, b) in enumerate(self.pairs):
                n = self.n_per_condition
                if {a, b} == {REFERENCE, ANCHOR}:
                    n = max(n, N_CHECK_TRIALS)
                for t in range(n):
                    left, right = self._take(a, rng, heard), self._take(b, rng, heard)
                    if (listener + p + t) % 2:  # sides alternate over listeners
                        left, right = right, left
                    trials.append(Trial((left, right)))
        order = np.random.default_rng(listener_seed(self.seed, listener)).permutation(len(trials))
        trials = [trials[i] for i in order]
        if self.use_repeat and len(trials) >= 2:
            trials = self._with_repeat(trials, np.random.default_rng([self.seed, listener, 2]))
        return trials

    def _with_repeat(self, trials: list[Trial], rng: np.random.Generator) -> list[Trial]:
        """One trial of the first half presented again later (A/B: sides swapped)."""
        n = len(trials)
        gap = max(2, n // 3)
        src = int(rng.integers(max(1, min((n + 1) // 2, n - 1))))
        first = min(src + gap, n)  # the repeat goes at a position in [first, n]
        at = int(rng.integers(first, n + 1))
        tokens = trials[src].tokens if self.mode == "acr" else trials[src].tokens[::-1]
        return [*trials[:at], Trial(tokens, repeat_of=src), *trials[at:]]
