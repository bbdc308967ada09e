"""Conversation memory in Redis, and the model context built from it.

Platforms make history expensive to read back (Slack drops
``conversations.replies`` to one request a minute for many apps), so each
conversation keeps its own turns: a Redis list of small JSON objects, appended
in one transaction with the trim and the expiry refresh, so two replicas
appending at once interleave whole turns and a conversation in use never
expires. A conversation unused for ``CONVERSATION_TTL`` disappears by itself.

The context sent to the model is the system prompt, then the newest turns that
fit ``CONTEXT_TOKENS``, then the current message. The oldest turns go first;
the system prompt and the current message always stay, even if they alone
exceed the budget (the message is already capped by ``max_chars``), because a
reply without either is not an answer to what was asked.

Tokens are *estimated*, not counted: every model has its own tokenizer and the
estimate only has to be on the safe side. English prose runs about four
characters per token, so ASCII counts a quarter token per character; CJK and
emoji often take a token or more per character, so every other character
counts a whole token; each message adds four for the role framing. This errs
high (a few old turns too many are dropped), never towards an over-long request.

Without Redis there is no memory to read or write, so ``context``, ``append``,
``history`` and ``reset`` raise one of ``REDIS_FAILURES`` when Redis is
unreachable, and a ``TimeoutError`` (one of them) when it does not answer
within ``timeout`` (``REPLY_PATH_TIMEOUT``): a paused server costs a reply at
most that long per call instead of holding it. What to do instead is the
caller's call, since only it knows what the user will see: the responder can
answer without history, ``build_context(prompt, [], conversations.prepare(turn),
conversations.context_tokens)``, and log a failed ``append`` of the answer (it
was shown already; only the model's memory of it is lost); a history rebuild
(``history`` to see whether there is one) should be skipped, not attempted.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from core.llm.messages import ChatMessage
from core.state.connection import REPLY_PATH_TIMEOUT, bounded
from core.state.keys import ConversationKey, Keys
from core.state.topology import RedisClient

log = logging.getLogger(__name__)

TurnRole = Literal["user", "assistant"]

MESSAGE_OVERHEAD = 4
"""Estimated tokens of framing per message (role, separators)."""

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation. ``author`` is the platform's user id for a
    person's turn (kept so the model can tell people apart), None for the bot."""

    role: TurnRole
    author: str | None
    text: str


def estimate_tokens(text: str) -> int:
    """A cheap upper-leaning token estimate (see the module docstring)."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return (ascii_chars + 3) // 4 + (len(text) - ascii_chars)


def truncate(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters, saying so at the cut.

    A pasted log or file should still get an answer about its beginning, not a
    rejection; the marker tells the model (and anyone reading the history)
    that the rest is missing.
    """
    if len(text) <= max_chars:
        return text
    omitted = len(text) - max_chars
    while True:
        marker = f"\n\n[… message truncated: {omitted:,} more characters not kept]"
        keep = max(0, max_chars - len(marker))
        if len(text) - keep == omitted:
            return text[:keep] + marker
        omitted = len(text) - keep


def build_context(
    system_prompt: str, history: Sequence[Turn], current: Turn, budget_tokens: int
) -> list[ChatMessage]:
    """System prompt, the newest turns of ``history`` that fit ``budget_tokens``
    with the prompt and ``current``, then ``current``."""
    system = ChatMessage("system", system_prompt)
    last = _message(current)
    remaining = budget_tokens - _cost(system) - _cost(last)
    kept: list[ChatMessage] = []
    for turn in reversed(history):
        message = _message(turn)
        cost = _cost(message)
        if cost > remaining:
            break
        remaining -= cost
        kept.append(message)
    kept.reverse()
    if len(kept) < len(history):
        # The cut may leave a reply whose question was dropped; some APIs also
        # insist that the first turn after the system prompt is the user's.
        while kept and kept[0].role == "assistant":
            kept.pop(0)
    return [system, *kept, last]


def _message(turn: Turn) -> ChatMessage:
    name = None
    if turn.role == "user" and turn.author:
        # OpenAI accepts names matching ^[A-Za-z0-9_-]{1,64}$; platform ids do.
        name = _NAME_UNSAFE.sub("_", turn.author)[:64]
    return ChatMessage(turn.role, turn.text, name)


