"""Messages as Discord applies them on every send and edit: validation, flags,
attachments, mentions re-parsed under ``allowed_mentions``, each revision kept, and
the MESSAGE_* dispatch that follows."""

from __future__ import annotations

import re

from tests.fakes.discord_server.constants import (
    EDITABLE_FLAGS,
    FLAG_LOADING,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MESSAGES,
    SENDABLE_FLAGS,
    Json,
)
from tests.fakes.discord_server.gateway import Gateway
from tests.fakes.discord_server.records import InteractionRecord, MessageRecord, Revision
from tests.fakes.discord_server.routing import Request
from tests.fakes.discord_server.validation import ApiError, normalise_embed, validate
from tests.fakes.discord_server.world import FakeChannel, FakeUser, now_iso


class Messages(Gateway):
    """Creates, edits and deletes stored messages."""

    def _live_message(self, channel_id: int, message_id: int) -> MessageRecord:
        rec = self.messages.get(channel_id, {}).get(message_id)
        if rec is None or rec.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return rec

    def _create_message(
        self,
        channel: FakeChannel,
        author: FakeUser,
        payload: Json,
        req: Request,
        *,
        type_: int = 0,
        reference: Json | None = None,
        replied_author: int | None = None,
        webhook: InteractionRecord | None = None,
        allow_flags: int = 0,
    ) -> MessageRecord:
        content = payload.get("content") or ""
        embeds = payload.get("embeds") or []
        components = payload.get("components") or []
        flags = int(payload.get("flags") or 0) & (SENDABLE_FLAGS | allow_flags)
        validate(content, embeds, components, flags)
        attachments = [
            {
                "id": str(self._next_id()),
                "filename": f["filename"],
                "size": f["size"],
                "url": f"https://cdn.example.invalid/{f['filename']}",
                "proxy_url": f"https://media.example.invalid/{f['filename']}",
                "content_type": f["content_type"],
            }
            for f in req.files
        ]
        empty = not (content or embeds or components or attachments or payload.get("sticker_ids"))
        if empty and not flags & FLAG_LOADING:  # a deferral's loading message starts empty
            raise ApiError(400, 50006, "Cannot send an empty message")
        rec = MessageRecord(
            id=self._next_id(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=author,
            content=content,
            embeds=[normalise_embed(e) for e in embeds],
            components=components,
            flags=flags,
            type=type_,
            message_reference=reference,
            attachments=attachments,
            nonce=payload.get("nonce"),
            webhook_id=self.app_id if webhook else None,
            interaction_id=webhook.id if webhook else None,
        )
        allowed = payload.get("allowed_mentions")
        self._apply_mentions(rec, allowed, replied_author)
        rec.history.append(self._revision(rec, "create", allowed, req))
        self.messages.setdefault(channel.id, {})[rec.id] = rec
        channel.last_message_id = rec.id
        channel.message_count += 1
        return rec

    def _edit_message(self, rec: MessageRecord, payload: Json, req: Request) -> None:
        content = rec.content
        if "content" in payload:
            content = payload["content"] or ""
        embeds = rec.embeds
        if "embeds" in payload:
            embeds = [normalise_embed(e) for e in payload["embeds"] or []]
        components = rec.components
        if "components" in payload:
            components = payload["components"] or []
        flags = rec.flags & ~FLAG_LOADING
        if payload.get("flags") is not None:
            flags = (flags & ~EDITABLE_FLAGS) | (int(payload["flags"]) & EDITABLE_FLAGS)
        validate(content, embeds, components, flags)
        attachments = rec.attachments
        if "attachments" in payload and payload["attachments"] is not None:
            keep = {str(a.get("id")) for a in payload["attachments"]}
            attachments = [a for a in rec.attachments if a["id"] in keep]
        if not (content or embeds or components or attachments):
            raise ApiError(400, 50006, "Cannot send an empty message")
        rec.content, rec.embeds, rec.components = content, embeds, components
        rec.flags, rec.attachments = flags, attachments
        rec.edited_timestamp = now_iso()
        allowed = payload.get("allowed_mentions")
        replied = None
        if rec.message_reference:
            ref = self.messages.get(int(rec.message_reference["channel_id"]), {}).get(
                int(rec.message_reference["message_id"])
            )
            replied = ref.author.id if ref else None
        self._apply_mentions(rec, allowed, replied)
        rec.history.append(self._revision(rec, "edit", allowed, req))

    async def _delete(self, rec: MessageRecord) -> None:
        rec.deleted = True
        data: Json = {"id": str(rec.id), "channel_id": str(rec.channel_id)}
        if rec.guild_id:
            data["guild_id"] = str(rec.guild_id)
        intent = INTENT_GUILD_MESSAGES if rec.guild_id else INTENT_DIRECT_MESSAGES
        await self.dispatch("MESSAGE_DELETE", data, guild_id=rec.guild_id, intent=intent)

    def _revision(
        self, rec: MessageRecord, kind: str, allowed: Json | None, req: Request
    ) -> Revision:
        return Revision(
            time=req.now,
            kind=kind,
            content=rec.content,
            embeds=list(rec.embeds),
            components=list(rec.components),
            flags=rec.flags,
            allowed_mentions=allowed,
            mentions=list(rec.mentions),
            mention_everyone=rec.mention_everyone,
            path=req.path,
        )

    def _apply_mentions(
        self, rec: MessageRecord, allowed: Json | None, replied_author: int | None
    ) -> None:
        """What Discord does on every send AND edit: parse mentions out of the content,
        keeping only what ``allowed_mentions`` permits (all of it when omitted)."""
        parse = (
            {"users", "roles", "everyone"} if allowed is None else set(allowed.get("parse") or [])
        )
        users_ok = {int(u) for u in (allowed or {}).get("users") or []}
        roles_ok = {int(r) for r in (allowed or {}).get("roles") or []}
        mentioned: list[int] = []
        for raw in re.findall(r"<@!?(\d+)>", rec.content):
            uid = int(raw)
            if ("users" in parse or uid in users_ok) and uid not in mentioned:
                mentioned.append(uid)
        pings_reply = allowed is None or bool(allowed.get("replied_user"))
        if replied_author is not None and replied_author not in mentioned and pings_reply:
            mentioned.append(replied_author)
        rec.mentions = mentioned
        rec.mention_roles = [
            int(r)
            for r in dict.fromkeys(re.findall(r"<@&(\d+)>", rec.content))
            if "roles" in parse or int(r) in roles_ok
        ]
        rec.mention_everyone = "everyone" in parse and bool(
            re.search(r"@(everyone|here)\b", rec.content)
        )

    async def _dispatch_message(self, event: str, rec: MessageRecord) -> int:
        data = self._gateway_message(rec)
        intent = INTENT_GUILD_MESSAGES if rec.guild_id else INTENT_DIRECT_MESSAGES
        return await self.dispatch(
            event,
            data,
            guild_id=rec.guild_id,
            intent=intent,
            transform=lambda session, d: self._visible_to(session, rec, d),
        )
