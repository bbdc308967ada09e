"""A fake Discord (REST API + gateway WebSocket) on 127.0.0.1, for the real discord.py.

Discord can't be reached from the test machines, and a mocked ``discord.py`` would
prove nothing about what matters most to chatrelay: message size limits, the per-channel
send/edit limit shared by every reply streaming in a channel, 429s and discord.py's own
retry, interaction deadlines and token lifetimes, and mentions re-parsed on every edit.
So the real ``discord.Client`` talks HTTP and WebSocket to this server, which behaves
like Discord where chatrelay can notice the difference and records everything.

Usage::

    async with FakeDiscord() as fake, point_discord_py_at(fake):
        client = discord.Client(intents=intents, guild_ready_timeout=0.05)
        await client.login(fake.bot_token)
        task = asyncio.create_task(client.connect(reconnect=False))
        await client.wait_until_ready()
        await fake.inject_message(CHANNEL_ID, "hello", ALICE, mentions_bot=True)
        ...
        await client.close()
        await task

What it does like Discord:

* REST under ``/api/v{9,10}``: bot-token auth (``401`` otherwise; webhook-token and
  interaction-callback routes need none), ``Content-Type: application/json`` exactly,
  realistic message objects, Discord's error codes (``50035`` invalid form body with the
  same ``errors`` tree, ``10003`` unknown channel, ``10008`` unknown message, ``10015``
  unknown webhook, ``10062`` unknown interaction, ``40060`` already acknowledged,
  ``50006`` empty message, ``50005`` someone else's message, ``50013`` missing
  permissions).
* Rate limits (:class:`RateLimits`, editable at any time): per-route buckets with all
  ``X-RateLimit-*`` headers; one fixed window per channel shared by message sends AND
  edits (sends and edits report different bucket hashes, as on Discord, so discord.py
  cannot pace the mix and gets 429s); one window per interaction token for webhook
  calls; a global per-token limit per second (interaction routes exempt). A 429 has the
  JSON body, ``Retry-After``, ``X-RateLimit-Scope``, ``X-RateLimit-Global`` when global,
  and ``Via: 1.1 google`` (without it discord.py assumes a Cloudflare ban — which
  :attr:`FakeDiscord.cloudflare_banned` simulates).
* Gateway: HELLO, IDENTIFY (token, intents, shard, privileged intents checked), READY
  (with ``session_id`` and ``resume_gateway_url``), GUILD_CREATE per guild of the
  shard, heartbeat ACKs, REQUEST_GUILD_MEMBERS; ``compress=zlib-stream`` honoured. Bot
  REST actions are echoed as MESSAGE_CREATE / MESSAGE_UPDATE / MESSAGE_DELETE /
  THREAD_CREATE to sessions whose intents ask for them, and message content is blanked
  for sessions without MESSAGE_CONTENT unless the message is a DM, the bot's own, or
  mentions the bot.
* Sessions and RESUME (:class:`GatewaySession`): a session outlives a connection that
  dropped (no close frame, or a resumable close code) for ``resume_timeout`` seconds and
  buffers its dispatches; RESUME replays every dispatch after the client's ``seq``, then
  RESUMED. A session the client closed with 1000/1001, or that expired, gets op 9
  INVALID_SESSION (``d: false``). :meth:`FakeDiscord.kill_connections` cuts connections
  as a network failure would.
* Faults (:attr:`FakeDiscord.faults`, a ``tests.fakes.faults.FaultSchedule`` keyed by
  route, e.g. :data:`EDIT_MESSAGE`): injected 429s (Discord's body and headers), 500s,
  slow answers and dropped connections on chosen calls, or at random from a seed; every
  :class:`CallRecord` says which fault it got (``injected``), so injected 429s are told
  apart from the fake's own (:meth:`FakeDiscord.natural_429s`).
* Interactions: :meth:`FakeDiscord.inject_slash_command` and
  :meth:`FakeDiscord.inject_component`; the callback must come within
  ``callback_deadline`` seconds, the token works for ``interaction_ttl`` seconds, the
  first followup after a deferral edits the loading message (Discord's documented
  backwards-compatible behaviour).

State is plain data: :attr:`FakeDiscord.calls`, :attr:`FakeDiscord.messages`,
:attr:`FakeDiscord.channels`, :attr:`FakeDiscord.interactions`,
:attr:`FakeDiscord.rate_limited`, :meth:`FakeDiscord.rendered`.
"""

