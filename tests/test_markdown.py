"""Healing half-written markdown and paginating a growing reply: the example rules,
then the guarantees (determinism, exact partition, sizes, balanced fences) as
properties over texts made of the pieces that break naive splitters."""

from __future__ import annotations

import itertools
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.reply.markdown import MAX_REOPENER, Page, Paginator, heal, open_fence, unsplit

# -- open_fence ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "opener"),
    [
        ("```python\nx = 1", "```python"),
        ("```python\nx = 1\n```", None),
        ("```python\nx = 1\n```  \nafter", None),  # spaces may follow a closer
        ("````md\n```\ninner", "````md"),  # a shorter closer closes nothing
        ("```\n~~~\n", "```"),  # the other character closes nothing
        ("~~~\ncode\n~~~~\n", None),  # a longer closer does
        ("```\nx\n``` y\n", "```"),  # a closer has nothing after it
        ("   ```\nindented by three", "```"),
        ("    ```\nindented by four is code, not a fence", None),
        ("``` a`b\n", None),  # a backtick info string can't hold backticks
        ("~~~ a`b\n", "~~~ a`b"),  # a tilde one can
        ("```", "```"),  # a lone opener opens
        ("``", None),
        ("text ```not a fence```", None),
        ("```js\r\nx\r\n```\r\n", None),
        ("```js\r\nx\r\n", "```js"),
    ],
)
def test_open_fence(text: str, opener: str | None) -> None:
    assert open_fence(text) == opener


# -- heal ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "suffix"),
    [
        # fences
        ("```py\nx = 1", "\n```"),
        ("```py\nx = 1\n", "```"),
        ("````md\n```\ninner", "\n````"),
        ("~~~\ncode", "\n~~~"),
        ("  ~~~~ text\ncode", "\n~~~~"),
        ("```\n**x", "\n```"),  # no emphasis healing inside code
        ("```js\r\nx = 1\r", "\n```"),
        ("Here:\n```", "\n```"),  # a fence being opened: an empty block for now
        ("Here:\n```py", "\n```"),
        ("```\ncode\n``", "`"),  # the closer being typed is completed
        ("````\ncode\n ``", "``"),
        ("Here:\n``", ""),  # maybe a fence, maybe a code span: nothing yet
        ("Here:\n`", ""),
        # code spans
        ("use `foo", "`"),
        ("use ``a`b", "``"),
        ("use `foo` and `bar", "`"),
        ("use `", ""),  # nothing to close yet
        ("use `a **b", "`"),  # emphasis in a code span doesn't count
        ("`**x` and **y", "**"),
        # emphasis
        ("**bold", "**"),
        ("__bold", "__"),
        ("~~gone", "~~"),
        ("**bold ~~strike", "~~**"),
        ("**bold `code", "`**"),
        ("- **Step 1:** done\n- **Step 2", "**"),
        ("a**b", "**"),
        # conservative: nothing to close
        ("**a** `b` ~~c~~ __d__", ""),
        ("- item *one", ""),
        ("snake_case and my__var and __init__", ""),
        ("call my__private", ""),
        ("__a__b", "__"),  # the middle one is intraword: it neither opens nor closes
        ("5 ** 2", ""),
        ("so **", ""),  # the marker has nothing after it yet
        ("**bold ", ""),  # "**bold **" would not close
        ("\\*\\*not bold", ""),
        ("**a\nb", ""),  # only the last line counts
        ("***both", ""),
        ("", ""),
    ],
)
def test_heal(text: str, suffix: str) -> None:
    assert heal(text) == text + suffix


def test_healed_fences_and_spans_are_closed() -> None:
    for text in ("```py\nx = 1", "Here:\n```py", "```\ncode\n``", "Here:\n``"):
        assert open_fence(heal(text)) is None, text
    assert heal("**bold").count("**") == 2


# -- pagination: examples ------------------------------------------------------


def pages_of(text: str, limit: int = 100, reserve: int = 0) -> list[Page]:
    return Paginator(limit, reserve).freeze(text, final=True)


def ends(pages: list[Page]) -> list[int]:
    return [page.end for page in pages]


def test_short_text_is_one_open_page() -> None:
    assert pages_of("hello") == [Page(0, 5, "", "")]
    assert pages_of("") == [Page(0, 0, "", "")]


def test_prefers_a_paragraph_break() -> None:
    text = "a" * 60 + "\n\n" + "b" * 30 + "\n" + "c" * 5 + " " + "d" * 100
    assert ends(pages_of(text))[0] == 62


def test_then_a_line_break() -> None:
    text = "a" * 60 + "\n" + "b" * 30 + " " + "c" * 100
    assert ends(pages_of(text))[0] == 61


