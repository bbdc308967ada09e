"""Web API: Slack's native streaming, ``chat.startStream``/``appendStream``/
``stopStream``: recipients outside DMs, the streamed-bytes cap, streams a user
stopped or that expired."""

from __future__ import annotations

from tests.fakes.slack_server.blocks import validate_blocks
from tests.fakes.slack_server.limits import MAX_MARKDOWN_TEXT
from tests.fakes.slack_server.params import JSON, SlackError, json_param, need, opt_str
from tests.fakes.slack_server.records import Message, is_dm
from tests.fakes.slack_server.state import SlackState


class StreamMethods(SlackState):
    """One streamed message's lifecycle, start to stop."""

    def _chat_start_stream(self, p: JSON) -> JSON:
        channel = need(p, "channel", "channel_not_found")
        thread_ts = need(p, "thread_ts", "invalid_arguments")
        recipient_user = opt_str(p, "recipient_user_id")
        recipient_team = opt_str(p, "recipient_team_id")
        if not is_dm(channel):
            if not recipient_user:
                raise SlackError("missing_recipient_user_id")
            if not recipient_team:
                raise SlackError("missing_recipient_team_id")
        markdown, chunks = self._stream_markdown(p, required=False)
        if self.stream_byte_cap is not None and len(markdown.encode()) > self.stream_byte_cap:
            raise SlackError("msg_too_long")
        record = self._new_bot_message(channel, thread_ts)
        record.chunks.extend(chunks)
        record.source = "stream"
        record.streaming = True
        record.stream_started_at = record.created_at
        record.recipient_user_id, record.recipient_team_id = recipient_user, recipient_team
        record.markdown = markdown
        record.text = markdown
        record._revise(record.created_at, "chat.startStream")
        self._store(record)
        return {"channel": channel, "ts": record.ts}

    def _check_stream_size(self, record: Message, markdown: str) -> None:
        size = len((record.markdown + markdown).encode("utf-8"))
        if self.stream_byte_cap is not None and size > self.stream_byte_cap:
            raise SlackError("msg_too_long")

    def _chat_append_stream(self, p: JSON) -> JSON:
        channel = need(p, "channel", "channel_not_found")
        ts = need(p, "ts", "message_not_found")
        record = self._streaming(channel, ts)
        markdown, chunks = self._stream_markdown(p, required=True)
        self._check_stream_size(record, markdown)
        record.chunks.extend(chunks)
        record.markdown += markdown
        record.text = record.markdown
        record._revise(self.clock(), "chat.appendStream")
        return {"channel": channel, "ts": ts}

    def _chat_stop_stream(self, p: JSON) -> JSON:
        channel = need(p, "channel", "channel_not_found")
        ts = need(p, "ts", "message_not_found")
        record = self._streaming(channel, ts)
        markdown, chunks = self._stream_markdown(p, required=False)
        self._check_stream_size(record, markdown)
        record.chunks.extend(chunks)
        blocks = validate_blocks(p["blocks"]) if p.get("blocks") is not None else None
        metadata = json_param(p, "metadata")
        record.markdown += markdown
        record.text = record.markdown
        if blocks is not None:
            record.blocks = blocks
        if isinstance(metadata, dict):
            record.metadata = metadata
        record.streaming = False
        record.stream_end = "app"
        record._revise(self.clock(), "chat.stopStream")
        return {"channel": channel, "ts": ts, "message": record.to_slack()}

    def _stream_markdown(self, p: JSON, *, required: bool) -> tuple[str, list[JSON]]:
        """markdown_text plus the text of markdown_text chunks, and the other chunks."""
        pieces: list[str] = []
        markdown = p.get("markdown_text")
        if markdown is not None:
            pieces.append(str(markdown))
        chunks = json_param(p, "chunks")
        extra: list[JSON] = []
        if chunks is not None:
            if not isinstance(chunks, list):
                raise SlackError("invalid_arguments")
            for chunk in chunks:
                if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
                    pieces.append(str(chunk.get("text", "")))
                elif isinstance(chunk, dict):
                    extra.append(chunk)
        text = "".join(pieces)
        if any(len(piece) > MAX_MARKDOWN_TEXT for piece in pieces):
            raise SlackError("msg_too_long")
        if required and not text and not extra:
            raise SlackError("no_text")
        return text, extra

    def _streaming(self, channel: str, ts: str) -> Message:
        record = self._existing(channel, ts)
        if record.stream_end == "user":
            raise SlackError("stopped_by_user")
        if not record.streaming:
            raise SlackError("message_not_in_streaming_state")
        return record