from tests.fakes.discord_server.client import point_discord_py_at
from tests.fakes.discord_server.constants import (
    BOT_PERMISSIONS,
    CALLBACK_CHANNEL_MESSAGE,
    CALLBACK_DEFERRED_CHANNEL_MESSAGE,
    CALLBACK_DEFERRED_UPDATE_MESSAGE,
    CALLBACK_MODAL,
    CALLBACK_UPDATE_MESSAGE,
    CHANNEL_DM,
    CHANNEL_GUILD_TEXT,
    CHANNEL_PRIVATE_THREAD,
    CHANNEL_PUBLIC_THREAD,
    DISCORD_EPOCH_MS,
    EVERYONE_PERMISSIONS,
    FLAG_EPHEMERAL,
    FLAG_IS_COMPONENTS_V2,
    FLAG_IS_VOICE_MESSAGE,
    FLAG_LOADING,
    FLAG_SUPPRESS_EMBEDS,
    FLAG_SUPPRESS_NOTIFICATIONS,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILD_PRESENCES,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_MESSAGE_COMPONENT,
    MAX_ACTION_ROWS,
    MAX_CONTENT,
    MAX_EMBED_AUTHOR,
    MAX_EMBED_DESCRIPTION,
    MAX_EMBED_FIELD_NAME,
    MAX_EMBED_FIELD_VALUE,
    MAX_EMBED_FIELDS,
    MAX_EMBED_FOOTER,
    MAX_EMBED_TITLE,
    MAX_EMBED_TOTAL,
    MAX_EMBEDS,
    MAX_ROW_COMPONENTS,
    PERM_ADD_REACTIONS,
    PERM_ATTACH_FILES,
    PERM_CREATE_PUBLIC_THREADS,
    PERM_EMBED_LINKS,
    PERM_MANAGE_MESSAGES,
    PERM_MANAGE_THREADS,
    PERM_MENTION_EVERYONE,
    PERM_READ_MESSAGE_HISTORY,
    PERM_SEND_MESSAGES,
    PERM_SEND_MESSAGES_IN_THREADS,
    PERM_USE_APPLICATION_COMMANDS,
    PERM_VIEW_CHANNEL,
    PRIVILEGED_INTENTS,
    Json,
)
from tests.fakes.discord_server.fake import FakeDiscord
from tests.fakes.discord_server.limits import Limit, RateLimits
from tests.fakes.discord_server.records import (
    CallRecord,
    InteractionRecord,
    MessageRecord,
    Revision,
)
from tests.fakes.discord_server.routing import (
    DELETE_MESSAGE,
    EDIT_INTERACTION_MESSAGE,
    EDIT_MESSAGE,
    FOLLOWUP,
    INTERACTION_CALLBACK,
    SEND_MESSAGE,
)
from tests.fakes.discord_server.sessions import (
    CLIENT_INVALIDATING_CLOSE_CODES,
    MAX_REPLAY,
    NON_RESUMABLE_CLOSE_CODES,
    GatewayConnection,
    GatewaySession,
)
from tests.fakes.discord_server.validation import ApiError
from tests.fakes.discord_server.world import (
    ALICE,
    APP_ID,
    BOB,
    BOT_USER_ID,
    CHANNEL_ID,
    GUILD_ID,
    OTHER_CHANNEL_ID,
    FakeChannel,
    FakeGuild,
    FakeUser,
    default_guilds,
)

__all__ = [
    "ALICE",
    "APP_ID",
    "BOB",
    "BOT_PERMISSIONS",
    "BOT_USER_ID",
    "CALLBACK_CHANNEL_MESSAGE",
    "CALLBACK_DEFERRED_CHANNEL_MESSAGE",
    "CALLBACK_DEFERRED_UPDATE_MESSAGE",
    "CALLBACK_MODAL",
    "CALLBACK_UPDATE_MESSAGE",
    "CHANNEL_DM",
    "CHANNEL_GUILD_TEXT",
    "CHANNEL_ID",
    "CHANNEL_PRIVATE_THREAD",
    "CHANNEL_PUBLIC_THREAD",
    "CLIENT_INVALIDATING_CLOSE_CODES",
    "DELETE_MESSAGE",
    "DISCORD_EPOCH_MS",
    "EDIT_INTERACTION_MESSAGE",
    "EDIT_MESSAGE",
    "EVERYONE_PERMISSIONS",
    "FLAG_EPHEMERAL",
    "FLAG_IS_COMPONENTS_V2",
    "FLAG_IS_VOICE_MESSAGE",
    "FLAG_LOADING",
    "FLAG_SUPPRESS_EMBEDS",
    "FLAG_SUPPRESS_NOTIFICATIONS",
    "FOLLOWUP",
    "GUILD_ID",
    "INTENT_DIRECT_MESSAGES",
    "INTENT_GUILDS",
    "INTENT_GUILD_MEMBERS",
    "INTENT_GUILD_MESSAGES",
    "INTENT_GUILD_PRESENCES",
    "INTENT_MESSAGE_CONTENT",
    "INTERACTION_APPLICATION_COMMAND",
    "INTERACTION_CALLBACK",
    "INTERACTION_MESSAGE_COMPONENT",
    "MAX_ACTION_ROWS",
    "MAX_CONTENT",
    "MAX_EMBEDS",
    "MAX_EMBED_AUTHOR",
    "MAX_EMBED_DESCRIPTION",
    "MAX_EMBED_FIELDS",
    "MAX_EMBED_FIELD_NAME",
    "MAX_EMBED_FIELD_VALUE",
    "MAX_EMBED_FOOTER",
    "MAX_EMBED_TITLE",
    "MAX_EMBED_TOTAL",
    "MAX_REPLAY",
    "MAX_ROW_COMPONENTS",
    "NON_RESUMABLE_CLOSE_CODES",
    "OTHER_CHANNEL_ID",
    "PERM_ADD_REACTIONS",
    "PERM_ATTACH_FILES",
    "PERM_CREATE_PUBLIC_THREADS",
    "PERM_EMBED_LINKS",
    "PERM_MANAGE_MESSAGES",
    "PERM_MANAGE_THREADS",
    "PERM_MENTION_EVERYONE",
    "PERM_READ_MESSAGE_HISTORY",
    "PERM_SEND_MESSAGES",
    "PERM_SEND_MESSAGES_IN_THREADS",
    "PERM_USE_APPLICATION_COMMANDS",
    "PERM_VIEW_CHANNEL",
    "PRIVILEGED_INTENTS",
    "SEND_MESSAGE",
    "ApiError",
    "CallRecord",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeUser",
    "GatewayConnection",
    "GatewaySession",
    "InteractionRecord",
    "Json",
    "Limit",
    "MessageRecord",
    "RateLimits",
    "Revision",
    "default_guilds",
    "point_discord_py_at",
]
