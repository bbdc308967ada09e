"""Discord's calls: the client that makes them, where a reply's messages are
written, what Discord's answers mean to the engine, and what a write needs.

**Outlets.** A reply's messages are written to a channel, or to an
interaction's webhook. Both do the same two things (create a message, edit
one) through different endpoints with different limits and lifetimes:

- ``ChannelOutlet``: bot messages in a channel, thread or DM. The first one
  replies to the user's message and may notify them; continuations are silent.
  They can be edited for as long as they exist.
- ``InteractionOutlet``: an ``/ask`` response (the deferred ``@original``) and its
  followups, written with the interaction's token: this process's interaction
  (``of``), or one another process deferred and handed over (``resumed``, from
  the application id, the token and the response's id). No channel permission
  is needed, but the token dies 15 minutes after the command.

Each outlet names the budget scopes its writes spend (``scopes``, from
``bots.discord.limits``). Every send and edit carries ``allowed_mentions``
(Discord re-parses mentions on each edit). Discord's answers become what the
engine understands (``translate``): a 429 that discord.py gave up on is
``RateLimited``, a message or channel that is gone or no longer writable is
``MessageGone``, a dead interaction token is ``TokenExpired`` (the sink then
moves to the channel).

**Permissions.** A reply the bot can't post is a model call wasted and a
string of 403s, and Discord bans an IP for a while after 10,000 401/403/429
answers in 10 minutes. So the permissions a reply needs
(``missing_permissions``) are checked from discord.py's cache (the channel's
overwrites and the bot's roles, kept current by the gateway) before anything
is sent.

**The client.** *Intents* are kept to what the bot uses: guilds (channels,
permissions, threads), guild messages (mentions, replies, auto-reply channels)
and direct messages when DMs are on. MESSAGE_CONTENT is privileged (Discord
must enable it for the application, and verified bots must be approved for
it): without it the bot still reads mentions, DMs and replies that ping it, so
it is asked for only when an auto-reply channel needs every message's text
(``DISCORD_MESSAGE_CONTENT=auto``), or when forced ``on``.

*Shards*: ``AutoShardedClient`` runs ``DISCORD_SHARD_IDS`` of
``DISCORD_SHARD_COUNT`` in one process; several processes split the shards
between them, and exactly one runs shard 0, which alone receives DMs.

*Logging in* (``logged_in``) refuses to run half-configured, with one line
saying what to fix: a token Discord rejects, or MESSAGE_CONTENT forced ``on``
for an application that doesn't have it.

*Addresses*: discord.py reads its REST base and gateway from class
attributes, so ``pointed_at`` sets them for the process while the bot runs
(``DISCORD_API_URL`` for a REST proxy such as nirn-proxy or a test fake,
``DISCORD_GATEWAY_URL`` for the gateway).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl

from bots.discord.format import Rendered, RenderMode
from bots.discord.limits import GLOBAL_SCOPE, channel_scope, header_seconds, interaction_scope
from bots.discord.settings import PLATFORM, DiscordSettings
from core.config import ConfigError, Unavailable
from core.reply import Budget, MessageGone, RateLimited
from core.rules import RulesSource

T = TypeVar("T")

log = logging.getLogger(__name__)

EditOriginal = Callable[..., Awaitable[discord.InteractionMessage]]
"""``Interaction.edit_original_response``: the ``@original`` edit of a live interaction."""

NO_MENTIONS = discord.AllowedMentions.none()
REPLIED_USER_ONLY = discord.AllowedMentions(
    everyone=False, users=False, roles=False, replied_user=True
)

UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
UNKNOWN_INTERACTION = 10062
INVALID_WEBHOOK_TOKEN = 50027
GONE_CODES = frozenset(
    {UNKNOWN_CHANNEL, UNKNOWN_MESSAGE, UNKNOWN_WEBHOOK, UNKNOWN_INTERACTION, INVALID_WEBHOOK_TOKEN}
)
"""Discord's codes for a message, channel or interaction that can't be written any more."""


class TokenExpired(Exception):
    """The interaction token no longer works (Discord: 404 Unknown Webhook, or 401
    Invalid Webhook Token)."""


class Outlet(Protocol):
    @property
    def scopes(self) -> Sequence[str]:
        """Budget scopes every create or edit here spends."""
        ...

    async def create(self, message: Rendered, view: discord.ui.View | None, *, first: bool) -> int:
        """Post a message (``first``: the reply's first one here); returns its id."""
        ...

    async def edit(
        self, message_id: int, message: Rendered, view: discord.ui.View | None
    ) -> None: ...

    def target(self, message_id: int) -> dict[str, str]:
        """The ids another process needs to edit this message (the in-flight record)."""
        ...


class ChannelOutlet:
    def __init__(
        self,
        channel: discord.PartialMessageable,
        *,
        reference: discord.MessageReference | None = None,
        notify_first: bool = False,
    ) -> None:
        """``reference``: the message the first one replies to; ``notify_first``: that
        reply may notify its author (the asker), every other message is silent."""
        self.channel = channel
        self.reference = reference
        self.notify_first = notify_first
        self._first_id: int | None = None
        self._scopes = (channel_scope(channel.id), GLOBAL_SCOPE)

    @property
    def scopes(self) -> Sequence[str]:
        return self._scopes

    def _mentions(self, message_id: int | None) -> discord.AllowedMentions:
        first = message_id is None or message_id == self._first_id
        return REPLIED_USER_ONLY if first and self.notify_first else NO_MENTIONS

    async def create(self, message: Rendered, view: discord.ui.View | None, *, first: bool) -> int:
        kwargs = _new_message(message, view)
        if first and self.reference is not None:
            kwargs["reference"] = self.reference
            kwargs["mention_author"] = self.notify_first
        notify = first and self.notify_first
        try:
            sent = await self.channel.send(
                allowed_mentions=REPLIED_USER_ONLY if notify else NO_MENTIONS,
                silent=not notify,
                **kwargs,
            )
        except discord.HTTPException as exc:
            raise translate(exc, self._scopes[0]) from exc
        if first:
            self._first_id = sent.id
        return sent.id

    async def edit(self, message_id: int, message: Rendered, view: discord.ui.View | None) -> None:
        try:
            await self.channel.get_partial_message(message_id).edit(
                content=message.content,
                embed=message.embed,
                view=view,
                allowed_mentions=self._mentions(message_id),
            )
        except discord.HTTPException as exc:
            raise translate(exc, self._scopes[0]) from exc

    def continue_from(self, message_id: int) -> None:
        """Make the next first message reply to ``message_id``, without notifying anyone:
        an ``/ask`` reply that moves here points back to where it started."""
        self.reference = discord.MessageReference(
            message_id=message_id,
            channel_id=self.channel.id,
            guild_id=self.channel.guild_id,
            fail_if_not_exists=False,
        )
        self.notify_first = False

    def jump_url(self, message_id: int) -> str:
        return self.channel.get_partial_message(message_id).jump_url

    def target(self, message_id: int) -> dict[str, str]:
        target = {"kind": "channel", "channel": str(self.channel.id), "message": str(message_id)}
        if self.channel.guild_id is not None:  # for links to the message (a moved note)
            target["guild"] = str(self.channel.guild_id)
        return target


class InteractionOutlet:
    def __init__(
        self,
        webhook: discord.Webhook,
        *,
        channel_id: int | None,
        original_id: int | None = None,
        edit_original: EditOriginal | None = None,
    ) -> None:
        """An interaction's webhook (its application id and token). ``original_id``:
        the id of its deferred response, when known (then the reply's message 0 from
        the start, see ``bots.discord.sink``); ``edit_original``: how to edit that
        response while its id is not known. Build one with ``of`` or ``resumed``."""
        if original_id is None and edit_original is None:
            raise ValueError("the deferred response needs an id or a way to edit it")
        self._webhook = webhook
        self._channel_id = channel_id
        self.original_id = original_id
        self._edit_original_response = edit_original
        self._scopes = (interaction_scope(webhook.token or ""),)

    @classmethod
    def of(
        cls, interaction: discord.Interaction[Any], *, original_id: int | None = None
    ) -> InteractionOutlet:
        """The outlet of an ``/ask`` this process deferred (within Discord's 3 seconds)."""
        return cls(
            interaction.followup,
            channel_id=interaction.channel_id,
            original_id=original_id,
            edit_original=interaction.edit_original_response,
        )

    @classmethod
    def resumed(
        cls,
        client: discord.Client,
        *,
        app_id: int,
        token: str,
        channel_id: int,
        original_id: int,
    ) -> InteractionOutlet:
        """The outlet of an ``/ask`` another process deferred (a hand-over): its
        webhook from the application id and token, its response by id."""
        webhook = discord.Webhook.partial(app_id, token, client=client)
        return cls(webhook, channel_id=channel_id, original_id=original_id)

    @property
    def scopes(self) -> Sequence[str]:
        return self._scopes

    async def create(self, message: Rendered, view: discord.ui.View | None, *, first: bool) -> int:
        if first:
            # The deferred "thinking…" response is the first message.
            original = await self._call(self._edit_original(message, view))
            self.original_id = original.id
            return original.id
        sent = await self._call(
            self._webhook.send(
                allowed_mentions=NO_MENTIONS, silent=True, wait=True, **_new_message(message, view)
            )
        )
        return sent.id

    async def edit(self, message_id: int, message: Rendered, view: discord.ui.View | None) -> None:
        if message_id == self.original_id:
            await self._call(self._edit_original(message, view))
            return
        await self._call(self._edit_by_id(message_id, message, view))

    def _edit_original(
        self, message: Rendered, view: discord.ui.View | None
    ) -> Awaitable[discord.Message]:
        if self._edit_original_response is None:
            assert self.original_id is not None  # see __init__
            return self._edit_by_id(self.original_id, message, view)
        return self._edit_original_response(
            content=message.content,
            embed=message.embed,
            view=view,
            allowed_mentions=NO_MENTIONS,
        )

    def _edit_by_id(
        self, message_id: int, message: Rendered, view: discord.ui.View | None
    ) -> Awaitable[discord.WebhookMessage]:
        return self._webhook.edit_message(
            message_id,
            content=message.content,
            embed=message.embed,
            view=view,
            allowed_mentions=NO_MENTIONS,
        )

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except discord.HTTPException as exc:
            if exc.code in (UNKNOWN_WEBHOOK, INVALID_WEBHOOK_TOKEN):
                raise TokenExpired(str(exc)) from exc
            raise translate(exc, self._scopes[0]) from exc

    def target(self, message_id: int) -> dict[str, str]:
        webhook = self._webhook
        return {
            "kind": "interaction",
            "app": str(webhook.id),
            "token": webhook.token or "",
            "channel": str(self._channel_id or ""),
            "message": str(message_id),
        }


def _new_message(message: Rendered, view: discord.ui.View | None) -> dict[str, Any]:
    """Keyword arguments of a send: discord.py's send methods take no ``None`` parts."""
    parts: dict[str, Any] = {}
    if message.content is not None:
        parts["content"] = message.content
    if message.embed is not None:
        parts["embed"] = message.embed
    if view is not None:
        parts["view"] = view
    return parts


def translate(exc: discord.HTTPException, scope: str) -> Exception:
    """Discord's error as the engine's: retry later, stop writing, or a plain failure."""
    if exc.status == 429:
        headers = exc.response.headers if exc.response is not None else {}
        return RateLimited(header_seconds(headers.get("Retry-After"), default=1.0), scope)
    if exc.code in GONE_CODES:
        return MessageGone(f"{exc.status} {exc.code}: {exc.text}")
    if isinstance(exc, discord.Forbidden):
        # Permissions changed under a streaming reply: stop rather than collect 403s,
        # which count towards Discord's invalid-request ban.
        return MessageGone(f"forbidden ({exc.code}): {exc.text}")
    return exc


async def call(call: Awaitable[T], budget: Budget, scope: str) -> T:
    """A call whose budget was spent by the caller (not the engine's: a finaliser,
    a notice): Discord's answer as the engine's exceptions, a 429 blocking
    ``scope`` for every replica."""
    try:
        return await call
    except discord.HTTPException as exc:
        error = translate(exc, scope)
        if isinstance(error, RateLimited):
            await budget.block(scope, error.retry_after)
        raise error from exc


# -- permissions ---------------------------------------------------------------


def missing_permissions(
    permissions: discord.Permissions,
    *,
    thread: bool,
    mode: RenderMode,
    reply: bool = False,
    create_thread: bool = False,
) -> list[str]:
    """The permission names a reply lacks: to see and send (in threads: send in
    threads), to reply to a message (read history), embeds, a new thread."""
    needed = ["view_channel", "send_messages_in_threads" if thread else "send_messages"]
    if reply:
        needed.append("read_message_history")
    if mode == "embeds":
        needed.append("embed_links")
    if create_thread:
        needed += ["create_public_threads", "send_messages_in_threads"]
    return [name for name in needed if not getattr(permissions, name)]


# -- the client ----------------------------------------------------------------


def wants_message_content(settings: DiscordSettings, rules: RulesSource) -> bool:
    """Decided at start: intents are fixed for a gateway session, so an auto-reply
    channel added to the rules later needs a restart to be read in full."""
    if settings.discord_message_content == "auto":
        every_channel_auto = rules.policy(PLATFORM, "").mode == "auto"  # [defaults]
        return every_channel_auto or bool(rules.auto_channels(PLATFORM))
    return settings.discord_message_content == "on"


def intents_for(settings: DiscordSettings, *, message_content: bool) -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = settings.discord_dms
    intents.message_content = message_content
    return intents


def granted_message_content(flags: discord.ApplicationFlags) -> bool:
    """Whether the Developer Portal has MESSAGE_CONTENT enabled for the application."""
    return flags.gateway_message_content or flags.gateway_message_content_limited


def make_client(
    settings: DiscordSettings,
    intents: discord.Intents,
    *,
    http_trace: aiohttp.TraceConfig | None = None,
    guild_ready_timeout: float = 2.0,
) -> discord.AutoShardedClient:
    """A client that mentions nobody unless a call says otherwise (every call of
    chatrelay also passes its own ``allowed_mentions``)."""
    options: dict[str, Any] = {}
    if settings.discord_shard_ids:
        options["shard_ids"] = settings.discord_shard_ids
    if http_trace is not None:
        options["http_trace"] = http_trace
    return discord.AutoShardedClient(
        intents=intents,
        shard_count=settings.discord_shard_count,
        allowed_mentions=discord.AllowedMentions.none(),
        guild_ready_timeout=guild_ready_timeout,
        chunk_guilds_at_startup=False,
        # No message cache: chatrelay never reads it (a reply's text is the engine's,
        # a message's parent comes in its payload or is fetched), and at its default
        # it holds the last 1,000 messages the gateway sent, the bot's own included.
        max_messages=None,
        **options,
    )


@contextlib.contextmanager
def pointed_at(api_url: str, gateway_url: str) -> Iterator[None]:
    """discord.py's REST base and gateway for the duration of the block."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


PORTAL_HINT = "Developer Portal → your application → Bot → Privileged Gateway Intents"


async def logged_in(
    settings: DiscordSettings,
    rules: RulesSource,
    *,
    http_trace: aiohttp.TraceConfig | None = None,
    guild_ready_timeout: float = 2.0,
) -> discord.AutoShardedClient:
    """A logged-in client whose intents Discord will accept: refused intents are
    said in one line, a missing MESSAGE_CONTENT under ``auto`` loudly, and the
    bot runs without it (mentions, replies that ping it and DMs still work)."""
    assert settings.discord_bot_token is not None
    token = settings.discord_bot_token.get_secret_value()
    wanted = wants_message_content(settings, rules)
    while True:
        client = make_client(
            settings,
            intents_for(settings, message_content=wanted),
            http_trace=http_trace,
            guild_ready_timeout=guild_ready_timeout,
        )
        try:
            await client.login(token)
        except discord.LoginFailure:
            await client.close()
            raise ConfigError("invalid setting DISCORD_BOT_TOKEN: Discord refused it") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            await client.close()
            raise Unavailable(
                f"cannot reach Discord at {settings.discord_api_url}: {exc or type(exc).__name__}"
            ) from None
        if not wanted or granted_message_content(client.application_flags):
            break
        await client.close()
        if settings.discord_message_content == "on":
            raise ConfigError(
                "invalid setting DISCORD_MESSAGE_CONTENT: on, but the application does not "
                f"have the MESSAGE_CONTENT intent ({PORTAL_HINT})"
            )
        log.warning(
            "Discord: the auto-reply channels need the MESSAGE_CONTENT intent, which this "
            "application does not have (%s); without it they only see messages that "
            "mention the bot",
            PORTAL_HINT,
        )
        wanted = False
    if not wanted:
        log.info(
            "Discord: running without MESSAGE_CONTENT: the bot reads mentions, replies "
            "that ping it and DMs"
        )
    return client
