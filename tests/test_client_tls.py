"""The model client builds a verifying TLS context only when a request may need one.

Loading the CA bundle costs 30-50 ms of CPU, a tenth of a short ``chatrelay
ask``; a client whose providers are all plain ``http://`` skips it. Anything
else, or a proxy from the environment, gets the verifying default.
"""

from __future__ import annotations

import ssl

import pytest

from core.llm.client import LLMClient
from core.llm.pool import ShardedTransport
from core.llm.provider import Provider

PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def verify_mode(*urls: str) -> ssl.VerifyMode:
    client = LLMClient([Provider(url, "m") for url in urls])
    transport = client._http._transport
    assert isinstance(transport, ShardedTransport)
    pools = transport.pools
    contexts = {id(pool._pool._ssl_context) for pool in pools}  # type: ignore[attr-defined]
    assert len(contexts) == 1  # one context, built once, for every pool
    context: ssl.SSLContext = pools[0]._pool._ssl_context  # type: ignore[attr-defined]
    return context.verify_mode


def test_plain_http_providers_get_no_verifying_context() -> None:
    assert verify_mode("http://127.0.0.1:8000/v1") == ssl.CERT_NONE
    assert verify_mode("HTTP://localhost/v1", "http://10.0.0.5/v1") == ssl.CERT_NONE


def test_any_https_provider_verifies() -> None:
    assert verify_mode("https://api.openai.com/v1") == ssl.CERT_REQUIRED
    assert verify_mode("http://localhost/v1", "https://openrouter.ai/api/v1") == ssl.CERT_REQUIRED


def test_a_proxy_from_the_environment_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.internal:3128")
    assert verify_mode("http://127.0.0.1:8000/v1") == ssl.CERT_REQUIRED
