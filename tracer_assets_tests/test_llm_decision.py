"""The LLM decider against a local Messages API server, through the real anthropic client
(built by the shared `AnthropicResource`; the generic call has its own tests in test_llm_client.py).

The context is built from the bundled real 1h candles of BTC/USDT and ETH/USDT (indicators and
signals computed as the assets do); ETH is held, BTC is not. Every failure must give HOLD with
the reason naming what went wrong, and the API key must appear in no outcome.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import anthropic
import dagster as dg
import polars as pl
import pytest
from conftest import bundled_frame
from fake_anthropic import FakeAnthropic

from tracer_assets.features.indicators import compute_indicators
from tracer_assets.llm import AnswerRejected
from tracer_assets.llm.resource import DEFAULT_MODEL, AnthropicResource
from tracer_assets.market.candles import candles_from_rows
from tracer_assets.signals.scoring import score_latest
from tracer_assets.trading.llm_decision import (
    PROMPT_INDICATORS,
    DecisionContext,
    LlmOutcome,
    MarketSnapshot,
    PortfolioState,
    context_from_frames,
    decide_with_llm,
    parse_answer,
)
from tracer_assets.trading.positions import Position

API_KEY = "sk-ant-test-SECRET-4f1c9e2b7a"
MODEL = "claude-sonnet-4-6"
SYMBOLS = ("BTC/USDT", "ETH/USDT")
OI_MISSING = "ETH/USDT is a spot market on replay: no open interest"
FUNDING_MISSING = "ETH/USDT is a spot market on replay: no funding rate"


def _indicators() -> pl.DataFrame:
    frames = []
    for symbol in SYMBOLS:
        raw = bundled_frame(symbol, "1h").tail(400)
        rows = raw.select(pl.col("date").dt.epoch("ms"), "open", "high", "low", "close", "volume").rows()
        frames.append(candles_from_rows([list(r) for r in rows], symbol, "1h"))
    return compute_indicators(pl.concat(frames))


@pytest.fixture(scope="module")
def frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    indicators = _indicators()
    return indicators, score_latest(indicators)


def _held(symbol: str, amount: str, entry_price: str) -> Position:
    """An open long as the trading domain holds it (the paper broker's and the live book's Position)."""
    amount, entry = Decimal(amount), Decimal(entry_price)
    return Position(
        position_id="tracer-test",
        symbol=symbol,
        amount=amount,
        entry_price=entry,
        cost_basis=amount * entry,
        stop_loss=None,
        take_profit=None,
        opened_at=datetime(2024, 9, 1, tzinfo=UTC),
    )


def _context(frames, quote_balance: str = "1000") -> DecisionContext:
    indicators, signals = frames
    market = {
        "BTC/USDT": {
            "open_interest": 81234.5,
            "funding_rate": 0.000125,
            "funding_timestamp": 1725609600000,
            "errors": {},
        },
        "ETH/USDT": {
            "open_interest": None,
            "funding_rate": None,
            "funding_timestamp": None,
            "errors": {"open_interest": OI_MISSING, "funding_rate": FUNDING_MISSING},
        },
    }
    portfolio = PortfolioState("USDT", Decimal(quote_balance), {"ETH/USDT": _held("ETH/USDT", "0.05", "2400")})
    return context_from_frames(SYMBOLS, indicators, signals, market, portfolio, Decimal("5"), Decimal("100"), "1h")


@pytest.fixture
def ctx(frames) -> DecisionContext:
    return _context(frames)


@pytest.fixture
def server():
    with FakeAnthropic(api_key=API_KEY) as fake:
        yield fake


def _client(server: FakeAnthropic, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=kwargs.pop("api_key", API_KEY), base_url=server.url, max_retries=0, **kwargs)


def _buy(ctx: DecisionContext, **changes) -> dict:
    """A valid BUY of BTC/USDT: stop 2 % below the price, target 3 % above."""
    price = ctx.markets["BTC/USDT"].price
    answer = {
        "action": "BUY",
        "symbol": "BTC/USDT",
        "confidence": 0.72,
        "position_size_quote": 50,
        "stop_loss": str((price * Decimal("0.98")).quantize(Decimal("0.01"))),
        "take_profit": str((price * Decimal("1.03")).quantize(Decimal("0.01"))),
        "reasoning": "Momentum turning up above the 12 EMA.",
    }
    answer.update(changes)
    return answer


def _as_json(answer: dict) -> str:
    # Prices go out as JSON numbers, exactly as written (no float round trip).
    text = json.dumps(answer)
    for name in ("stop_loss", "take_profit"):
        value = answer.get(name)
        if isinstance(value, str):
            text = text.replace(json.dumps(value), value)
    return text


def _decide(server: FakeAnthropic, ctx: DecisionContext, timeout_s: float = 5.0, api_key: str = API_KEY) -> LlmOutcome:
    llm = AnthropicResource(
        api_key=api_key, model=MODEL, base_url=server.url, timeout_seconds=timeout_s, max_tokens=512
    )
    outcome = decide_with_llm(llm, ctx)
    assert API_KEY not in repr(outcome)  # not in the reason, the raw text, anywhere
    return outcome


def _assert_hold(outcome: LlmOutcome, reason_part: str) -> None:
    assert outcome.action == "HOLD" and outcome.ok is False
    assert (outcome.symbol, outcome.position_size_quote, outcome.stop_loss, outcome.take_profit) == (None,) * 4
    assert reason_part in outcome.reason, outcome.reason


# --- the happy path and the prompt -----------------------------------------------------------


def test_a_valid_buy_is_accepted_with_exact_numbers(server, ctx):
    answer = _buy(ctx)
    server.reply_text(_as_json(answer))
    outcome = _decide(server, ctx)
    assert outcome.ok and outcome.action == "BUY" and outcome.symbol == "BTC/USDT"
    assert outcome.confidence == 0.72
    assert outcome.position_size_quote == Decimal("50")
    assert outcome.stop_loss == Decimal(answer["stop_loss"]) and outcome.take_profit == Decimal(answer["take_profit"])
    assert isinstance(outcome.stop_loss, Decimal)
    assert outcome.reason == "LLM: Momentum turning up above the 12 EMA."
    assert outcome.raw_text == _as_json(answer) and outcome.model == MODEL
    assert outcome.input_tokens > 0 and outcome.output_tokens > 0
    assert 0 <= outcome.latency_s < 5


def test_the_request_carries_the_data_and_the_key_only_as_a_header(server, ctx, caplog):
    server.reply_text(_as_json(_buy(ctx)))
    with caplog.at_level(logging.DEBUG):  # the SDK's debug log (ANTHROPIC_LOG=debug) shows requests
        _decide(server, ctx)
    assert "Request options" in caplog.text and API_KEY not in caplog.text
    (request,) = server.requests
    assert request.path == "/v1/messages"
    assert request.body["model"] == MODEL and request.body["max_tokens"] == 512
    # anthropic 2.11 sends the key as a bearer token; either header is how the API takes it.
    sent = request.headers.get("x-api-key") or request.headers["authorization"].removeprefix("Bearer ")
    assert sent == API_KEY and request.headers["anthropic-version"]
    assert API_KEY not in json.dumps(request.body)

    system = request.body["system"]
    for name in ("action", "symbol", "confidence", "position_size_quote", "stop_loss", "take_profit", "reasoning"):
        assert f'"{name}"' in system
    assert "ONLY one JSON object" in system and "BTC/USDT, ETH/USDT" in system

    user = request.body["messages"][0]["content"]
    data = json.loads(user[user.index("{") : user.rindex("}") + 1])
    btc, eth = data["markets"]["BTC/USDT"], data["markets"]["ETH/USDT"]
    for name in PROMPT_INDICATORS:
        assert btc["indicators"][name] == pytest.approx(ctx.markets["BTC/USDT"].indicators[name], rel=1e-5)
    assert btc["signal"]["regime"] == ctx.markets["BTC/USDT"].signal["regime"]
    assert btc["signal"]["conviction"] == pytest.approx(ctx.markets["BTC/USDT"].signal["conviction"], rel=1e-3)
    assert btc["open_interest"] == 81234.5 and btc["funding_rate"] == 0.000125
    assert eth["open_interest"] is None and eth["open_interest_unavailable"] == OI_MISSING
    assert eth["funding_rate"] is None and eth["funding_rate_unavailable"] == FUNDING_MISSING
    assert btc["price"] == str(ctx.markets["BTC/USDT"].price)
    assert btc["candles"]["recent_closes"][-1] == float(ctx.markets["BTC/USDT"].price)
    assert data["portfolio"]["quote_balance"] == "1000"
    assert data["portfolio"]["positions"]["ETH/USDT"]["quantity"] == "0.05"
    assert eth["position"]["value_quote"] == str(Decimal("0.05") * ctx.markets["ETH/USDT"].price)
    assert data["limits"] == {"min_order_quote": "5", "max_order_quote": "100"}


# --- answers that are accepted, tolerated or normalized -----------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda text: f"```json\n{text}\n```", id="fenced"),
        pytest.param(lambda text: f"Here is my decision:\n{text}\nGood luck {{with it}}.", id="in-prose"),
    ],
)
def test_json_inside_fences_or_prose_is_accepted(server, ctx, wrap):
    server.reply_text(wrap(_as_json(_buy(ctx))))
    outcome = _decide(server, ctx)
    assert outcome.ok and outcome.action == "BUY" and outcome.position_size_quote == Decimal("50")


def test_case_symbol_spelling_and_quoted_numbers_are_normalized(server, ctx):
    # Unambiguous spellings are read as what they are; they are not guesses.
    server.reply_text(
        _as_json(_buy(ctx, action=" buy ", symbol="btcusdt", position_size_quote="25.50", confidence="0.6"))
    )
    outcome = _decide(server, ctx)
    assert outcome.ok and (outcome.action, outcome.symbol) == ("BUY", "BTC/USDT")
    assert outcome.position_size_quote == Decimal("25.50") and outcome.confidence == 0.6


def test_a_sell_closes_the_held_position_and_a_hold_carries_no_order(server, ctx):
    server.reply_text(
        _as_json(
            {
                "action": "SELL",
                "symbol": "ETH/USDT",
                "confidence": 0.55,
                "position_size_quote": None,
                "stop_loss": None,
                "take_profit": None,
                "reasoning": "Bear regime.",
            }
        )
    )
    sell = _decide(server, ctx)
    assert sell.ok and (sell.action, sell.symbol, sell.position_size_quote, sell.stop_loss) == (
        "SELL",
        "ETH/USDT",
        None,
        None,
    )

    server.reply_text(
        _as_json(
            {
                "action": "HOLD",
                "symbol": None,
                "confidence": 0.3,
                "position_size_quote": 0,
                "stop_loss": 0,
                "take_profit": 0,
                "reasoning": "Nothing clear.",
            }
        )
    )
    hold = _decide(server, ctx)
    assert (
        hold.ok and hold.action == "HOLD" and hold.position_size_quote is None and hold.reason == "LLM: Nothing clear."
    )


# --- answers that are refused: HOLD with the reason ----------------------------------------------


def _price(ctx, symbol="BTC/USDT") -> Decimal:
    return ctx.markets[symbol].price


REFUSED = [
    ("bad-json", lambda c: '{"action": "BUY", "symbol": "BTC/USDT",}', "invalid JSON: Expecting property name"),
    ("no-json", lambda c: "I would buy some bitcoin here.", "no JSON object in the answer"),
    (
        "nan",
        lambda c: _as_json(_buy(c)).replace('"confidence": 0.72', '"confidence": NaN'),
        "invalid JSON: NaN is not a number JSON allows",
    ),
    (
        "duplicate-key",
        lambda c: _as_json(_buy(c))[:-1] + ', "action": "HOLD"}',
        "invalid JSON: key 'action' appears twice",
    ),
    (
        "missing-field",
        lambda c: _as_json({k: v for k, v in _buy(c).items() if k != "stop_loss"}),
        "missing field stop_loss",
    ),
    ("extra-field", lambda c: _as_json(_buy(c, leverage=10)), "unexpected field leverage"),
    ("unknown-action", lambda c: _as_json(_buy(c, action="LONG")), "action 'LONG' is not one of BUY, SELL, HOLD"),
    (
        "size-below-min",
        lambda c: _as_json(_buy(c, position_size_quote=1)),
        "position_size_quote 1 is below the minimum 5 USDT",
    ),
    (
        "size-above-max",
        lambda c: _as_json(_buy(c, position_size_quote=500)),
        "position_size_quote 500 is above the maximum 100 USDT",
    ),
    ("size-null-buy", lambda c: _as_json(_buy(c, position_size_quote=None)), "position_size_quote is null for BUY"),
    ("size-boolean", lambda c: _as_json(_buy(c, position_size_quote=True)), "position_size_quote True is not a number"),
    (
        "size-list",
        lambda c: _as_json(_buy(c, position_size_quote=[0, [5, 0], 0])),
        "position_size_quote [0, [5, 0], 0] is not a number",
    ),
    ("unknown-symbol", lambda c: _as_json(_buy(c, symbol="DOGE/USDT")), "symbol DOGE/USDT is not in the universe"),
    ("not-a-symbol", lambda c: _as_json(_buy(c, symbol="bitcoin")), "symbol 'bitcoin' is not a market symbol"),
    ("confidence-1.5", lambda c: _as_json(_buy(c, confidence=1.5)), "confidence 1.5 is not in [0, 1]"),
    ("confidence-percent", lambda c: _as_json(_buy(c, confidence=85)), "confidence 85 is not in [0, 1]"),
    ("confidence-text", lambda c: _as_json(_buy(c, confidence="high")), "confidence 'high' is not a number"),
    (
        "stop-above-price",
        lambda c: _as_json(_buy(c, stop_loss=str(_price(c) + 500))),
        "stop_loss {} is not below the price {} for BUY",
    ),
    (
        "stop-at-price",
        lambda c: _as_json(_buy(c, stop_loss=str(_price(c)))),
        "stop_loss {} is not below the price {} for BUY",
    ),
    (
        "target-below-price",
        lambda c: _as_json(_buy(c, take_profit=str(_price(c) - 500))),
        "take_profit {} is not above the price {} for BUY",
    ),
    ("stop-negative", lambda c: _as_json(_buy(c, stop_loss="-5")), "stop_loss -5 is not a positive price"),
    ("sell-not-held", lambda c: _as_json(_buy(c, action="SELL")), "SELL of BTC/USDT, but no BTC/USDT position is held"),
    (
        "sell-above-value",
        lambda c: _as_json(_buy(c, action="SELL", symbol="ETH/USDT", position_size_quote=200)),
        "position_size_quote 200 is above the position's value",
    ),
    ("reasoning-too-long", lambda c: _as_json(_buy(c, reasoning="x" * 2001)), "reasoning has 2001 characters"),
    ("not-an-object", lambda c: "[1, 2, 3]", "no JSON object in the answer"),
]


@pytest.mark.parametrize(("make", "reason"), [pytest.param(m, r, id=i) for i, m, r in REFUSED])
def test_an_invalid_answer_means_hold_with_the_field_named(server, ctx, make, reason):
    text = make(ctx)
    server.reply_text(text)
    outcome = _decide(server, ctx)
    if "{}" in reason:  # the wrong price and the reference price, as the answer and context hold them
        wrong = json.loads(text)["stop_loss" if reason.startswith("stop") else "take_profit"]
        reason = reason.format(wrong, _price(ctx))
    _assert_hold(outcome, "invalid answer: " + reason)
    assert outcome.raw_text == text  # kept for the audit trail


def test_a_buy_above_the_free_balance_is_refused(server, frames):
    poor = _context(frames, quote_balance="20")
    server.reply_text(_as_json(_buy(poor, position_size_quote=50)))
    _assert_hold(_decide(server, poor), "position_size_quote 50 is above the free balance 20 USDT")


# --- the call failing -------------------------------------------------------------------------------


def test_http_500_means_hold_and_no_retry(server, ctx):
    server.reply_status(500, "Internal server error")
    outcome = _decide(server, ctx)
    _assert_hold(outcome, "LLM HTTP 500: api_error: Internal server error")
    assert len(server.requests) == 1  # max_retries=0: one request, no backoff


def test_http_429_means_hold(server, ctx):
    server.reply_status(429, "Number of request tokens has exceeded your per-minute rate limit")
    _assert_hold(_decide(server, ctx), "LLM HTTP 429 (rate limited): rate_limit_error: Number of request tokens")


def test_a_wrong_key_means_hold_and_the_key_is_not_echoed(server, ctx):
    outcome = _decide(server, ctx, api_key="sk-ant-wrong-key-000000")
    _assert_hold(outcome, "LLM HTTP 401: authentication_error: invalid x-api-key")
    assert "sk-ant-wrong-key-000000" not in repr(outcome)


def test_a_key_echoed_by_the_server_is_redacted(server, ctx):
    server.reply_status(400, f"bad request from key {API_KEY}")
    outcome = _decide(server, ctx)  # asserts the key is absent
    _assert_hold(outcome, "LLM HTTP 400: invalid_request_error: bad request from key [redacted]")


def test_a_timeout_means_hold_quickly(server, ctx):
    server.reply_delay(2.0, _as_json(_buy(ctx)))
    started = time.monotonic()
    outcome = _decide(server, ctx, timeout_s=0.5)
    elapsed = time.monotonic() - started
    _assert_hold(outcome, "LLM timed out after 0.5 s")
    assert 0.4 < outcome.latency_s < 1.5 and elapsed < 1.8


def _wait_for(predicate, within_s: float) -> bool:
    end = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def _llm_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("tracer-llm")]


def test_the_time_limit_is_one_deadline_for_the_whole_call(server, ctx):
    # The tester's case: a valid BUY trickled in 8 pieces, one a second. No single read waits
    # longer than 1 s, so a per-read timeout of 2 s never fires; the deadline of 2 s must.
    server.reply_trickle(_as_json(_buy(ctx)), pieces=8, pause_s=1.0)
    started = time.monotonic()
    outcome = _decide(server, ctx, timeout_s=2.0)
    elapsed = time.monotonic() - started
    _assert_hold(outcome, "LLM timed out after 2.0 s (deadline hit")
    assert 1.9 < outcome.latency_s < 3.0 and 1.9 < elapsed < 3.5, (outcome.latency_s, elapsed)
    # The connection was cut at the deadline, not left to the server: it saw the client hang up
    # after 1 or 2 of its 8 pieces, and no thread of the call is left behind.
    (request,) = server.requests
    assert _wait_for(lambda: request.hung_up_at is not None, 1.5), "the client never closed its connection"
    assert request.hung_up_at - started < 3.5 and request.pieces_sent < 8, (
        request.hung_up_at - started,
        request.pieces_sent,
    )
    assert _llm_threads() == []


def test_a_trickled_answer_complete_within_the_deadline_is_accepted(server, ctx):
    server.reply_trickle(_as_json(_buy(ctx)), pieces=8, pause_s=0.1)
    outcome = _decide(server, ctx, timeout_s=5.0)
    assert outcome.ok and outcome.action == "BUY" and 0.7 < outcome.latency_s < 5
    # The server counts a piece after writing it: the client may have read the last one first.
    settled = time.monotonic() + 5
    while server.requests[0].pieces_sent < 8 and time.monotonic() < settled:
        time.sleep(0.01)
    assert server.requests[0].pieces_sent == 8 and server.requests[0].hung_up_at is None
    assert _llm_threads() == []


def test_the_resource_holds_at_its_deadline(server, ctx):
    server.reply_trickle(_as_json(_buy(ctx)), pieces=8, pause_s=0.5)
    llm = AnthropicResource(api_key=API_KEY, base_url=server.url, timeout_seconds=1.0)
    started = time.monotonic()
    outcome = decide_with_llm(llm, ctx)
    _assert_hold(outcome, "LLM timed out after 1.0 s (deadline hit")
    assert time.monotonic() - started < 2.5 and API_KEY not in repr(outcome)


@pytest.mark.parametrize("timeout_s", [0.0, -1.0, float("nan"), float("inf")])
def test_a_time_limit_that_is_not_a_positive_finite_number_means_hold(server, ctx, timeout_s):
    _assert_hold(
        _decide(server, ctx, timeout_s=timeout_s), "LLM time limit must be a positive finite number of seconds"
    )
    assert server.requests == []  # nothing was sent


def test_the_fake_server_streams_a_trickled_answer_as_server_sent_events(server, ctx):
    # The fake answers `stream: true` the way the API does, so a streaming client can be tested too.
    text = _as_json(_buy(ctx))
    server.reply_trickle(text, pieces=4, pause_s=0.05)
    with (
        _client(server) as client,
        client.messages.stream(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "decide"}]) as stream,
    ):
        message = stream.get_final_message()
    assert server.requests[0].streamed and server.requests[0].pieces_sent == 4
    assert message.stop_reason == "end_turn" and message.content[0].text == text


def test_a_refusal_means_hold(server, ctx):
    server.reply_refusal()
    _assert_hold(_decide(server, ctx), "LLM refused to answer (stop_reason refusal)")


def test_an_answer_cut_at_max_tokens_means_hold_even_if_it_parses(server, ctx):
    server.reply_text(_as_json(_buy(ctx)), stop_reason="max_tokens")
    _assert_hold(_decide(server, ctx), "LLM answer cut off at max_tokens (512)")


def test_empty_and_non_text_content_mean_hold(server, ctx):
    server.reply_content([])
    _assert_hold(_decide(server, ctx), "LLM answer was empty (no content)")
    server.reply_content([{"type": "text", "text": "   "}])
    _assert_hold(_decide(server, ctx), "invalid answer: the answer is empty")
    server.reply_content(
        [{"type": "tool_use", "id": "toolu_1", "name": "buy", "input": {"symbol": "BTC/USDT"}}], stop_reason="tool_use"
    )
    _assert_hold(_decide(server, ctx), "LLM stopped with stop_reason 'tool_use'")
    server.reply_content([{"type": "thinking", "thinking": "hmm", "signature": "sig"}])
    _assert_hold(_decide(server, ctx), "LLM answer had no text (content types: thinking)")


def test_connection_refused_means_hold(ctx):
    stopped = FakeAnthropic(api_key=API_KEY).start()
    stopped.stop()  # nothing listens on its port any more
    outcome = _decide(stopped, ctx)
    host, port = stopped.url.removeprefix("http://").split(":")
    _assert_hold(outcome, f"LLM connection failed: ConnectError ({host}:{port})")


# --- the resource -------------------------------------------------------------------------------------


def test_the_resource_reads_the_key_from_envvar_and_never_shows_it(server, ctx, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    llm_definition = AnthropicResource.from_env_key(base_url=server.url, timeout_seconds=3.0)
    assert llm_definition.model == DEFAULT_MODEL and llm_definition.max_retries == 0
    with dg.build_resources({"llm": llm_definition}) as resources:
        llm = resources.llm
        assert API_KEY not in repr(llm) and API_KEY not in str(llm)
        server.reply_status(503, "overloaded")
        outcome = decide_with_llm(llm, ctx)
        _assert_hold(outcome, "LLM HTTP 503")
        assert len(server.requests) == 1  # the resource's client does not retry
        server.reply_text(_as_json(_buy(ctx)))
        assert decide_with_llm(llm, ctx).action == "BUY"
    assert server.requests[-1].body["model"] == DEFAULT_MODEL


def test_the_resource_without_a_key_holds_and_names_the_variable(ctx, monkeypatch):
    outcome = decide_with_llm(AnthropicResource(api_key="  ", base_url="http://127.0.0.1:9"), ctx)
    _assert_hold(outcome, "LLM client not configured: the Anthropic API key is empty: set ANTHROPIC_API_KEY")
    outcome = decide_with_llm(AnthropicResource(api_key=API_KEY, base_url="ftp://example"), ctx)
    _assert_hold(outcome, "base_url must be an http(s) URL")
    assert API_KEY not in repr(outcome)


# --- pure parts: parsing and the context -------------------------------------------------------


def test_parse_answer_reads_the_first_object_and_never_evaluates(ctx):
    first = _as_json(_buy(ctx, position_size_quote=10))
    second = _as_json(_buy(ctx, position_size_quote=90))
    assert parse_answer(f"{first}\n{second}", ctx).position_size_quote == Decimal("10")
    with pytest.raises(AnswerRejected, match="no JSON object"):
        parse_answer("__import__('os').system('touch /tmp/pwned')", ctx)
    with pytest.raises(AnswerRejected, match="confidence 'float' is not a number"):
        parse_answer(_as_json(_buy(ctx, confidence="float")), ctx)


def test_the_context_refuses_bad_input_naming_the_field(frames, ctx):
    snapshot = ctx.markets["BTC/USDT"]
    with pytest.raises(ValueError, match="price of BTC/USDT must be a positive finite Decimal"):
        MarketSnapshot(symbol="BTC/USDT", price=Decimal("0"), candles=None, indicators={}, signal=None)
    with pytest.raises(ValueError, match="indicator rsi_14 of BTC/USDT must be finite"):
        MarketSnapshot(
            symbol="BTC/USDT", price=Decimal("1"), candles=None, indicators={"rsi_14": float("nan")}, signal=None
        )
    with pytest.raises(ValueError, match="min_order_quote 200 is above max_order_quote 100"):
        DecisionContext(SYMBOLS, ctx.markets, ctx.portfolio, Decimal("200"), Decimal("100"), "1h")
    with pytest.raises(ValueError, match=r"no market snapshot for \['SOL/USDT'\]"):
        DecisionContext((*SYMBOLS, "SOL/USDT"), ctx.markets, ctx.portfolio, Decimal("5"), Decimal("100"), "1h")
    with pytest.raises(ValueError, match=r"positions\['BTC/USDT'\] holds the position of 'ETH/USDT'"):
        PortfolioState("USDT", Decimal("1000"), {"BTC/USDT": _held("ETH/USDT", "0.05", "2400")})
    with pytest.raises(ValueError, match="position amount of ETH/USDT must be a positive finite Decimal"):
        PortfolioState("USDT", Decimal("1000"), {"ETH/USDT": _held("ETH/USDT", "0", "2400")})
    with pytest.raises(ValueError, match="no indicator rows for BTC/USDT at timeframe 4h"):
        context_from_frames(SYMBOLS, frames[0], frames[1], {}, ctx.portfolio, Decimal("5"), Decimal("100"), "4h")
    assert snapshot.price == Decimal(repr(frames[0].filter(pl.col("symbol") == "BTC/USDT")["close"][-1]))
