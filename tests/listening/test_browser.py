"""The real page in Debian's headless Chromium (through playwright): listeners complete, compare and resume.

Clips last one second. The script reads which condition each trial holds from the test's own
files (the page never says), so that the results page can be checked against known ratings.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cadenza.listening.design import ANCHOR, REFERENCE
from tests.listening.helpers import CHROMIUM_ARGS, make_experiment, require_chromium, serving

#: The scripted listener's rating of each condition.
SCRIPT = {REFERENCE: 5, "lstm": 4, "gru": 2, ANCHOR: 1}


@pytest.fixture(scope="module")
def browser():
    sync_api, chromium = require_chromium()
    playwright = sync_api.sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
    yield browser
    browser.close()
    playwright.stop()


def _watch(page, problems: list[str]) -> None:
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)


def _trials(context, url: str) -> list[list[str]]:
    """The listener's block as the server holds it (the page's cookie is the context's)."""
    return [t["tokens"] for t in context.request.get(url + "api/state").json()["listener"]["trials"]]


def _rate_current(page, trials: list[list[str]], exp) -> float:
    """Play the shown clip to its end and rate it by :data:`SCRIPT`; seconds from Play to unlocked."""
    position = int(page.inner_text("#position"))
    condition = exp.design.condition_of[trials[position - 1][0]]
    radio = page.locator("input[name=answer]").first
    assert radio.is_disabled() and page.is_disabled("#next")  # nothing to rate before the clip is heard
    t0 = time.monotonic()
    page.click("button.play")
    page.wait_for_selector("#answer:not([disabled])", timeout=15000)
    waited = time.monotonic() - t0
    assert page.inner_text(".heard") == "heard"
    page.check(f"input[name=answer][value='{SCRIPT[condition]}']")
    page.click("#next")
    return waited


def test_listeners_complete_compare_and_resume_in_chromium(browser, tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, n_per_condition=1)
    n_trials = exp.design.n_trials()
    problems: list[str] = []
    with serving(exp, clock=None) as url:  # the wall clock: the page must pass the server's check
        # --- a listener completes a block; nothing unlocks before each clip has played to its end
        first = browser.new_context()
        page = first.new_page()
        _watch(page, problems)
        page.goto(url)
        page.wait_for_selector("#intro:not([hidden])")
        assert str(n_trials) in page.inner_text("#n-trials") and "muffled" in page.inner_text("#rule")
        page.click("#start")
        page.wait_for_selector("#trial:not([hidden])")
        trials = _trials(first, url)
        for k in range(n_trials):
            page.wait_for_selector(f"#position:text-is('{k + 1}')")
            assert _rate_current(page, trials, exp) >= 0.8 * exp.seconds
        page.wait_for_selector("#done:not([hidden])")
        answers = exp.store.answers()
        ((pseudonym, mine),) = answers.items()
        assert len(mine) == n_trials
        assert all(e.plays >= 1 and e.listened >= 0.9 * exp.seconds for e in mine.values())
        assert all(e.rating == SCRIPT[exp.design.condition_of[e.tokens[0]]] for e in mine.values())

        # --- the results page shows the scripted ratings in the paper's table shape
        page.goto(f"{url}results?key={exp.results_key()}")
        rows = page.locator("table").first.locator("tr").all_inner_texts()
        cells = {r.split("\t")[0]: r.split("\t")[1:] for r in rows[1:]}
        assert cells["lstm"][0] == "4.00" and cells["gru"][0] == "2.00"
        assert cells["real music (hidden reference)"][0] == "5.00"
        assert cells["anchor (low-pass 3.5 kHz)"][0] == "1.00"
        assert all(c[2:4] == ["1", "1"] for c in cells.values())  # one listener, one rating each
        assert "performed on 1 testers" in page.inner_text("body")
        first.close()

        # --- a second listener: the same balanced design, another order
        second = browser.new_context()
        page = second.new_page()
        _watch(page, problems)
        page.goto(url)
        page.wait_for_selector("#intro:not([hidden])")
        page.click("#start")
        page.wait_for_selector("#trial:not([hidden])")
        other = _trials(second, url)
        assert [t.tokens for t in exp.design.block(1)] == [tuple(t) for t in other]
        order = [[exp.design.condition_of[t[0]] for t in ts] for ts in (trials, other)]
        heard = [
            sorted(exp.design.condition_of[t.tokens[0]] for t in exp.design.block(k) if t.repeat_of is None)
            for k in (0, 1)
        ]
        assert heard[0] == heard[1] == sorted(SCRIPT) and order[0] != order[1]
        second.close()

        # --- a listener who leaves after two clips continues at the third
        third = browser.new_context()
        page = third.new_page()
        _watch(page, problems)
        page.goto(url)
        page.wait_for_selector("#intro:not([hidden])")
        page.click("#start")
        page.wait_for_selector("#trial:not([hidden])")
        mine = _trials(third, url)
        for k in range(2):
            page.wait_for_selector(f"#position:text-is('{k + 1}')")
            _rate_current(page, mine, exp)
        page.wait_for_selector("#position:text-is('3')")
        page.close()
        page = third.new_page()
        _watch(page, problems)
        page.goto(url)
        page.wait_for_selector("#intro:not([hidden])")
        assert page.inner_text("#start") == "Continue"
        assert f"answered 2 of {n_trials}" in page.inner_text("#resume-note")
        page.click("#start")
        page.wait_for_selector("#position:text-is('3')")
        # going back shows the earlier answer, unlocked
        page.click("#back")
        page.wait_for_selector("#position:text-is('2')")
        assert page.locator("input[name=answer]:checked").count() == 1 and page.is_enabled("#next")
        third.close()
    assert not problems, problems
    exp.close()