def test_a_break_in_the_first_half_is_too_early() -> None:
    text = "a" * 20 + "\n\n" + "b" * 70 + "\n" + "c" * 50
    assert ends(pages_of(text))[0] == 93


def test_then_whitespace_which_stays_on_the_earlier_page() -> None:
    text = "abcdefg " * 20
    pages = pages_of(text)
    assert ends(pages)[0] == 96
    assert text[: pages[0].end].endswith(" ")
    assert text[pages[1].start] == "a"


def test_else_a_hard_cut_at_capacity() -> None:
    assert ends(pages_of("x" * 250)) == [100, 200, 250]


def test_reserve_leaves_room_on_every_page() -> None:
    assert ends(pages_of("x" * 250, limit=100, reserve=16)) == [84, 168, 250]


def test_prefers_ending_before_a_fence_to_cutting_it() -> None:
    code = "```python\n" + "".join(f"value_{i} = {i}\n" for i in range(10)) + "```\n"
    text = "p" * 70 + "\n" + code + "after\n"
    pages = pages_of(text)
    assert pages[0] == Page(0, 71, "", "")
    assert pages[1].render(text).startswith("```python\nvalue_0")


def test_a_page_ending_inside_code_closes_it_and_the_next_reopens_it() -> None:
    text = "```python\n" + "".join(f"value_{i} = {i}\n" for i in range(10)) + "```\nafter\n"
    pages = pages_of(text)
    first, second = pages[0].render(text), pages[1].render(text)
    assert text[: pages[0].end].endswith("\n")  # cut at a line break, inside the code
    assert first.endswith("\n```") and pages[0].suffix == "```"
    assert second.startswith("```python\nvalue_") and pages[1].prefix == "```python\n"
    assert open_fence(first) is None and open_fence(second) is None


def test_a_reply_that_is_one_giant_code_block() -> None:
    body = "".join(f"result_{i} = compute({i}) * 2\n" for i in range(2000))
    text = "```python\n" + body + "```\n"
    pages = pages_of(text, limit=300, reserve=16)
    rendered = [page.render(text) for page in pages]
    assert len(pages) > 100
    assert all(len(message) <= 300 for message in rendered)
    assert len(rendered[-1]) <= 300 - 16
    assert all(open_fence(message) is None for message in rendered)
    assert all(message.startswith("```python\nresult_") for message in rendered)
    assert all(message.endswith("\n```") for message in rendered[:-1])
    assert rendered[-1].endswith("\n```\n")  # the model's own closer
    assert all(text[page.end - 1] == "\n" for page in pages)  # whole code lines
    assert unsplit(rendered, pages) == text


def test_does_not_leave_the_next_page_only_a_closer() -> None:
    text = "```\n" + "code line\n" * 5 + "x" * 43 + "\n```\n" + "after " * 30
    assert text[98:101] == "```"  # the window ends inside the closer's line
    pages = pages_of(text, limit=116, reserve=16)
    assert pages[0] == Page(0, 54, "", "```")
    assert pages[1].render(text).startswith("```\nxxx")


def test_the_closer_must_fit_too() -> None:
    text = "```\n" + "a" * 95 + "\n" + "b" * 50 + "\n```\n"
    pages = pages_of(text, limit=100, reserve=0)
    assert pages[0] == Page(0, 96, "", "\n```")  # the line break at 100 leaves no room
    assert len(pages[0].render(text)) == 100


def test_a_longer_fence_is_reopened_as_long() -> None:
    example = "```python\nprint('hi')\n```\n"
    text = "````markdown\n" + example * 10 + "````\n"
    pages = pages_of(text, limit=60, reserve=16)
    assert all(page.prefix == "````markdown\n" for page in pages[1:])
    assert all(page.suffix in ("", "````", "\n````") for page in pages)
    assert unsplit([page.render(text) for page in pages], pages) == text


def test_a_long_info_string_is_cut_to_the_language() -> None:
    opener = "```python title='" + "very_long_name" * 5 + ".py' linenums=1"
    text = opener + "\n" + "x = 1\n" * 100 + "```\n"
    pages = pages_of(text, limit=200, reserve=16)
    assert all(page.prefix == "```python\n" for page in pages[1:])
    assert len(pages[1].prefix) <= MAX_REOPENER