def _cost(message: ChatMessage) -> int:
    name = estimate_tokens(message.name) if message.name else 0
    return estimate_tokens(message.content) + name + MESSAGE_OVERHEAD


class Conversations:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        ttl: int = 7 * 86400,
        max_turns: int = 200,
        max_chars: int = 16_000,
        context_tokens: int = 8000,
        timeout: float = REPLY_PATH_TIMEOUT,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.ttl = ttl
        self.max_turns = max_turns
        self.max_chars = max_chars
        self.context_tokens = context_tokens
        self.timeout = timeout

    def prepare(self, turn: Turn) -> Turn:
        """``turn`` as it will be stored: its text capped at ``max_chars``."""
        text = truncate(turn.text, self.max_chars)
        return turn if text is turn.text else Turn(turn.role, turn.author, text)

    async def append(self, conversation: ConversationKey, *turns: Turn) -> None:
        """Add turns at the end, atomically, and keep the conversation alive."""
        if not turns:
            return
        key = self._keys.conversation(conversation)
        encoded = [self._encode(self.prepare(turn)) for turn in turns]
        await bounded(self._transaction(key, append=encoded), self.timeout)

    async def history(self, conversation: ConversationKey) -> list[Turn]:
        """Every stored turn, oldest first; reading it counts as use."""
        key = self._keys.conversation(conversation)
        raw = await bounded(self._transaction(key, read=True), self.timeout)
        return self._decode_all(conversation, raw)

    async def exists(self, conversation: ConversationKey) -> bool:
        """Whether anything of the conversation is stored (a look, not a use)."""
        key = self._keys.conversation(conversation)
        return bool(await bounded(self._redis.exists(key), self.timeout))

    async def context(
        self, conversation: ConversationKey, system_prompt: str, current: Turn
    ) -> list[ChatMessage]:
        """Store the new message ``current`` and return the messages for the model.

        One transaction reads the history and appends ``current``, so the
        context is exactly what preceded the message, whatever other replicas do.
        """
        key = self._keys.conversation(conversation)
        current = self.prepare(current)
        raw = await bounded(
            self._transaction(key, read=True, append=[self._encode(current)]), self.timeout
        )
        history = self._decode_all(conversation, raw)
        return build_context(system_prompt, history, current, self.context_tokens)

    async def reset(self, conversation: ConversationKey) -> bool:
        """Forget the conversation (``/reset``); True if there was anything to forget."""
        key = self._keys.conversation(conversation)
        return bool(await bounded(self._redis.delete(key), self.timeout))

    async def _transaction(
        self, key: str, *, read: bool = False, append: Sequence[str] = ()
    ) -> list[bytes]:
        """One MULTI/EXEC: the turns before (if ``read``), ``append`` added and
        trimmed, the expiry refreshed. Returns the turns read (or [])."""
        async with self._redis.pipeline(transaction=True) as pipe:
            if read:
                pipe.lrange(key, 0, -1)
            if append:
                pipe.rpush(key, *append)
                pipe.ltrim(key, -self.max_turns, -1)
            pipe.expire(key, self.ttl)
            results = await pipe.execute()
        turns: list[bytes] = results[0] if read else []
        return turns

    @staticmethod
    def _encode(turn: Turn) -> str:
        return json.dumps(
            {"role": turn.role, "author": turn.author, "text": turn.text}, ensure_ascii=False
        )

    def _decode_all(self, conversation: ConversationKey, raw: Sequence[bytes]) -> list[Turn]:
        turns = []
        for position, item in enumerate(raw):
            turn = _decode(item)
            if turn is None:
                log.warning(
                    "skipping undecodable turn %d of conversation %s: %.80r",
                    position,
                    conversation.id,
                    item,
                )
            else:
                turns.append(turn)
        return turns


def _decode(item: bytes) -> Turn | None:
    try:
        data = json.loads(item)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(data, dict):
        return None
    role, author, text = data.get("role"), data.get("author"), data.get("text")
    if role not in ("user", "assistant") or not isinstance(text, str):
        return None
    if author is not None and not isinstance(author, str):
        return None
    return Turn(role, author, text)
