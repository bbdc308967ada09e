"""Block Kit: the readable text of blocks (what a user sees) and Slack's checks on
them that matter to a streaming bot (``invalid_blocks``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tests.fakes.slack_server.limits import (
    MAX_BLOCKS,
    MAX_HEADER_TEXT,
    MAX_MARKDOWN_BLOCKS_TEXT,
    MAX_SECTION_TEXT,
)
from tests.fakes.slack_server.params import JSON, SlackError


def blocks_text(blocks: Iterable[JSON]) -> str:
    """The readable text of blocks, one line per block with text (controls skipped)."""
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        parts: list[str] = []
        if kind in ("section", "header"):
            parts.append(_text_of(block.get("text")))
            parts.extend(_text_of(f) for f in block.get("fields") or ())
        elif kind == "markdown":
            parts.append(str(block.get("text", "")))
        elif kind == "context":
            parts.extend(_text_of(e) for e in block.get("elements") or ())
        elif kind == "rich_text":
            parts.append(_rich_text(block.get("elements") or []))
        text = "\n".join(p for p in parts if p)
        if text:
            lines.append(text)
    return "\n".join(lines)


def _text_of(obj: Any) -> str:
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    return ""


def _rich_text(elements: list[Any]) -> str:
    out: list[str] = []
    for element in elements:
        if not isinstance(element, dict):
            continue
        if "text" in element and isinstance(element["text"], str):
            out.append(element["text"])
        if isinstance(element.get("elements"), list):
            out.append(_rich_text(element["elements"]))
        if element.get("type") == "user":
            out.append(f"<@{element.get('user_id')}>")
    return "".join(out)


def validate_blocks(raw: Any) -> list[JSON]:
    """Slack's checks that matter to a streaming bot; raises SlackError otherwise."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise SlackError("invalid_blocks_format") from None
    if not isinstance(raw, list):
        raise SlackError("invalid_blocks_format")
    errors: list[str] = []
    if len(raw) > MAX_BLOCKS:
        errors.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    markdown_total = 0
    block_ids: set[str] = set()
    for index, block in enumerate(raw):
        pointer = f"[json-pointer:/blocks/{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(f"must be an object with a type {pointer}]")
            continue
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in block_ids:
                errors.append(f"duplicate block_id {block_id} {pointer}/block_id]")
            block_ids.add(block_id)
        kind = block["type"]
        if kind == "section":
            text = _text_of(block.get("text"))
            if not text and not block.get("fields"):
                errors.append(f"must provide text or fields {pointer}]")
            if len(text) > MAX_SECTION_TEXT:
                errors.append(
                    f"must be less than {MAX_SECTION_TEXT + 1} characters {pointer}/text/text]"
                )
        elif kind == "header":
            if len(_text_of(block.get("text"))) > MAX_HEADER_TEXT:
                errors.append(
                    f"must be less than {MAX_HEADER_TEXT + 1} characters {pointer}/text/text]"
                )
        elif kind == "markdown":
            markdown_total += len(str(block.get("text", "")))
    if markdown_total > MAX_MARKDOWN_BLOCKS_TEXT:
        errors.append(
            f"markdown blocks hold {markdown_total} characters, over the cumulative "
            f"{MAX_MARKDOWN_BLOCKS_TEXT} [json-pointer:/blocks]"
        )
    if errors:
        raise SlackError(
            "invalid_blocks",
            errors=errors,
            response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
        )
    return raw
