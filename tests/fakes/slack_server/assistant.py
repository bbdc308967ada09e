"""Web API: ``assistant.threads.setStatus``, ``setSuggestedPrompts`` and ``setTitle``
(an agent app's prompts with a ``thread_ts`` are lost, as Slack documents)."""

from __future__ import annotations

from tests.fakes.slack_server.limits import MAX_LOADING_MESSAGES, MAX_SUGGESTED_PROMPTS
from tests.fakes.slack_server.params import JSON, SlackError, json_param, need, opt_str
from tests.fakes.slack_server.records import Status
from tests.fakes.slack_server.state import SlackState


class AssistantMethods(SlackState):
    """The assistant thread's status, prompts and title."""

    def _set_status(self, p: JSON) -> JSON:
        channel = need(p, "channel_id", "channel_not_found")
        thread_ts = need(p, "thread_ts", "invalid_thread_ts")
        if "status" not in p:
            raise SlackError("invalid_arguments")
        loading = json_param(p, "loading_messages")
        if loading is not None and (
            not isinstance(loading, list) or len(loading) > MAX_LOADING_MESSAGES
        ):
            raise SlackError("invalid_arguments")
        entry = Status(self.clock(), str(p["status"]), loading)
        self.statuses.setdefault((channel, thread_ts), []).append(entry)
        return {}

    def _set_suggested_prompts(self, p: JSON) -> JSON:
        channel = need(p, "channel_id", "channel_not_found")
        thread_ts = opt_str(p, "thread_ts") or ""
        prompts = json_param(p, "prompts")
        if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_SUGGESTED_PROMPTS:
            raise SlackError("invalid_arguments")
        entry = {"prompts": prompts, "title": opt_str(p, "title"), "time": self.clock()}
        if thread_ts and self.experience == "agent":
            self.lost_prompts.append({**entry, "channel": channel, "thread_ts": thread_ts})
            return {}  # Slack: "will cause the call to silently fail"
        self.suggested_prompts.setdefault((channel, thread_ts), []).append(entry)
        return {}

    def _set_title(self, p: JSON) -> JSON:
        channel = need(p, "channel_id", "channel_not_found")
        thread_ts = need(p, "thread_ts", "invalid_thread_ts")
        title = need(p, "title", "invalid_arguments")
        self.titles.setdefault((channel, thread_ts), []).append(title)
        return {}
