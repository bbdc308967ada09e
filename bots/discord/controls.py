"""The Stop button and the slash commands: ``/ask prompt:``, ``/reset`` and,
with several models, ``/model``.

**Stop.** The button's ``custom_id`` holds everything a press needs (the
reply's id and who asked, ``bots.discord.format.stop_view``), so whichever
process receives the press can act on it: it publishes the Stop through
``core.state.cancel`` and the process streaming the reply stops it. No
discord.py ``View`` has to stay registered for it, in this process or any
other.

**/ask** defers at once (Discord allows 3 seconds), then streams into the
deferred response, moving to a channel message before the token dies. Its
request carries a hand-over payload from the start (its "thinking…" response
is message 0): should this process die before the first words, the next one
of the shard answers in the same response (``bots.discord.handover``). A new
``/ask`` while draining is told at once to ask again; a deferred one that
can't be answered any more gets its "thinking…" response edited to say so.

**/model** chooses the model of a channel's replies. The choice belongs to the
channel (a thread, or a DM) where it was made, so everyone talking to the bot
there gets the same model, and a thread without a choice of its own follows
its parent channel. It is kept in Redis without expiry, like any setting
(``core.state.choices``), and ignored once the model is no longer offered
(``DISCORD_MODELS`` changed). Without a choice, the channel's rule (the rules
file) or the default model applies.

The commands are synced when the bot starts: globally (Discord may take a
while to show changes everywhere), or to ``DISCORD_GUILD_IDS`` only, where
changes show at once (for development). Only the process that runs shard 0
syncs, so a fleet of processes doesn't race to overwrite the same commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bots.discord.api import NO_MENTIONS, InteractionOutlet, missing_permissions
from bots.discord.conversations import command_conversation
from bots.discord.events import DEFERENCE, policy_of
from bots.discord.format import RESTARTING_TEXT, STOP_PREFIX
from bots.discord.handover import AskTarget
from bots.discord.limits import interaction_scope
from bots.discord.settings import PLATFORM, DiscordSettings
from core.service import Incoming, IntakeOutcome

if TYPE_CHECKING:
    from bots.discord.events import Access
    from bots.discord.replies import Replies
    from core.rules import RulesSource
    from core.state.choices import ModelChoices

log = logging.getLogger(__name__)

NOT_ALLOWED_TEXT = "Sorry, I can't answer you here."
ONLY_ASKER_TEXT = "Only the person who asked, or a moderator, can stop this reply."
MAX_CHOICES = 25
"""Discord's limit on a command option's choices."""

_STOP = re.compile(rf"^{re.escape(STOP_PREFIX)}([0-9a-f]{{1,40}}):(\d{{1,20}})$")


@dataclass(frozen=True, slots=True)
class StopRequest:
    reply_id: str
    asker: int
    """Who asked: they may stop it (as may members who can manage messages)."""


def parse_stop(custom_id: str) -> StopRequest | None:
    match = _STOP.match(custom_id)
    return StopRequest(match.group(1), int(match.group(2))) if match else None


class ChannelModels:
    """Which model a channel's replies use, as chosen with ``/model``."""

    def __init__(self, choices: ModelChoices, offered: Sequence[str]) -> None:
        self._choices = choices
        self.offered = list(offered)

    async def choose(self, channel_id: int, model: str) -> None:
        if model not in self.offered:
            raise ValueError(f"{model!r} is not one of DISCORD_MODELS")
        await self._choices.choose(PLATFORM, str(channel_id), model)

    async def chosen(self, *channel_ids: int) -> str | None:
        """The first choice made among ``channel_ids`` (a thread, then its parent)."""
        return await self._choices.chosen(PLATFORM, [str(c) for c in channel_ids], self.offered)


