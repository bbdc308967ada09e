"""REST: channels and their messages: read, history, send (replies included), edit,
delete, typing, threads and the bot's reactions."""

from __future__ import annotations

from typing import Any

from tests.fakes.discord_server.constants import (
    CHANNEL_PRIVATE_THREAD,
    CHANNEL_PUBLIC_THREAD,
    INTENT_GUILDS,
    PERM_MANAGE_MESSAGES,
    SENDABLE_FLAGS,
    Json,
)
from tests.fakes.discord_server.messages import Messages
from tests.fakes.discord_server.records import MessageRecord
from tests.fakes.discord_server.routing import Request
from tests.fakes.discord_server.validation import ApiError, field_error, invalid_form
from tests.fakes.discord_server.world import FakeChannel, now_iso


class ChannelRoutes(Messages):
    """The channel and message routes the bot uses."""

    def _channel(self, req: Request) -> FakeChannel:
        channel = self.channels.get(req.id("channel_id"))
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    async def _get_channel(self, req: Request) -> tuple[int, Any]:
        return 200, self._channel_payload(self._channel(req))

    async def _get_history(self, req: Request) -> tuple[int, Any]:
        channel = self._channel(req)
        limit = max(1, min(100, int(req.query.get("limit", 50))))
        before = int(req.query.get("before", 0)) or None
        after = int(req.query.get("after", 0)) or None
        found = [
            m
            for m in self.channel_messages(channel.id)
            if (before is None or m.id < before) and (after is None or m.id > after)
        ]
        found = found[:limit] if after else found[-limit:]
        return 200, [self._message_payload(m) for m in reversed(found)]

    async def _post_message(self, req: Request) -> tuple[int, Any]:
        channel = self._channel(req)
        if not channel.bot_can_send:
            raise ApiError(403, 50013, "Missing Permissions")
        payload = req.body if isinstance(req.body, dict) else {}
        bad_flags = int(payload.get("flags") or 0) & ~SENDABLE_FLAGS
        if bad_flags:
            raise invalid_form({"flags": field_error("MESSAGE_FLAGS_INVALID", "Invalid flags")})
        reference = payload.get("message_reference")
        replied: MessageRecord | None = None
        if reference:
            ref_channel = int(reference.get("channel_id") or channel.id)
            replied = self.messages.get(ref_channel, {}).get(int(reference["message_id"]))
            if replied is None or replied.deleted:
                if reference.get("fail_if_not_exists", True):
                    raise invalid_form(
                        {
                            "message_reference": field_error(
                                "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                            )
                        }
                    )
                reference, replied = None, None
            else:
                reference = {
                    "type": 0,
                    "message_id": str(replied.id),
                    "channel_id": str(replied.channel_id),
                    **({"guild_id": str(replied.guild_id)} if replied.guild_id else {}),
                }
        rec = self._create_message(
            channel,
            self.bot,
            payload,
            req,
            type_=19 if reference else 0,
            reference=reference,
            replied_author=replied.author.id if replied else None,
        )
        await self._dispatch_message("MESSAGE_CREATE", rec)
        return 200, self._message_payload(rec)

    async def _get_message(self, req: Request) -> tuple[int, Any]:
        channel = self._channel(req)
        return 200, self._message_payload(self._live_message(channel.id, req.id("message_id")))

    async def _patch_message(self, req: Request) -> tuple[int, Any]:
        channel = self._channel(req)
        rec = self._live_message(channel.id, req.id("message_id"))
        if rec.author.id != self.bot.id or rec.webhook_id is not None:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        self._edit_message(rec, req.body if isinstance(req.body, dict) else {}, req)
        await self._dispatch_message("MESSAGE_UPDATE", rec)
        return 200, self._message_payload(rec)

    async def _delete_message(self, req: Request) -> tuple[int, Any]:
        channel = self._channel(req)
        rec = self._live_message(channel.id, req.id("message_id"))
        if rec.author.id != self.bot.id and not self._bot_perms(channel) & PERM_MANAGE_MESSAGES:
            raise ApiError(403, 50013, "Missing Permissions")
        await self._delete(rec)
        return 204, None

    async def _typing(self, req: Request) -> tuple[int, Any]:
        self._channel(req)
        return 204, None

    async def _thread_from_message(self, req: Request) -> tuple[int, Any]:
        channel = self._channel(req)
        rec = self._live_message(channel.id, req.id("message_id"))
        if channel.is_thread or channel.guild_id is None:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        if rec.thread_id is not None:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        body = req.body if isinstance(req.body, dict) else {}
        thread = await self._create_thread(
            channel, body, thread_id=rec.id, type_=CHANNEL_PUBLIC_THREAD
        )
        rec.thread_id = thread.id
        return 201, self._channel_payload(thread)

    async def _thread_without_message(self, req: Request) -> tuple[int, Any]:
        channel = self._channel(req)
        if channel.is_thread or channel.guild_id is None:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        body = req.body if isinstance(req.body, dict) else {}
        type_ = int(body.get("type") or CHANNEL_PRIVATE_THREAD)
        thread = await self._create_thread(channel, body, thread_id=self._next_id(), type_=type_)
        return 201, self._channel_payload(thread)

    async def _create_thread(
        self, parent: FakeChannel, body: Json, *, thread_id: int, type_: int
    ) -> FakeChannel:
        name = str(body.get("name") or "")
        if not 1 <= len(name) <= 100:
            raise invalid_form(
                {
                    "name": field_error(
                        "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                    )
                }
            )
        thread = FakeChannel(
            id=thread_id,
            name=name,
            type=type_,
            guild_id=parent.guild_id,
            parent_id=parent.id,
            owner_id=self.bot.id,
            bot_can_send=parent.bot_can_send,
        )
        self.channels[thread.id] = thread
        self.messages.setdefault(thread.id, {})
        guild = self.guilds.get(parent.guild_id or 0)
        if guild is not None:
            guild.channels.append(thread)
        data = {**self._channel_payload(thread), "newly_created": True}
        data["member"] = {
            "id": str(thread.id),
            "user_id": str(self.bot.id),
            "join_timestamp": now_iso(),
            "flags": 0,
        }
        await self.dispatch("THREAD_CREATE", data, guild_id=parent.guild_id, intent=INTENT_GUILDS)
        return thread

    async def _add_reaction(self, req: Request) -> tuple[int, Any]:
        channel = self._channel(req)
        rec = self._live_message(channel.id, req.id("message_id"))
        rec.reactions.setdefault(req.params["emoji"], set()).add(self.bot.id)
        return 204, None

    async def _remove_reaction(self, req: Request) -> tuple[int, Any]:
        channel = self._channel(req)
        rec = self._live_message(channel.id, req.id("message_id"))
        rec.reactions.get(req.params["emoji"], set()).discard(self.bot.id)
        return 204, None
