"""Settings from the environment and a ``.env`` file, checked once at start.

A bad value must stop the service before it takes any event, with one line
that names the variable: ``load_settings`` turns pydantic's report into that
line (``ConfigError``).
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.llm.provider import Provider

LLMApi = Literal["chat", "anthropic", "responses"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a team chat. Answer concisely; use Markdown "
    "sparingly (short paragraphs, lists and code blocks render well)."
)


class ConfigError(Exception):
    """One clear line about one bad setting."""


class Unavailable(Exception):
    """A dependency the service needs from its start (Redis, a platform's API)
    can't be reached: one clear line naming it, not a traceback."""


def _check_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class FallbackProvider(BaseModel):
    """An entry of ``LLM_FALLBACKS``: tried in order when the primary fails before
    its first token. Unset fields inherit the primary provider's."""

    model: str
    base_url: str | None = None
    api_key: SecretStr | None = None
    api: LLMApi | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    llm_base_url: str | None = None
    """OpenAI-style base with the version, e.g. https://openrouter.ai/api/v1. None: the demo."""
    llm_api_key: SecretStr | None = None
    llm_model: str = ""
    llm_api: LLMApi = "chat"
    llm_extra_headers: dict[str, str] = Field(default_factory=dict)
    llm_extra_body: dict[str, Any] = Field(default_factory=dict)
    llm_fallbacks: list[FallbackProvider] = Field(default_factory=list)
    llm_connect_timeout: float = Field(10.0, gt=0)
    llm_first_token_timeout: float = Field(90.0, gt=0)
    llm_idle_timeout: float = Field(60.0, gt=0)
    llm_max_retries: int = Field(2, ge=0, le=10)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    channels_file: str = "channels.toml"
    """The per-channel rules file (``core.rules``), shared by every platform."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    port: int = Field(3000, ge=1, le=65535)
    """The HTTP server: /healthz, /readyz, and Slack's events in HTTP mode."""
    metrics_port: int = Field(9464, ge=1, le=65535)
    """``/metrics`` alone, on a port of its own: exposing Slack's events through an
    ingress must not make the metrics public."""
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per line, with the reply id (for log pipelines)."""
    liveness_down_after: float = Field(180.0, gt=0)
    """Seconds a platform connection (Socket Mode, the Discord gateway) may stay
    down before ``/healthz`` fails and the orchestrator restarts the process."""
    shutdown_grace_s: float = Field(30.0, ge=0)
    """On SIGTERM, seconds replies in flight get to finish before they are
    finalised as interrupted."""

    @field_validator("llm_base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value)

    @field_validator("metrics_port")
    @classmethod
    def _own_port(cls, value: int, info: ValidationInfo) -> int:
        if value == info.data.get("port"):
            raise ValueError("must differ from PORT (/metrics is served on a port of its own)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def providers(self) -> list[Provider]:
        """The primary provider then the fallbacks, in the order they are tried.
        Empty when no ``LLM_BASE_URL`` is set (the caller starts the demo)."""
        if self.llm_base_url is None:
            return []
        key = self.llm_api_key.get_secret_value() if self.llm_api_key else None
        primary = Provider(
            base_url=self.llm_base_url,
            model=self.llm_model,
            api=self.llm_api,
            api_key=key,
            headers=dict(self.llm_extra_headers),
            extra_body=dict(self.llm_extra_body),
        )
        chain = [primary]
        for fb in self.llm_fallbacks:
            chain.append(
                Provider(
                    base_url=fb.base_url or primary.base_url,
                    model=fb.model,
                    api=fb.api or primary.api,
                    api_key=fb.api_key.get_secret_value() if fb.api_key else key,
                    headers={**primary.headers, **fb.extra_headers},
                    extra_body={**primary.extra_body, **fb.extra_body},
                )
            )
        return chain


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def read_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build a settings class from the environment and ``.env``, turning any
    problem into one ``ConfigError`` line that names the variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        if not error.get("loc"):  # a model-level check: its message names the variables
            message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
            raise ConfigError(f"invalid settings: {message}") from None
        raise ConfigError(describe_error(exc)) from None
    except ValueError as exc:  # pydantic-settings: a JSON setting that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = field.group(1).upper() if field else "?"
        raise ConfigError(f"invalid setting {name}: not valid JSON") from None


def load_settings(**overrides: Any) -> Settings:
    """Read and check every setting; raise ``ConfigError`` naming the first bad one."""
    settings = read_settings(Settings, **overrides)
    if settings.llm_base_url and not settings.llm_model:
        raise ConfigError("invalid setting LLM_MODEL: required when LLM_BASE_URL is set")
    return settings


def describe_error(exc: ValidationError) -> str:
    """One line naming the first invalid setting (secret values are never echoed)."""
    error = exc.errors()[0]
    location = [str(part) for part in error.get("loc", ())]
    name = location[0].upper() if location else "?"
    where = "".join(f"[{part}]" for part in location[1:])
    value = error.get("input")
    shown = "" if isinstance(value, dict | list) or value is None else f" (got {str(value)[:60]!r})"
    if any(word in part.upper() for part in location for word in ("KEY", "SECRET", "TOKEN")):
        shown = ""  # never echo a secret
    return f"invalid setting {name}{where}: {error.get('msg', 'invalid value')}{shown}"