def test_a_tiny_limit_still_works_inside_code() -> None:
    text = "```javascript\n" + "const answer = 42; // the answer\n" * 20 + "```\n"
    pages = pages_of(text, limit=40, reserve=16)
    rendered = [page.render(text) for page in pages]
    assert all(len(message) <= 40 for message in rendered)
    assert len(rendered[-1]) <= 40 - 16
    assert all(open_fence(message) is None for message in rendered)
    assert pages[1].prefix == "```\n"  # "```javascript" would leave no room
    assert unsplit(rendered, pages) == text


def test_crlf_is_never_split() -> None:
    text = "x" * 99 + "\r\n" + "y" * 200
    assert ends(pages_of(text))[0] == 99
    lines = "a line of text\r\n" * 500
    assert all(lines[end - 1] == "\n" for end in ends(pages_of(lines, limit=120)))


def test_surrogate_pairs_and_emoji_sequences_are_never_split() -> None:
    pairs = "\ud83d\ude00" * 100  # as surrogates, e.g. from a lenient JSON decoder
    assert all(end % 2 == 0 for end in ends(pages_of(pairs, limit=101)))
    family = "👨\u200d👩\u200d👧"  # five code points
    text = family * 60
    assert all(end % 5 == 0 for end in ends(pages_of(text, limit=101)))
    accents = "e\u0301" * 100
    assert all(end % 2 == 0 for end in ends(pages_of(accents, limit=101)))


def test_marks_without_a_base_are_cut_anyway() -> None:
    text = "\u0301" * 300
    pages = pages_of(text)
    assert ends(pages) == [100, 200, 300]


def test_final_changes_no_boundary_and_ends_the_text() -> None:
    text = "word " * 100
    growing = Paginator(100, 16)
    assert growing.freeze(text, final=False) == growing.freeze(text, final=True)
    assert growing.freeze(text, final=True) == pages_of(text, reserve=16)
    with pytest.raises(ValueError):
        growing.freeze(text + "more", final=True)


def test_frozen_pages_never_change() -> None:
    paginator = Paginator(100, 16)
    text = "word " * 100
    paginator.freeze(text[:150], final=False)
    frozen = paginator.frozen
    assert len(frozen) == 1
    paginator.freeze(text, final=False)
    assert paginator.frozen[:1] == frozen
    assert ends(paginator.frozen) == [80, 160, 240, 320, 400, 480]


def test_text_must_only_grow() -> None:
    paginator = Paginator(100)
    paginator.freeze("hello world", final=False)
    with pytest.raises(ValueError):
        paginator.freeze("hello", final=False)
    with pytest.raises(ValueError):
        paginator.freeze("jello world!", final=False)


def test_limits_too_small_for_a_page_are_rejected() -> None:
    with pytest.raises(ValueError):
        Paginator(30, 16)
    with pytest.raises(ValueError):
        Paginator(100, -1)
    Paginator(40, 16)


def test_unsplit_rejects_messages_without_their_decorations() -> None:
    text = "```\n" + "code line\n" * 30
    pages = pages_of(text)
    rendered = [page.render(text) for page in pages]
    assert unsplit(rendered, pages) == text
    with pytest.raises(ValueError):
        unsplit([rendered[0].removesuffix("```"), *rendered[1:]], pages)
    with pytest.raises(ValueError):
        unsplit(rendered[:-1], pages)


def fifty_kilobytes() -> str:
    parts = []
    for i in range(200):
        parts.append(f"## Section {i}\n\nSome **bold** prose with `code` and words. " * 3)
        parts.append("\n\n- a list item\n- another one with a_snake_case name\n\n")
        if i % 3 == 0:
            parts.append("```python\n" + "".join(f"x_{j} = {j} ** 2\n" for j in range(8)))
            parts.append("```\n\n")
    return "".join(parts)


def test_fifty_kilobytes_streamed_in_small_chunks_is_fast_and_exact() -> None:
    text = fifty_kilobytes()
    assert len(text) >= 50_000
    started = time.perf_counter()
    paginator = Paginator(2000, 16)
    for end in range(0, len(text), 7):
        pages = paginator.freeze(text[:end], final=False)
        heal(pages[-1].render(text[:end]))
    pages = paginator.freeze(text, final=True)
    elapsed = time.perf_counter() - started
    assert pages == pages_of(text, limit=2000, reserve=16)
    assert unsplit([page.render(text) for page in pages], pages) == text
    assert 25 <= len(pages) <= 40
    assert elapsed < 5.0, elapsed  # about 7000 calls; quadratic work would take far longer


SAMPLE = (
    "# Title\n\nSome **bold** prose, a `span` and a link: https://example.com/"
    + "a-very-long-path-segment" * 8
    + "\n\n1. First\n2. Second with e\u0301 and 👨\u200d👩\u200d👧\n\n```python title=x\n"
    + "".join(f"value_{i} = compute({i})  # comment\r\n" for i in range(40))
    + "```\n\n"
    + "word " * 120
    + "~~~\n"
    + "\ud83d\ude00" * 90
)


