"""Slash commands: ``/ask prompt:``, ``/reset`` and, with several models, ``/model``.

They are synced when the bot starts: globally (Discord may take a while to
show changes everywhere), or to ``DISCORD_GUILD_IDS`` only, where changes show
at once (for development). Only the process that runs shard 0 syncs, so a
fleet of processes doesn't race to overwrite the same commands.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from bots.discord.bot import NOT_ALLOWED_TEXT, DiscordBot
from bots.discord.settings import DiscordSettings

log = logging.getLogger(__name__)

MAX_CHOICES = 25
"""Discord's limit on a command option's choices."""


def build_tree(
    client: discord.Client, bot: DiscordBot, settings: DiscordSettings
) -> app_commands.CommandTree[Any]:
    tree: app_commands.CommandTree[Any] = app_commands.CommandTree(client)

    @tree.command(name="ask", description="Ask the model; the answer streams in here")
    @app_commands.describe(prompt="What you want to ask")
    async def ask(interaction: discord.Interaction[Any], prompt: str) -> None:
        await bot.ask(interaction, prompt)

    @tree.command(name="reset", description="Make the bot forget this conversation")
    async def reset(interaction: discord.Interaction[Any]) -> None:
        if not _allowed(bot, interaction):
            await interaction.response.send_message(NOT_ALLOWED_TEXT, ephemeral=True)
            return
        forgot = await bot.reset(interaction)
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
            if not _allowed(bot, interaction):
                await interaction.response.send_message(NOT_ALLOWED_TEXT, ephemeral=True)
                return
            await bot.models.choose(interaction.channel_id or 0, name.value)
            await interaction.response.send_message(
                f"Replies in this channel now use **{name.value}**.", ephemeral=True
            )

        commands.append(model)
    if not settings.discord_dms:
        for command in commands:
            app_commands.guild_only()(command)
    return tree


def _allowed(bot: DiscordBot, interaction: discord.Interaction[Any]) -> bool:
    dm = interaction.guild_id is None
    return bot.access.allows_author(interaction.user, interaction.channel, dm=dm)


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
