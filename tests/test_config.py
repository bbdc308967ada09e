"""Settings: environment and .env, and one clear line naming a bad variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, load_settings

LLM_VARS = [
    "LLM_BASE_URL",
    "LLM_API_KEY",
    "LLM_MODEL",
    "LLM_API",
    "LLM_EXTRA_HEADERS",
    "LLM_EXTRA_BODY",
    "LLM_FALLBACKS",
    "LLM_IDLE_TIMEOUT",
    "SYSTEM_PROMPT",
    "LOG_LEVEL",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in LLM_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_mean_the_demo_model() -> None:
    settings = load_settings()
    assert settings.llm_base_url is None
    assert settings.providers() == []
    assert settings.llm_api == "chat"


def test_environment_builds_provider_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_BASE_URL", "https://api.z.ai/api/paas/v4/")
    monkeypatch.setenv("LLM_API_KEY", "sk-secret")
    monkeypatch.setenv("LLM_MODEL", "glm-4.6")
    monkeypatch.setenv("LLM_EXTRA_HEADERS", '{"X-Title": "chatrelay"}')
    monkeypatch.setenv("LLM_EXTRA_BODY", '{"temperature": 0.2}')
    monkeypatch.setenv(
        "LLM_FALLBACKS",
        '[{"model": "glm-4.5-air"}, {"model": "claude-x", "api": "anthropic",'
        ' "base_url": "https://api.anthropic.com/v1", "api_key": "ak"}]',
    )
    chain = load_settings().providers()
    assert [(p.model, p.api, p.base_url) for p in chain] == [
        ("glm-4.6", "chat", "https://api.z.ai/api/paas/v4"),
        ("glm-4.5-air", "chat", "https://api.z.ai/api/paas/v4"),
        ("claude-x", "anthropic", "https://api.anthropic.com/v1"),
    ]
    assert chain[1].api_key == "sk-secret" and chain[2].api_key == "ak"
    assert chain[1].headers == {"X-Title": "chatrelay"}
    assert chain[0].extra_body == {"temperature": 0.2}
    assert "sk-secret" not in repr(chain[0])


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LLM_BASE_URL=http://127.0.0.1:9/v1\nLLM_MODEL=m\n")
    assert load_settings().llm_base_url == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("LLM_API", "soap", "invalid setting LLM_API:"),
        ("LLM_BASE_URL", "ftp://x", "invalid setting LLM_BASE_URL: Value error, must start"),
        ("LLM_IDLE_TIMEOUT", "-1", "invalid setting LLM_IDLE_TIMEOUT:"),
        ("LLM_EXTRA_BODY", "{not json", "LLM_EXTRA_BODY"),
        ("LLM_FALLBACKS", '[{"api": "chat"}]', "invalid setting LLM_FALLBACKS[0][model]:"),
    ],
)
def test_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_model_is_required_with_a_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_BASE_URL", "https://openrouter.ai/api/v1")
    with pytest.raises(ConfigError, match="LLM_MODEL"):
        load_settings()


def test_secret_values_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_API_KEY", "x" * 10)
    monkeypatch.setenv("LLM_FALLBACKS", '[{"model": "m", "api_key": 42}]')
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "42" not in str(info.value)
