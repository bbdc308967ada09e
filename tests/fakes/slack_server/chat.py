"""Web API: ``chat.postMessage``, ``chat.update``, ``chat.delete``,
``chat.postEphemeral`` and ``reactions.add``/``remove``, with Slack's text and
block limits."""

from __future__ import annotations

from tests.fakes.slack_server.blocks import validate_blocks
from tests.fakes.slack_server.limits import MAX_MARKDOWN_TEXT
from tests.fakes.slack_server.params import JSON, SlackError, json_param, need, opt_str
from tests.fakes.slack_server.state import SlackState


class ChatMethods(SlackState):
    """Posting, editing and deleting messages; reactions."""

    def _chat_post_message(self, p: JSON) -> JSON:
        channel = need(p, "channel", "channel_not_found")
        text, blocks, markdown = self._content(p, required=True)
        thread_ts = opt_str(p, "thread_ts")
        metadata = json_param(p, "metadata")
        record = self._new_bot_message(channel, thread_ts)
        record.text, record.blocks = text, blocks
        if markdown is not None:
            record.markdown, record.source, record.text = markdown, "markdown", markdown
        record.metadata = metadata if isinstance(metadata, dict) else None
        record._revise(record.created_at, "chat.postMessage")
        self._store(record)
        return {"channel": channel, "ts": record.ts, "message": record.to_slack()}

    def _chat_update(self, p: JSON) -> JSON:
        channel = need(p, "channel", "channel_not_found")
        ts = need(p, "ts", "message_not_found")
        record = self._existing(channel, ts)
        if record.bot_id != self.bot_id:
            raise SlackError("cant_update_message")
        if record.streaming:
            raise SlackError("streaming_state_conflict")
        text, blocks, markdown = self._content(p, required=True)
        if markdown is not None:
            record.markdown, record.source, record.text = markdown, "markdown", markdown
            record.blocks = None
        else:
            record.source = "text"
            if text or blocks is None:
                record.text = text
            if blocks is not None:
                record.blocks = blocks
        metadata = json_param(p, "metadata")
        if isinstance(metadata, dict):
            record.metadata = metadata
        record.edited_ts = self.next_ts()
        record._revise(self.clock(), "chat.update")
        return {
            "channel": channel,
            "ts": ts,
            "text": record._visible_text(),
            "message": record.to_slack(),
        }

    def _chat_delete(self, p: JSON) -> JSON:
        channel = need(p, "channel", "channel_not_found")
        ts = need(p, "ts", "message_not_found")
        record = self._existing(channel, ts)
        if record.bot_id != self.bot_id:
            raise SlackError("cant_delete_message")
        record.deleted = True
        record.streaming = False
        record._revise(self.clock(), "chat.delete")
        return {"channel": channel, "ts": ts}

    def _chat_post_ephemeral(self, p: JSON) -> JSON:
        channel = need(p, "channel", "channel_not_found")
        user = need(p, "user", "user_not_found")
        text, blocks, _ = self._content(p, required=True)
        ts = self.next_ts()
        self.ephemerals.append(
            {
                "channel": channel,
                "user": user,
                "text": text,
                "blocks": blocks,
                "thread_ts": opt_str(p, "thread_ts"),
                "message_ts": ts,
                "time": self.clock(),
            }
        )
        return {"message_ts": ts}

    def _reactions_add(self, p: JSON) -> JSON:
        channel = need(p, "channel", "channel_not_found")
        ts = need(p, "timestamp", "message_not_found")
        name = need(p, "name", "invalid_name")
        if (channel, ts, name) in self.reactions:
            raise SlackError("already_reacted")
        self.reactions.append((channel, ts, name))
        record = self.messages.get(channel, {}).get(ts)
        if record is not None:
            record.reactions.append(name)
        return {}

    def _reactions_remove(self, p: JSON) -> JSON:
        channel = need(p, "channel", "channel_not_found")
        ts = need(p, "timestamp", "message_not_found")
        name = need(p, "name", "invalid_name")
        if (channel, ts, name) not in self.reactions:
            raise SlackError("no_reaction")
        self.reactions.remove((channel, ts, name))
        record = self.messages.get(channel, {}).get(ts)
        if record is not None and name in record.reactions:
            record.reactions.remove(name)
        return {}

    def _content(self, p: JSON, *, required: bool) -> tuple[str, list[JSON] | None, str | None]:
        """(text, blocks, markdown_text) of a post/update, checked against Slack's limits."""
        text = p.get("text")
        text = "" if text is None else str(text)
        markdown = p.get("markdown_text")
        blocks = validate_blocks(p["blocks"]) if p.get("blocks") not in (None, "") else None
        if markdown is not None:
            markdown = str(markdown)
            if text or blocks is not None:
                raise SlackError("invalid_arguments")
            if len(markdown) > MAX_MARKDOWN_TEXT:
                raise SlackError("msg_too_long")
            return "", None, markdown
        if required and not text and blocks is None:
            raise SlackError("no_text")
        if len(text) > self.max_text:
            raise SlackError("msg_too_long")
        return text[: self.truncate_text], blocks, None
