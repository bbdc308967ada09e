"""REST: answering interactions: the callback (within ``callback_deadline``, once),
then followups and edits of the interaction's messages through its webhook (for
``interaction_ttl``), the first followup after a deferral editing the loading message."""

from __future__ import annotations

from typing import Any

from tests.fakes.discord_server.constants import (
    CALLBACK_CHANNEL_MESSAGE,
    CALLBACK_DEFERRED_CHANNEL_MESSAGE,
    CALLBACK_DEFERRED_UPDATE_MESSAGE,
    CALLBACK_MODAL,
    CALLBACK_UPDATE_MESSAGE,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    INTERACTION_MESSAGE_COMPONENT,
    SENDABLE_FLAGS,
    Json,
)
from tests.fakes.discord_server.messages import Messages
from tests.fakes.discord_server.records import InteractionRecord, MessageRecord
from tests.fakes.discord_server.routing import Request
from tests.fakes.discord_server.validation import ApiError, field_error, invalid_form


class InteractionRoutes(Messages):
    """The interaction callback and webhook routes."""

    async def _interaction_callback(self, req: Request) -> tuple[int, Any]:
        rec = self.interactions.get(req.params["interaction_token"])
        if rec is None or str(rec.id) != req.params["interaction_id"]:
            raise ApiError(404, 10062, "Unknown interaction")
        if rec.expired or req.now - rec.created_at > self.callback_deadline:
            raise ApiError(404, 10062, "Unknown interaction")
        if rec.acknowledged:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = req.body if isinstance(req.body, dict) else {}
        kind = body.get("type")
        data: Json = body.get("data") or {}
        channel = self.channels[rec.channel_id]
        component = rec.type == INTERACTION_MESSAGE_COMPONENT
        message: MessageRecord | None = None
        if kind in (CALLBACK_CHANNEL_MESSAGE, CALLBACK_DEFERRED_CHANNEL_MESSAGE):
            flags = int(data.get("flags") or 0)
            if flags & ~(SENDABLE_FLAGS | FLAG_EPHEMERAL):
                raise invalid_form(
                    {"data": {"flags": field_error("MESSAGE_FLAGS_INVALID", "Invalid flags")}}
                )
            if kind == CALLBACK_DEFERRED_CHANNEL_MESSAGE:
                data = {"flags": (flags & FLAG_EPHEMERAL) | FLAG_LOADING}
            message = self._create_message(
                channel,
                self.bot,
                data,
                req,
                type_=0 if component else 20,
                webhook=rec,
                allow_flags=FLAG_EPHEMERAL | FLAG_LOADING,
            )
            rec.original = message
        elif kind in (CALLBACK_DEFERRED_UPDATE_MESSAGE, CALLBACK_UPDATE_MESSAGE) and component:
            message = self._live_message(rec.channel_id, rec.message_id or 0)
            if kind == CALLBACK_UPDATE_MESSAGE:
                self._edit_message(message, data, req)
            rec.original = message
        elif kind == CALLBACK_MODAL:
            if not data.get("custom_id") or not data.get("components"):
                raise invalid_form(
                    {"data": field_error("BASE_TYPE_REQUIRED", "This field is required")}
                )
        else:
            raise invalid_form(
                {"type": field_error("BASE_TYPE_CHOICES", "Value must be one of {4, 5, 6, 7, 9}.")}
            )
        rec.callback_type, rec.callback_data, rec.responded_at = kind, body.get("data"), req.now
        if message is not None and not message.flags & FLAG_EPHEMERAL:
            event = "MESSAGE_UPDATE" if kind == CALLBACK_UPDATE_MESSAGE else "MESSAGE_CREATE"
            if kind != CALLBACK_DEFERRED_UPDATE_MESSAGE:
                await self._dispatch_message(event, message)
        if req.query.get("with_response", "").lower() not in ("1", "true"):
            return 204, None
        answer: Json = {
            "interaction": {
                "id": str(rec.id),
                "type": rec.type,
                **(
                    {
                        "response_message_id": str(message.id),
                        "response_message_loading": bool(message.flags & FLAG_LOADING),
                        "response_message_ephemeral": bool(message.flags & FLAG_EPHEMERAL),
                    }
                    if message is not None
                    else {}
                ),
            },
            "resource": {"type": kind},
        }
        if message is not None and kind != CALLBACK_DEFERRED_UPDATE_MESSAGE:
            answer["resource"]["message"] = self._message_payload(message)
        return 200, answer

    def _webhook_interaction(self, req: Request) -> InteractionRecord:
        rec = self.interactions.get(req.params["webhook_token"])
        if (
            rec is None
            or req.params["webhook_id"] != str(self.app_id)
            or rec.expired
            or req.now - rec.created_at > self.interaction_ttl
        ):
            raise ApiError(404, 10015, "Unknown Webhook")
        return rec

    def _webhook_message(self, rec: InteractionRecord, req: Request) -> MessageRecord:
        wanted = req.params["message_id"]
        if wanted == "@original":
            if rec.original is None or rec.original.deleted:
                raise ApiError(404, 10008, "Unknown Message")
            return rec.original
        for message in [rec.original, *rec.followups]:
            if message is not None and str(message.id) == wanted and not message.deleted:
                return message
        raise ApiError(404, 10008, "Unknown Message")

    async def _webhook_execute(self, req: Request) -> tuple[int, Any]:
        rec = self._webhook_interaction(req)
        if not rec.acknowledged:
            raise ApiError(404, 10015, "Unknown Webhook")
        body = req.body if isinstance(req.body, dict) else {}
        original = rec.original
        if (
            rec.callback_type == CALLBACK_DEFERRED_CHANNEL_MESSAGE
            and original is not None
            and original.flags & FLAG_LOADING
            and not original.deleted
        ):
            # Discord: right after a deferral, a followup edits the loading message.
            body = {k: v for k, v in body.items() if k != "flags"}
            self._edit_message(original, body, req)
            message = original
            event = "MESSAGE_UPDATE"
        else:
            channel = self.channels[rec.channel_id]
            message = self._create_message(
                channel, self.bot, body, req, webhook=rec, allow_flags=FLAG_EPHEMERAL
            )
            rec.followups.append(message)
            event = "MESSAGE_CREATE"
        if not message.flags & FLAG_EPHEMERAL:
            await self._dispatch_message(event, message)
        if req.query.get("wait", "").lower() in ("1", "true"):
            return 200, self._message_payload(message)
        return 204, None

    async def _webhook_get(self, req: Request) -> tuple[int, Any]:
        rec = self._webhook_interaction(req)
        return 200, self._message_payload(self._webhook_message(rec, req))

    async def _webhook_edit(self, req: Request) -> tuple[int, Any]:
        rec = self._webhook_interaction(req)
        message = self._webhook_message(rec, req)
        self._edit_message(message, req.body if isinstance(req.body, dict) else {}, req)
        if not message.flags & FLAG_EPHEMERAL:
            await self._dispatch_message("MESSAGE_UPDATE", message)
        return 200, self._message_payload(message)

    async def _webhook_delete(self, req: Request) -> tuple[int, Any]:
        rec = self._webhook_interaction(req)
        await self._delete(self._webhook_message(rec, req))
        return 204, None
