"""The Slack adapter: real slack_bolt and slack_sdk, Socket Mode or HTTP events.

Its rooms, the same in every platform's folder:

- ``settings``: ``SLACK_*`` settings; a bot token is what starts the adapter.
- ``limits``: the budget scope of each Web API call, and their default limits.
- ``service``: ``SlackPlatform``: connect, intake on and off, shutdown, the
  orphan sweeper and the hand-over pickup.
- ``events``: which events deserve a reply (filters, agents, ``IntakePolicy``),
  and the DM surface's own events (prompts, greetings).
- ``conversations``: a message's thread as a conversation key, and a thread
  read back from Slack when the bot has no memory of it.
- ``replies``: starting a reply: its thread, native streaming or not, the sink,
  Slack's pacing.
- ``handover``: a message handed over by a draining process, both ways.
- ``sink``: rendering a reply as thread messages that grow (streams or edits).
- ``api``: the one client every call goes through, and Slack's errors as the
  engine's.
- ``format``: blocks, buttons, notes and text that pings nobody.
- ``controls``: the Stop and feedback buttons.
- ``finalise``: ending replies another process left.
- ``preflight``: Slack's part of ``chatrelay check``.
"""