@pytest.mark.parametrize(("limit", "reserve"), [(40, 16), (57, 0), (100, 16), (333, 5)])
def test_pages_do_not_depend_on_how_the_text_grew(limit: int, reserve: int) -> None:
    whole = Paginator(limit, reserve).freeze(SAMPLE, final=True)
    assert len(whole) > 3
    for step in (1, 2, 3, 7, 13, 64, 500):
        growing = Paginator(limit, reserve)
        for end in range(0, len(SAMPLE), step):
            pages = growing.freeze(SAMPLE[:end], final=False)
            assert pages[:-1] == whole[: len(pages) - 1], (step, end)
        assert growing.freeze(SAMPLE, final=True) == whole, step


# -- properties ----------------------------------------------------------------

PIECES = [
    *"ab \n`*_~#",
    "word ",
    "\n\n",
    "\r\n",
    "```",
    "```py\n",
    "~~~\n",
    "**",
    "__",
    "~~",
    "    ",
    "- ",
    "é",
    "🎉",
    "\ud83d\ude00",
    "e\u0301",
    "👍🏽",
    "\u200d",
    "x" * 30,
]
texts = st.lists(st.sampled_from(PIECES), max_size=250).map("".join)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def longest_fence_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+|~+", text)), default=0)


def check_pages(text: str, pages: list[Page], limit: int, reserve: int) -> None:
    assert pages[0].start == 0 and pages[-1].end == len(text)
    assert all(a.end == b.start for a, b in itertools.pairwise(pages))
    assert "".join(text[page.start : page.end] for page in pages) == text
    for page in pages[:-1]:
        assert page.start < page.end
        rendered = page.render(text)
        assert len(rendered) <= limit
        assert open_fence(rendered) is None, rendered
        before, after = text[page.end - 1], text[page.end]
        assert (before, after) != ("\r", "\n")
        assert not ("\ud800" <= before <= "\udbff" and "\udc00" <= after <= "\udfff")
    for earlier, later in itertools.pairwise(pages):
        assert bool(earlier.suffix) == bool(later.prefix)  # closed here, reopened there
    last = pages[-1]
    assert last.suffix == ""
    rendered = last.render(text)
    assert len(rendered) + reserve <= limit
    healed = heal(rendered)
    assert healed.startswith(rendered) and open_fence(healed) is None
    if longest_fence_run(text) <= 15 and reserve >= 16:
        assert len(healed) <= limit


def growth(length: int, steps: list[int]) -> list[int]:
    """The lengths a stream growing by ``steps`` (repeated) passes through."""
    ends, end = [], 0
    while steps and end < length:
        for step in steps:
            end = min(length, end + step)
            ends.append(end)
    return ends


@FAST
@given(
    text=texts,
    limit=st.integers(min_value=40, max_value=300),
    reserve=st.sampled_from([0, 5, 16]),
    steps=st.lists(st.integers(min_value=1, max_value=80), max_size=8),
)
def test_pages_partition_the_text_fit_and_do_not_depend_on_chunking(
    text: str, limit: int, reserve: int, steps: list[int]
) -> None:
    whole = Paginator(limit, reserve).freeze(text, final=True)
    check_pages(text, whole, limit, reserve)
    growing = Paginator(limit, reserve)
    for end in growth(len(text), steps):
        pages = growing.freeze(text[:end], final=False)
        check_pages(text[:end], pages, limit, reserve)
        assert pages[:-1] == whole[: len(pages) - 1]  # frozen early, frozen the same
    assert growing.freeze(text, final=True) == whole
    assert unsplit([page.render(text) for page in whole], whole) == text


@FAST
@given(text=texts)
def test_heal_only_appends_and_leaves_no_fence_open(text: str) -> None:
    healed = heal(text)
    assert healed.startswith(text)
    assert open_fence(healed) is None
    assert len(healed) - len(text) <= max(9, longest_fence_run(text) + 1)


@FAST
@given(text=texts, limit=st.integers(min_value=40, max_value=200))
def test_every_intermediate_frame_heals_within_the_limit(text: str, limit: int) -> None:
    """What the engine shows while streaming: each frame's open page, healed."""
    paginator = Paginator(limit, 16)
    for end in range(0, len(text) + 1, 9):
        page = paginator.freeze(text[:end], final=False)[-1]
        healed = heal(page.render(text[:end]))
        assert open_fence(healed) is None
        if longest_fence_run(text) <= 15:
            assert len(healed) <= limit
