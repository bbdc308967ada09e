"""``Frame.visible`` (``core.reply.sink``): what an append-only message shows once
a frame is confirmed, ``text[:sent] + delta``, for any frame, without copying
the message when ``delta`` already stands in ``text`` at ``sent``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core.reply.sink import Frame

TEXT = st.text(alphabet="ab<@é🎉\n", max_size=30)


def frame(text: str, delta: str, sent: int) -> Frame:
    return Frame(index=0, text=text, delta=delta, final=False, sent=sent)


@given(TEXT, TEXT, st.integers(-40, 40))
def test_any_frame_shows_text_up_to_sent_then_delta(text: str, delta: str, sent: int) -> None:
    assert frame(text, delta, sent).visible == text[:sent] + delta


@given(TEXT, st.data())
def test_an_engine_frame_shows_its_text_up_to_the_delta_s_end(
    text: str, data: st.DataObject
) -> None:
    """As the engine makes them: ``delta`` is the text after ``sent``, maybe without
    a held-back tail."""
    sent = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(sent, len(text)))
    shown = frame(text, text[sent:end], sent).visible
    assert shown == text[:end]
    if end == len(text):
        assert shown is text  # the whole message: no copy


def test_a_delta_that_is_not_in_the_text_is_appended() -> None:
    assert frame("Hello, wor", "ld!", 7).visible == "Hello, ld!"
    assert frame("abc", "", 5).visible == "abc"
    assert frame("abc", "c", -1).visible == "abc"
    assert frame("", "new", 0).visible == "new"
