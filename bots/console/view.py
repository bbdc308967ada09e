"""What a reply looks like in a terminal: rich renderables built from what the
engine has delivered so far.

- Before any token: a ``thinking…`` spinner.
- Reasoning (before the answer): the reasoning itself, dimmed and italic.
- Once the answer starts, the reasoning collapses to one dim line
  (``▸ reasoned in 120 words``) above the answer, rendered as Markdown.

While the reply streams, only its last lines that fit the screen are shown
(:class:`Tail`), so the newest text stays in view: a live region can't scroll.
The final view is the whole reply, printed once into the terminal's scrollback.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.markdown import Markdown
from rich.segment import Segment
from rich.spinner import Spinner
from rich.text import Text

THINKING = "thinking…"
REASONING_STYLE = "dim italic"
COLLAPSED_STYLE = "dim"


@dataclass(frozen=True, slots=True)
class ReplyView:
    text: str = ""
    """The answer so far (healed by the engine on intermediate frames)."""
    reasoning: str = ""
    final: bool = False

    def renderable(self) -> RenderableType:
        if not self.text and not self.reasoning:
            return Text("") if self.final else Spinner("dots", Text(THINKING, style="dim"))
        if not self.text:
            body: RenderableType = Text(self.reasoning.strip(), style=REASONING_STYLE)
        elif self.reasoning:
            summary = Text(collapsed(self.reasoning), style=COLLAPSED_STYLE)
            body = Group(summary, Markdown(self.text))
        else:
            body = Markdown(self.text)
        return body if self.final else Tail(body)


def collapsed(reasoning: str) -> str:
    words = len(reasoning.split())
    return f"▸ reasoned in {words} word{'' if words == 1 else 's'}"


class Tail:
    """The last lines of ``renderable`` that fit the console's height, less one
    line for the cursor (what rich's live region can redraw)."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.renderable, options, pad=False)
        room = max(1, options.size.height - 1)
        if len(lines) > room:
            lines = lines[len(lines) - room :]
        new_line = Segment.line()
        for index, line in enumerate(lines):
            yield from line
            if index < len(lines) - 1:
                yield new_line
