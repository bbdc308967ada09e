"""Discord's error answers (``ApiError``, the ``50035`` invalid form body with its
``errors`` tree) and its size rules for content, embeds and components."""

from __future__ import annotations

from tests.fakes.discord_server.constants import (
    FLAG_IS_COMPONENTS_V2,
    MAX_ACTION_ROWS,
    MAX_CONTENT,
    MAX_EMBED_AUTHOR,
    MAX_EMBED_DESCRIPTION,
    MAX_EMBED_FIELD_NAME,
    MAX_EMBED_FIELD_VALUE,
    MAX_EMBED_FIELDS,
    MAX_EMBED_FOOTER,
    MAX_EMBED_TITLE,
    MAX_EMBED_TOTAL,
    MAX_EMBEDS,
    MAX_ROW_COMPONENTS,
    Json,
)


class ApiError(Exception):
    """A Discord error response; raised by handlers, turned into JSON by the fake."""

    def __init__(self, status: int, code: int, message: str, errors: Json | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: Json = {"message": message, "code": code}
        if errors:
            self.body["errors"] = errors


def field_error(code: str, message: str) -> Json:
    return {"_errors": [{"code": code, "message": message}]}


def invalid_form(errors: Json) -> ApiError:
    return ApiError(400, 50035, "Invalid Form Body", errors)


def normalise_embed(embed: Json) -> Json:
    return {"type": "rich", **{k: v for k, v in embed.items() if v is not None}}


def _embed_text_length(embed: Json) -> int:
    total = len(embed.get("title") or "") + len(embed.get("description") or "")
    total += len((embed.get("footer") or {}).get("text") or "")
    total += len((embed.get("author") or {}).get("name") or "")
    for item in embed.get("fields") or []:
        total += len(item.get("name") or "") + len(item.get("value") or "")
    return total


def validate(content: str, embeds: list[Json], components: list[Json], flags: int) -> None:
    """Discord's size rules; the error tree mirrors Discord's ``errors`` object."""
    errors: Json = {}
    if len(content) > MAX_CONTENT:
        errors["content"] = field_error(
            "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
        )
    if len(embeds) > MAX_EMBEDS:
        errors["embeds"] = field_error(
            "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length."
        )
    else:
        per_embed: Json = {}
        for index, embed in enumerate(embeds):
            found: Json = {}
            checks = [
                ("title", embed.get("title"), MAX_EMBED_TITLE),
                ("description", embed.get("description"), MAX_EMBED_DESCRIPTION),
            ]
            for key, value, limit in checks:
                if value is not None and len(str(value)) > limit:
                    found[key] = field_error(
                        "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length."
                    )
            footer = (embed.get("footer") or {}).get("text")
            if footer and len(footer) > MAX_EMBED_FOOTER:
                found["footer"] = {
                    "text": field_error(
                        "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBED_FOOTER} or fewer in length."
                    )
                }
            author = (embed.get("author") or {}).get("name")
            if author and len(author) > MAX_EMBED_AUTHOR:
                found["author"] = {
                    "name": field_error(
                        "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBED_AUTHOR} or fewer in length."
                    )
                }
            fields = embed.get("fields") or []
            if len(fields) > MAX_EMBED_FIELDS:
                found["fields"] = field_error(
                    "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBED_FIELDS} or fewer in length."
                )
            else:
                for i, item in enumerate(fields):
                    bad: Json = {}
                    if len(item.get("name") or "") > MAX_EMBED_FIELD_NAME:
                        bad["name"] = field_error(
                            "BASE_TYPE_MAX_LENGTH",
                            f"Must be {MAX_EMBED_FIELD_NAME} or fewer in length.",
                        )
                    if len(item.get("value") or "") > MAX_EMBED_FIELD_VALUE:
                        bad["value"] = field_error(
                            "BASE_TYPE_MAX_LENGTH",
                            f"Must be {MAX_EMBED_FIELD_VALUE} or fewer in length.",
                        )
                    if bad:
                        found.setdefault("fields", {})[str(i)] = bad
            if found:
                per_embed[str(index)] = found
        if per_embed:
            errors["embeds"] = per_embed
        elif sum(_embed_text_length(e) for e in embeds) > MAX_EMBED_TOTAL:
            errors["embeds"] = field_error(
                "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}"
            )
    if not flags & FLAG_IS_COMPONENTS_V2:
        if len(components) > MAX_ACTION_ROWS:
            errors["components"] = field_error(
                "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ACTION_ROWS} or fewer in length."
            )
        else:
            rows: Json = {}
            for index, row in enumerate(components):
                children = row.get("components") or []
                if row.get("type") == 1 and len(children) > MAX_ROW_COMPONENTS:
                    rows[str(index)] = {
                        "components": field_error(
                            "BASE_TYPE_MAX_LENGTH",
                            f"Must be {MAX_ROW_COMPONENTS} or fewer in length.",
                        )
                    }
                for j, child in enumerate(children):
                    if len(str(child.get("custom_id") or "")) > 100:
                        rows.setdefault(str(index), {}).setdefault("components", {})[str(j)] = {
                            "custom_id": field_error(
                                "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length."
                            )
                        }
            if rows:
                errors["components"] = rows
    if errors:
        raise invalid_form(errors)
