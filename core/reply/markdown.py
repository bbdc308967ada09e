"""Markdown as LLMs write it, made safe to show while it is still being written.

Two jobs, both pure and platform-agnostic:

* ``heal`` closes what a half-written reply left open (a code fence, ``**``, a
  code span) so an intermediate frame doesn't render the rest of the message as
  code or as literal asterisks. It only ever appends, so the healed frame is the
  model's text plus a few characters that the next frame will make unnecessary.
* ``Paginator`` cuts a growing reply into messages no longer than a platform
  allows. Its pages partition the model's text exactly (nothing lost, nothing
  repeated) and are decided deterministically: a page is frozen only once the
  text it can hold is fully known, so the same text always yields the same
  pages, however the stream happened to be chunked. A page that ends inside a
  code block closes it, and the next page reopens it.

Fences follow CommonMark: three or more backticks or tildes, indented by at most
three spaces; a backtick fence's info string holds no backtick; the closer uses
the same character, at least as many times, and nothing but spaces after.
Lines end with ``\\n`` (a ``\\r`` before it is ignored).
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_INLINE = re.compile(r"\\.|`+|\*+|_+|~+", re.DOTALL)
_TICKS = re.compile(r"`+")
_MARKS = re.compile(r" {0,3}(`*|~*)")

MIN_ROOM = 16
"""Smallest ``limit - reserve`` a ``Paginator`` accepts: below it a page inside a
code block would be mostly fence markers."""

MAX_REOPENER = 40
"""Longest fence reopener a page may start with; long info strings get cut to
their first word (the language), or dropped."""


@dataclass(frozen=True, slots=True)
class _Fence:
    char: str
    length: int
    info: str
    line: str
    """The opener line without its indentation, as ``open_fence`` reports it."""

    def closer(self, at_line_start: bool) -> str:
        return ("" if at_line_start else "\n") + self.char * self.length


def _step(fence: _Fence | None, text: str, start: int, end: int) -> _Fence | None:
    """The fence state after the line ``text[start:end]`` (which holds no ``\\n``)."""
    match = _FENCE.match(text, start, end)
    if match is None:
        return fence
    marks, rest = match.group(1), match.group(2)
    if fence is None:
        if marks[0] == "`" and "`" in rest:
            return None  # not an opener: an inline code span such as ```x```
        return _Fence(marks[0], len(marks), rest.strip(), text[start:end].strip())
    if marks[0] == fence.char and len(marks) >= fence.length and not rest.strip():
        return None
    return fence


def _scan(text: str) -> _Fence | None:
    """The fence ``text`` ends in; a last line without ``\\n`` counts as complete,
    so a reply ending in "```py" is inside a (just opened) fence."""
    fence: _Fence | None = None
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            end = len(text)
        fence = _step(fence, text, start, end)
        start = end + 1
    return fence


def open_fence(text: str) -> str | None:
    """The opener line (e.g. "```python") of the code block ``text`` ends inside, if any."""
    fence = _scan(text)
    return fence.line if fence else None


# -- heal ----------------------------------------------------------------------


def heal(text: str) -> str:
    """``text`` plus what closes its half-written markdown.

    Inside a fence: the closing fence, on its own line; a last line that is the
    start of the closer (a "``" of a "```" block) is completed instead. A last
    line that is a lone opener ("```py") counts as an opened, empty block, which
    renders sanely while the model writes on.

    Outside fences, only the last line is looked at (emphasis rarely spans lines
    in LLM output, and list items or headings must not pair up with each other):
    an unclosed code span, ``**``, ``__`` and ``~~`` get closed, innermost first.
    Single ``*``/``_`` are left alone (list bullets, snake_case, globs), as are
    markers that cannot open (``5 ** 2``, a trailing ``**`` with nothing after it
    yet) and markers inside code spans.

    The suffix is at most 9 characters, or fence length + 1 inside a fence.
    """
    fence = _scan(text)
    if fence is None:
        return text + _inline_suffix(text, text.rfind("\n") + 1)
    last = text[text.rfind("\n") + 1 :]
    marks = last.lstrip(" ")
    indent = len(last) - len(marks)
    if indent <= 3 and 0 < len(marks) < fence.length and marks == fence.char * len(marks):
        return text + fence.char * (fence.length - len(marks))  # a closer being typed
    return text + fence.closer(at_line_start=text.endswith("\n"))


def _inline_suffix(text: str, start: int) -> str:
    """Closers for the code span and emphasis left open in ``text[start:]``, one line."""
    if _FENCE.match(text, start):
        return ""  # a fence-looking line (say "``` `x"): appending could make it one
    stack: list[str] = []
    code = ""
    pos = start
    while (token := _INLINE.search(text, pos)) is not None:
        run = token.group()
        pos = token.end()
        if run[0] == "`":
            closed = _matching_ticks(text, len(run), pos)
            if closed < 0:
                # Closing a code span right after a backtick would lengthen that run
                # instead; long runs are rare and would eat the paginator's reserve.
                if len(run) <= 3 and not text.endswith("`"):
                    code = run
                break
            pos = closed
        elif len(run) == 2 and run[0] != "\\":
            before = text[token.start() - 1] if token.start() > start else " "
            after = text[pos] if pos < len(text) else " "
            can_open = not after.isspace()
            can_close = not before.isspace()
            if run == "__":  # intraword underscores are never emphasis (snake__case)
                can_open = can_open and not before.isalnum()
                can_close = can_close and not after.isalnum()
            if run in stack:
                if can_close:
                    del stack[stack.index(run) :]
            elif can_open:
                stack.append(run)
    if not code and text[-1:].isspace():
        return ""  # "**bold **" would not close: better show the marker than add one
    return code + "".join(reversed(stack))


def _matching_ticks(text: str, length: int, pos: int) -> int:
    """End of the next run of exactly ``length`` backticks from ``pos``, or -1."""
    while (run := _TICKS.search(text, pos)) is not None:
        if run.end() - run.start() == length:
            return run.end()
        pos = run.end()
    return -1


# -- pagination ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    """One message: the slice ``text[start:end]`` of the model's text, decorated
    with a fence reopener and closer when it starts or ends inside a code block."""

    start: int
    end: int
    prefix: str
    suffix: str

    def render(self, text: str) -> str:
        return self.prefix + text[self.start : self.end] + self.suffix


class Paginator:
    """Splits one growing reply into pages of at most ``limit`` characters.

    Call ``freeze`` with the whole text so far, each time (the text only grows).
    A page is frozen when the text after the previous page no longer fits in one
    message, and it is cut by looking only at the window the page could hold plus
    one character, which is fully known at that moment: so the pages depend only
    on the text, never on how it was chunked. The last page stays open: it takes
    everything after the frozen pages and is at most ``limit - reserve`` long, so
    ``heal`` may add up to ``reserve`` characters (16 covers any heal suffix for
    fences of up to 15 marks). The final call follows the same rule, so a reply's
    final pages are exactly the ones frozen while it streamed, plus the last.

    A page is cut at the latest of, in order of preference and only in the
    window's second half: a paragraph break outside code, a line break outside
    code, a line break inside code (rather not just before its closer: that
    leaves an empty block), a space or tab; else as late as possible. Never
    inside a ``\r\n`` or a surrogate pair, and not inside an emoji or
    combining sequence unless nothing else is left. Whitespace stays at the end
    of the earlier page.
    """

    def __init__(self, limit: int, reserve: int = 16) -> None:
        if reserve < 0 or limit - reserve < MIN_ROOM:
            raise ValueError(f"need reserve >= 0 and limit - reserve >= {MIN_ROOM}")
        self._limit = limit
        self._reserve = reserve
        self._reopener_cap = max(4, min(MAX_REOPENER, (limit - reserve) // 3))
        self._frozen: list[Page] = []
        self._prefix = ""  # of the open page
        self._fence: _Fence | None = None  # what its prefix opened
        self._seen = ""
        self._final = False

    @property
    def frozen(self) -> list[Page]:
        return list(self._frozen)

    def freeze(self, text: str, final: bool, floor: int = 0) -> list[Page]:
        """All pages of ``text``: the frozen ones and the open last one, which
        ends at ``len(text)`` and has no suffix. ``final`` adds no suffix either
        (an unclosed fence at the very end is the model's own) and changes no
        boundary; it only forbids the text to grow afterwards.

        ``floor`` is for append-only sinks, which cannot take back what they
        showed: the open page is never cut before that offset. Cuts then depend
        on timing, which costs the chunking-independence but never a character."""
        if not text.startswith(self._seen) or (self._final and text != self._seen):
            raise ValueError("freeze needs the same reply's text, only ever growing")
        self._seen = text
        self._final = self._final or final
        start = self._frozen[-1].end if self._frozen else 0
        while True:
            room = self._limit - len(self._prefix)  # for the slice and a closer
            capacity = room - self._reserve
            if len(text) - start <= capacity:
                break
            window = text[start : start + capacity + 1]
            cut, fence = _cut(window, self._fence, room, capacity, min(capacity, floor - start))
            suffix = fence.closer(window[cut - 1] == "\n") if fence else ""
            self._frozen.append(Page(start, start + cut, self._prefix, suffix))
            start += cut
            self._prefix, self._fence = _reopener(fence, self._reopener_cap)
        return [*self._frozen, Page(start, len(text), self._prefix, "")]


def _reopener(fence: _Fence | None, cap: int) -> tuple[str, _Fence | None]:
    """The prefix continuing ``fence`` on the next page, at most ``cap`` long, and
    the fence it opens there."""
    if fence is None:
        return "", None
    marks = fence.char * min(fence.length, cap - 1)
    info = fence.info
    if len(marks) + len(info) + 1 > cap:
        info = info.split(maxsplit=1)[0]
        if len(marks) + len(info) + 1 > cap:
            info = ""
    return marks + info + "\n", _Fence(fence.char, len(marks), info, marks + info)


def _cut(
    window: str, fence: _Fence | None, room: int, capacity: int, floor: int = 0
) -> tuple[int, _Fence | None]:
    """Where to end a page: an offset in ``floor..capacity`` (and ``>= 1``) into
    ``window`` (which is ``capacity + 1`` long), and the fence the page is inside
    there. ``fence`` is the one the page's prefix opened; slice and closer must fit
    in ``room``."""
    early = max(1, capacity // 2, floor)
    line_starts = [0]
    fences = [fence]  # the fence state at each line start

    def fence_at(cut: int) -> _Fence | None:
        line = bisect_right(line_starts, cut) - 1
        return _step(fences[line], window, line_starts[line], cut)

    def fits(cut: int, fence: _Fence | None) -> bool:
        closer = fence.closer(window[cut - 1] == "\n") if fence else ""
        return cut + len(closer) <= room

    best: list[tuple[int, _Fence | None] | None] = [None] * 4  # by preference
    start = 0
    while (end := window.find("\n", start, capacity)) >= 0:
        state = _step(fences[-1], window, start, end)
        cut = end + 1
        if cut >= early and fits(cut, state) and not _splits_character(window, cut):
            if state is None:
                best[0 if not window[start:end].strip() else 1] = (cut, state)
            else:  # before the closer, it would leave the next page an empty block
                best[3 if _closer_next(window, cut, state) else 2] = (cut, state)
        line_starts.append(cut)
        fences.append(state)
        start = cut
    for choice in best:
        if choice is not None:
            return choice
    for cut in range(capacity, early - 1, -1):
        if window[cut - 1] in " \t" and not window[cut].isspace():
            state = fence_at(cut)
            if fits(cut, state) and not _splits_character(window, cut):
                return cut, state
    # A hard cut. Cuts 1 and 2 always fit (the room leaves space for a prefix, a
    # closer and two characters) and one of them splits no pair, so this returns.
    for strict in (False, True):
        for cut in range(capacity, max(floor, 1) - 1, -1):
            state = fence_at(cut)
            if fits(cut, state) and not _splits_character(window, cut, strict):
                return cut, state
    if floor > 0:  # what was shown stays shown, even if it splits a character
        return floor, fence_at(floor)
    raise AssertionError("unreachable: a one or two character cut always fits")


def _closer_next(window: str, cut: int, fence: _Fence) -> bool:
    """Does the line at ``cut`` look, as far as ``window`` shows, like ``fence``'s closer?
    Cutting there would leave the next page an empty code block."""
    match = _MARKS.match(window, cut)
    if match is None:  # never: the pattern matches the empty string
        return False
    marks = match.group(1)
    return marks[:1] == fence.char and (match.end() == len(window) or len(marks) >= fence.length)


def _splits_character(text: str, cut: int, strict: bool = False) -> bool:
    """Would cutting ``text`` at ``cut`` split a ``\\r\\n``, a surrogate pair or, unless
    ``strict``, a character from the marks, joiners or modifiers that follow it?"""
    before, after = text[cut - 1], text[cut]
    if (before, after) == ("\r", "\n") or (
        "\ud800" <= before <= "\udbff" and "\udc00" <= after <= "\udfff"
    ):
        return True
    if strict:
        return False
    code = ord(after)
    return (
        "\u200d" in (before, after)
        or unicodedata.category(after) in ("Mn", "Mc", "Me")
        or 0x1F3FB <= code <= 0x1F3FF  # skin tone
        or 0xE0020 <= code <= 0xE007F  # tag sequences (subdivision flags)
    )


def unsplit(rendered: Sequence[str], pages: Sequence[Page]) -> str:
    """The model's text back from final messages: each one's page decorations
    stripped, then joined. Raises if a message doesn't carry its page's."""
    if len(rendered) != len(pages):
        raise ValueError(f"{len(rendered)} messages for {len(pages)} pages")
    parts = []
    for message, page in zip(rendered, pages, strict=True):
        body = len(message) - len(page.suffix)
        if body < len(page.prefix) or not (
            message.startswith(page.prefix) and message.endswith(page.suffix)
        ):
            raise ValueError(f"message does not carry its page's decorations: {message[:40]!r}")
        parts.append(message[len(page.prefix) : body])
    return "".join(parts)