class Controls:
    def __init__(
        self,
        *,
        settings: DiscordSettings,
        rules: RulesSource,
        access: Access,
        models: ChannelModels,
        replies: Replies,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.access = access
        self.models = models
        self.replies = replies
        self.state = replies.state

    def allowed(self, interaction: discord.Interaction[Any]) -> bool:
        dm = interaction.guild_id is None
        return self.access.allows_author(interaction.user, interaction.channel, dm=dm)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """The Stop button, from whichever process Discord delivered the press to."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: Mapping[str, Any] = interaction.data or {}
        custom_id = data.get("custom_id")
        stop = parse_stop(custom_id) if isinstance(custom_id, str) else None
        if stop is None:
            return
        user = interaction.user
        if user.id != stop.asker and not interaction.permissions.manage_messages:
            await interaction.response.send_message(ONLY_ASKER_TEXT, ephemeral=True)
            return
        # Acknowledge without changing the message: the reply's own last edit does.
        with contextlib.suppress(discord.HTTPException):  # another process was quicker
            await interaction.response.defer()
        await self.state.cancel.cancel(stop.reply_id, f"by {user.display_name}")

    async def ask(self, interaction: discord.Interaction[Any], prompt: str) -> None:
        """``/ask``: see the module docstring."""
        with self.replies.working():
            await self._ask(interaction, prompt)

    async def _ask(self, interaction: discord.Interaction[Any], prompt: str) -> None:
        replies = self.replies
        deadline = replies.clock.now() + self.settings.discord_interaction_window
        channel = interaction.channel
        dm = interaction.guild_id is None
        if not replies.accepting:
            await self._turn_away(interaction)
            return
        if not self.allowed(interaction):
            await interaction.response.send_message(NOT_ALLOWED_TEXT, ephemeral=True)
            return
        try:
            response_id = await _defer(interaction)
        except discord.HTTPException as exc:  # too late, or another process took it
            log.warning("could not defer /ask %s: %s", interaction.id, exc)
            return
        channel_id = interaction.channel_id or 0
        guild_id = interaction.guild_id
        conversation = command_conversation(interaction)
        thread = isinstance(channel, discord.Thread)
        if isinstance(channel, discord.Thread):
            await replies.conversations.recall_thread(conversation, channel, before=interaction)
        writable = dm or not missing_permissions(
            interaction.app_permissions,
            thread=thread,
            mode=self.settings.discord_render,
            reply=True,
        )
        incoming = Incoming(
            platform=PLATFORM,
            message_id=str(interaction.id),
            conversation=conversation,
            channel=str(channel_id),
            author=str(interaction.user.id),
            text=prompt,
            policy=policy_of(self.rules, channel),
            named=True,
            continuing=thread or dm,
        )
        request = await replies.request(incoming, channel_id)
        if response_id is not None:
            # Should this process die before the first words, the next one of the
            # shard answers in the same "thinking…" response.
            target = AskTarget(
                app=interaction.application_id,
                token=interaction.token,
                response=response_id,
                channel=channel_id,
                guild=guild_id,
                asked_at=interaction.created_at.timestamp(),
                writable=writable,
            )
            request = replies.handing_over(request, target)
        await replies.deliver(
            request,
            outlet=lambda: InteractionOutlet.of(interaction, original_id=response_id),
            fallback=lambda: replies.channel_outlet(channel_id, guild_id) if writable else None,
            deadline=deadline,
            refused=lambda: self._restarting(interaction),
        )

    async def _turn_away(self, interaction: discord.Interaction[Any]) -> None:
        """A new ``/ask`` while draining. Its token only works for this application
        and an answer must come within 3 seconds, so it is not handed over: a live
        process on the shard may take it (it defers at once), else the user is asked
        to try again, still inside Discord's 3 seconds."""
        await asyncio.sleep(DEFERENCE)
        try:
            await interaction.response.send_message(RESTARTING_TEXT, ephemeral=True)
        except discord.HTTPException as exc:  # 40060: a live process took it
            log.info("left /ask %s to another process: %s", interaction.id, exc)

    async def _restarting(self, interaction: discord.Interaction[Any]) -> IntakeOutcome:
        """A deferred ``/ask`` whose reply can't start here any more: its "thinking…"
        response says so rather than thinking until the token dies."""
        try:
            await self.state.budget.acquire(interaction_scope(interaction.token))
            await interaction.edit_original_response(
                content=RESTARTING_TEXT, allowed_mentions=NO_MENTIONS
            )
        except discord.HTTPException as exc:
            log.warning("could not tell /ask %s that the bot restarts: %s", interaction.id, exc)
        return "failed"

    async def reset(self, interaction: discord.Interaction[Any]) -> bool:
        """``/reset``: forget the conversation the command belongs to."""
        conversation = command_conversation(interaction)
        forgot = await self.state.conversations.reset(conversation)
        await self.state.resets.mark(conversation, str(interaction.id))
        return forgot


async def _defer(interaction: discord.Interaction[Any]) -> int | None:
    """Defer an ``/ask`` ("thinking…"): the id of its response, when Discord says.
    Only the id is kept: discord.py's answer (the whole response message) would
    otherwise stay in ``_ask``'s frame for as long as the reply streams."""
    deferral = await interaction.response.defer(thinking=True)
    return deferral.message_id if deferral is not None else None


def build_tree(
    client: discord.Client, controls: Controls, settings: DiscordSettings
) -> app_commands.CommandTree[Any]:
    tree: app_commands.CommandTree[Any] = app_commands.CommandTree(client)

    @tree.command(name="ask", description="Ask the model; the answer streams in here")
    @app_commands.describe(prompt="What you want to ask")
    async def ask(interaction: discord.Interaction[Any], prompt: str) -> None:
        await controls.ask(interaction, prompt)

    @tree.command(name="reset", description="Make the bot forget this conversation")
    async def reset(interaction: discord.Interaction[Any]) -> None:
        if not controls.allowed(interaction):
            await interaction.response.send_message(NOT_ALLOWED_TEXT, ephemeral=True)
            return
        forgot = await controls.reset(interaction)
        text = "Done: I've forgotten our conversation here." if forgot else "Nothing to forget."
        await interaction.response.send_message(text, ephemeral=True)

    commands: list[app_commands.Command[Any, Any, Any]] = [ask, reset]
    models = settings.discord_models
    if len(models) > 1:
        choices = [app_commands.Choice(name=m[:100], value=m) for m in models[:MAX_CHOICES]]

        @tree.command(name="model", description="Choose the model that answers in this channel")
        @app_commands.describe(name="The model")
        @app_commands.choices(name=choices)
        async def model(
            interaction: discord.Interaction[Any], name: app_commands.Choice[str]
        ) -> None:
            if not controls.allowed(interaction):
                await interaction.response.send_message(NOT_ALLOWED_TEXT, ephemeral=True)
                return
            await controls.models.choose(interaction.channel_id or 0, name.value)
            await interaction.response.send_message(
                f"Replies in this channel now use **{name.value}**.", ephemeral=True
            )

        commands.append(model)
    if not settings.discord_dms:
        for command in commands:
            app_commands.guild_only()(command)
    return tree


async def sync_commands(tree: app_commands.CommandTree[Any], settings: DiscordSettings) -> None:
    """Publish the commands (see the module docstring for where and by whom)."""
    if not settings.owns_shard_zero:
        return
    if not settings.discord_guild_ids:
        synced = await tree.sync()
        log.info("Discord: synced %d slash commands globally", len(synced))
        return
    for guild_id in settings.discord_guild_ids:
        guild = discord.Object(guild_id)
        tree.copy_global_to(guild=guild)
        synced = await tree.sync(guild=guild)
        log.info("Discord: synced %d slash commands to guild %s", len(synced), guild_id)
