"""Web API: ``conversations.replies`` and ``conversations.history``, paged with
cursors (and capped when ``replies_page_limit`` says so)."""

from __future__ import annotations

import base64

from tests.fakes.slack_server.params import JSON, SlackError, int_param, need, opt_str
from tests.fakes.slack_server.records import parse_ts
from tests.fakes.slack_server.state import SlackState


class ConversationMethods(SlackState):
    """Reading threads and channels back."""

    def _conversations_replies(self, p: JSON) -> JSON:
        channel = need(p, "channel", "channel_not_found")
        ts = need(p, "ts", "thread_not_found")
        anchor = self.messages.get(channel, {}).get(ts)
        if anchor is None or anchor.deleted:
            raise SlackError("thread_not_found")
        parent_ts = anchor.thread_ts or anchor.ts
        thread = self.thread(channel, parent_ts)
        shaped: list[JSON] = []
        replies = [m for m in thread if m.ts != parent_ts]
        for m in thread:
            out = m.to_slack()
            if m.ts == parent_ts and replies:
                out["thread_ts"] = parent_ts
                out["reply_count"] = len(replies)
                users = list(dict.fromkeys(r.user for r in replies if r.user))
                out["reply_users"] = users
                out["reply_users_count"] = len(users)
                out["latest_reply"] = replies[-1].ts
            shaped.append(out)
        return self._page(shaped, p)

    def _conversations_history(self, p: JSON) -> JSON:
        channel = need(p, "channel", "channel_not_found")
        top = [
            m.to_slack()
            for m in self.messages.get(channel, {}).values()
            if not m.deleted and m.thread_ts is None
        ]
        top.sort(key=lambda m: parse_ts(m["ts"]), reverse=True)
        return self._page(top, p)

    def _page(self, items: list[JSON], p: JSON) -> JSON:
        limit = int_param(p, "limit", 1000)
        if self.replies_page_limit is not None:
            limit = min(limit, self.replies_page_limit)
        limit = max(limit, 1)
        start = 0
        cursor = opt_str(p, "cursor")
        if cursor:
            try:
                start = int(base64.b64decode(cursor).decode().removeprefix("offset:"))
            except ValueError:
                raise SlackError("invalid_cursor") from None
        page = items[start : start + limit]
        more = start + limit < len(items)
        next_cursor = base64.b64encode(f"offset:{start + limit}".encode()).decode() if more else ""
        return {
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": next_cursor},
        }
