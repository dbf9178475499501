"""The Anthropic client as a Dagster resource: the one LLM client of the project.

The key comes through `EnvVar("ANTHROPIC_API_KEY")`: Dagster resolves it when the run starts,
shows only the variable's name in the UI, and this class keeps it out of its repr. Nothing here
logs it; every reason a call returns has it redacted.

Retries are off by default (`max_retries=0`): a tick must not stall behind the SDK's backoff
(2 retries of up to 8 s each by default) when the API is down; the next tick asks again.

`timeout_seconds` is one wall-clock deadline for the whole call (connect, send, every read,
the parse), enforced by `ask_claude`: the SDK's own `timeout` is httpx's, per connect, write
and read, so an answer trickled a piece at a time would never trip it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dagster import ConfigurableResource, EnvVar
from pydantic import BaseModel, Field

from tracer_assets.llm.call import LlmResult, ask_claude
from tracer_assets.redaction import prepare_secrets, redact_text

__all__ = ["API_KEY_VARIABLE", "DEFAULT_MODEL", "AnthropicResource"]

# A current Sonnet: in anthropic 2.11's model list and not in its DEPRECATED_MODELS.
DEFAULT_MODEL = "claude-sonnet-4-6"
API_KEY_VARIABLE = "ANTHROPIC_API_KEY"

Model = TypeVar("Model", bound=BaseModel)


class AnthropicResource(ConfigurableResource):
    """Builds `anthropic.Anthropic` clients; `ask(system, messages, schema)` is one validated call."""

    api_key: str | None = Field(
        default=None, repr=False, description=f"the API key; pass EnvVar({API_KEY_VARIABLE!r}), never a literal"
    )
    model: str = Field(default=DEFAULT_MODEL, description="Claude model id")
    base_url: str | None = Field(default=None, description="another Messages API origin (a local server, a proxy)")
    timeout_seconds: float = Field(
        default=20.0,
        description="one deadline for the whole call (connect, send, every read, parse); past it the call fails",
    )
    max_tokens: int = Field(default=512, description="answer length cap; an answer cut there is a failure")
    max_retries: int = Field(default=0, description="SDK retries; 0 so a failing API cannot stall a tick")

    @classmethod
    def from_env_key(cls, **config) -> AnthropicResource:
        """The resource with its key from ANTHROPIC_API_KEY (resolved at run time, masked in the UI)."""
        return cls(api_key=EnvVar(API_KEY_VARIABLE), **config)

    def _check(self) -> None:
        # Messages name the setting, never the key's value. The time limit is checked by the
        # call itself ("LLM time limit must be a positive finite number of seconds").
        if not self.api_key or not self.api_key.strip():
            raise ValueError(f"the Anthropic API key is empty: set {API_KEY_VARIABLE}")
        if not self.model.strip():
            raise ValueError("the Anthropic model id is empty")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")

    def client(self):
        """A new `anthropic.Anthropic` for this configuration (the key passed explicitly, so
        the SDK reads no credential files or other environment variables). Its `timeout` is
        httpx's per-operation limit; `ask` holds the whole call to `timeout_seconds`."""
        import anthropic

        self._check()
        return anthropic.Anthropic(
            api_key=self.api_key,
            base_url=self.base_url or None,
            timeout=self.timeout_seconds,
            max_retries=self.max_retries,
        )

    def ask(
        self,
        system: str,
        messages: Sequence[Mapping[str, Any]],
        schema: type[Model],
        *,
        context: dict[str, Any] | None = None,
    ) -> LlmResult[Model]:
        """One call (see `ask_claude`): the answer validated against `schema`, or a failure
        with its reason (a bad configuration included). Never raises for the call or the answer."""
        try:
            client = self.client()
        except Exception as error:
            secrets = prepare_secrets([self.api_key], too_short="skip")
            return LlmResult(
                ok=False,
                answer=None,
                reason=redact_text(f"LLM client not configured: {error}"[:300], secrets),
                raw_text=None,
                model=self.model,
                latency_s=0.0,
            )
        with client:
            return ask_claude(
                client,
                self.model,
                system,
                messages,
                schema,
                timeout_s=self.timeout_seconds,
                max_tokens=self.max_tokens,
                context=context,
            )
