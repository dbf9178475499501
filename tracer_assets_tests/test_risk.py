"""The risk manager, rule by rule: each limit at its boundary and one step past it, the
sizing arithmetic (confidence, Kelly, caps), the rounding to a market's precision, and
markets read by ccxt's real binance client from the local fake Binance."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import ccxt
import pytest
from fake_binance import FakeBinance

from tracer_assets.resources.ccxt_exchange import make_ccxt_exchange
from tracer_assets.trading import risk
from tracer_assets.trading.positions import Position
from tracer_assets.trading.risk import (
    BUY_CHECKS,
    SELL_CHECKS,
    MarketRules,
    OrderRequest,
    RiskLimits,
    RiskState,
    assess,
)

NOW = datetime(2024, 9, 6, 12, 0, tzinfo=UTC)
# Binance's BTC/USDT and DOGE/USDT spot filters (as the fake server serves them).
BTC = MarketRules(
    "BTC/USDT",
    amount_step=D("0.00001"),
    price_tick=D("0.01"),
    min_amount=D("0.00001"),
    max_amount=D("9000"),
    min_cost=D("5"),
)
DOGE = MarketRules(
    "DOGE/USDT",
    amount_step=D("1"),
    price_tick=D("0.00001"),
    min_amount=D("1"),
    max_amount=D("9000000"),
    min_cost=D("5"),
)
LIMITS = RiskLimits(
    min_order_quote=D("5"),
    max_order_quote=D("100"),
    max_symbol_exposure_quote=D("100"),
    max_total_exposure_quote=D("300"),
    daily_loss_limit_quote=D("50"),
    loss_cooldown=timedelta(minutes=30),
)


def state(
    *positions: Position,
    trades_today: int = 0,
    pnl: str = "0",
    last_loss_at: datetime | None = None,
    free_quote: str | None = None,
) -> RiskState:
    return RiskState(
        tuple(positions), trades_today, D(pnl), last_loss_at, NOW, None if free_quote is None else D(free_quote)
    )


def held(symbol: str, amount: str, entry: str) -> Position:
    cost = D(amount) * D(entry)
    return Position(f"p-{symbol}", symbol, D(amount), D(entry), cost, None, None, NOW - timedelta(hours=2))


def buy(price: str = "50000", confidence: float = 1.0, symbol: str = "BTC/USDT", **kelly) -> OrderRequest:
    return OrderRequest(symbol, "buy", D(price), confidence, **kelly)


def sell(price: str = "50000", symbol: str = "BTC/USDT") -> OrderRequest:
    return OrderRequest(symbol, "sell", D(price), 0.0)


def check(verdict, name: str) -> risk.Check:
    return next(c for c in verdict.checks if c.name == name)


# --- sizing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("confidence", "cost"), [(0.0, "20"), (0.25, "40"), (0.5, "60"), (1.0, "100")])
def test_confidence_maps_linearly_from_20_to_100_percent_of_the_maximum(confidence, cost):
    verdict = assess(buy(confidence=confidence), state(), LIMITS, BTC)

    assert verdict.approved, verdict.reason
    assert verdict.cost == D(cost)
    assert verdict.amount == D(cost) / D("50000")
    assert verdict.price == D("50000")


def test_kelly_scales_the_size_by_the_fraction_of_full_kelly():
    # W=0.6, R=2: f* = 0.6 - 0.4/2 = 0.4; half Kelly 0.2 of the 100 USDT the confidence gives.
    verdict = assess(buy(win_rate=0.6, payoff_ratio=2.0), state(), LIMITS, BTC)

    assert verdict.approved, verdict.reason
    assert verdict.cost == D("20")
    assert "Kelly f* 0.4" in check(verdict, "strategy_edge").detail
    # A quarter-Kelly operator gets half of that.
    quarter = assess(buy(win_rate=0.6, payoff_ratio=2.0), state(), replace(LIMITS, kelly_fraction=D("0.25")), BTC)
    assert quarter.cost == D("10")
    # Confidence and Kelly multiply: confidence 0.5 -> 60 % of 100, x 0.2 = 12.
    assert assess(buy(confidence=0.5, win_rate=0.6, payoff_ratio=2.0), state(), LIMITS, BTC).cost == D("12")


def test_kelly_arithmetic():
    assert risk.kelly_fraction(D("0.6"), D("2")) == D("0.4")
    assert risk.kelly_fraction(D("0.55"), D("1")) == D("0.1")
    assert risk.kelly_fraction(D("0.4"), D("1.5")) == D("0")
    assert risk.kelly_fraction(D("0.3"), D("1")) == D("-0.4")


@pytest.mark.parametrize(("win_rate", "payoff"), [(0.5, 1.0), (0.4, 1.5), (0.3, 1.0)])
def test_no_edge_rejects_the_buy(win_rate, payoff):
    verdict = assess(buy(win_rate=win_rate, payoff_ratio=payoff), state(), LIMITS, BTC)

    assert not verdict.approved
    assert verdict.reason.startswith("strategy_edge: no edge: Kelly f*")
    assert (verdict.amount, verdict.cost) == (0, 0)


def test_kelly_size_exactly_at_the_minimum_passes_and_just_below_is_rejected_not_raised():
    # W=0.55, R=1: f* 0.1, half Kelly 0.05 x 100 = 5 USDT = MIN_ALLOWED_ORDER_AMOUNT.
    at_min = assess(buy(win_rate=0.55, payoff_ratio=1.0), state(), LIMITS, BTC)
    assert at_min.approved, at_min.reason
    assert (at_min.amount, at_min.cost) == (D("0.0001"), D("5"))

    # Confidence 0.99 -> fraction 0.992 -> 4.96 USDT: rejected, never lifted to 5.
    below = assess(buy(confidence=0.99, win_rate=0.55, payoff_ratio=1.0), state(), LIMITS, BTC)
    assert not below.approved
    assert below.reason.startswith("order_size: sized 4.96 USDT")
    assert "below the minimum, not raised to it" in below.reason


@pytest.mark.parametrize(
    ("win_rate", "payoff"), [(0.6, None), (None, 2.0), (1.2, 2.0), (0.6, 0.0), (float("nan"), 2.0)]
)
def test_incomplete_or_impossible_strategy_stats_reject(win_rate, payoff):
    verdict = assess(buy(win_rate=win_rate, payoff_ratio=payoff), state(), LIMITS, BTC)

    assert not verdict.approved
    assert verdict.reason.startswith("strategy_edge: win_rate=")


# --- rounding to the market ------------------------------------------------------------------


def test_btc_price_rounds_down_to_the_tick_and_amount_down_to_the_step():
    verdict = assess(buy(price="63123.456"), state(), LIMITS, BTC)

    assert verdict.approved, verdict.reason
    assert verdict.price == D("63123.45")
    # 100 / 63123.45 = 0.0015842... -> 0.00158 (step 0.00001), never 0.00159.
    assert verdict.amount == D("0.00158")
    assert verdict.cost == D("0.00158") * D("63123.45") == D("99.735051")
    assert verdict.cost <= LIMITS.max_order_quote


def test_doge_amount_is_whole_coins():
    verdict = assess(buy(price="0.1234567", symbol="DOGE/USDT", confidence=0.0), state(), LIMITS, DOGE)

    assert verdict.approved, verdict.reason
    assert verdict.price == D("0.12345")
    # 20 USDT / 0.12345 = 162.0089 -> 162 DOGE.
    assert verdict.amount == D("162")
    assert verdict.cost == D("19.99890")


def test_an_amount_rounding_below_the_minimum_order_is_rejected_not_rounded_up():
    # 5 USDT of DOGE at 0.3 is 16.67 DOGE -> 16 DOGE = 4.8 USDT, below both minimums.
    tiny = replace(LIMITS, max_order_quote=D("5"))
    verdict = assess(buy(price="0.3", symbol="DOGE/USDT"), state(), tiny, DOGE)

    assert not verdict.approved
    assert verdict.amount == 0
    assert not check(verdict, "order_size").passed
    assert "costs 4.8" in check(verdict, "order_size").detail
    assert check(verdict, "market_min_cost").detail == "cost 4.8 USDT, market minimum 5"
    assert not check(verdict, "market_min_cost").passed


def test_an_amount_below_the_market_minimum_amount_is_rejected():
    strict = replace(BTC, min_amount=D("0.001"))
    # 20 USDT at 50000 is 0.0004 BTC; the market wants 0.001 and it is not rounded up.
    verdict = assess(buy(confidence=0.0), state(), LIMITS, strict)
    assert not verdict.approved
    assert verdict.reason == "market_min_amount: 0.0004 BTC, market minimum 0.001"

    at_min = assess(buy(confidence=0.0), state(), LIMITS, replace(BTC, min_amount=D("0.0004")))
    assert at_min.approved and at_min.amount == D("0.0004")


def test_market_minimum_cost_above_ours_rejects_and_at_it_passes():
    lenient = replace(LIMITS, min_order_quote=D("1"))
    # 0.00009 BTC at 50000 = 4.5 USDT: fine for us, below Binance's 5 USDT notional.
    below = assess(buy(), state(), replace(lenient, max_order_quote=D("4.5")), BTC)
    assert not below.approved
    assert below.reason == "market_min_cost: cost 4.5 USDT, market minimum 5"
    at_min = assess(buy(), state(), replace(lenient, max_order_quote=D("5")), BTC)
    assert at_min.approved and at_min.cost == D("5")


def test_an_amount_above_the_market_maximum_is_rejected():
    capped = replace(BTC, max_amount=D("0.00199"))
    verdict = assess(buy(), state(), LIMITS, capped)  # 0.002 BTC
    assert verdict.reason == "market_max_amount: 0.002 BTC, market maximum 0.00199"
    assert assess(buy(), state(), LIMITS, replace(BTC, max_amount=D("0.002"))).approved


def test_unknown_market_precision_rejects_with_every_check_listed():
    unknown = replace(BTC, amount_step=None)
    verdict = assess(buy(), state(), LIMITS, unknown)

    assert not verdict.approved
    assert verdict.reason.startswith("market_precision: BTC/USDT: market precision unknown")
    assert tuple(c.name for c in verdict.checks) == BUY_CHECKS
    assert check(verdict, "kill_switch").passed  # the gates are still evaluated for the audit
    assert check(verdict, "order_size").detail.startswith("not evaluated")


def test_a_price_below_one_tick_is_rejected():
    verdict = assess(buy(price="0.000001", symbol="DOGE/USDT"), state(), LIMITS, DOGE)
    assert verdict.reason == "price: price=0.000001 rounds down to 0 at tick 0.00001"


# --- bad input is a rejection, wrong types raise -------------------------------------------


@pytest.mark.parametrize(
    ("price", "confidence", "reason"),
    [
        ("NaN", 1.0, "price: price=NaN must be a finite number above 0"),
        ("-1", 1.0, "price: price=-1 must be a finite number above 0"),
        ("0", 1.0, "price: price=0 must be a finite number above 0"),
        ("Infinity", 1.0, "price: price=Infinity must be a finite number above 0"),
        ("50000", 1.5, "confidence: confidence=1.5 must be within [0, 1]"),
        ("50000", -0.1, "confidence: confidence=-0.1 must be within [0, 1]"),
        ("50000", float("nan"), "confidence: confidence=nan must be within [0, 1]"),
    ],
)
def test_bad_price_or_confidence_is_rejected_with_the_field_named(price, confidence, reason):
    verdict = assess(buy(price=price, confidence=confidence), state(), LIMITS, BTC)

    assert not verdict.approved
    assert verdict.reason == reason
    assert tuple(c.name for c in verdict.checks) == BUY_CHECKS
    assert (verdict.amount, verdict.cost) == (0, 0)


def test_programmer_errors_raise_naming_the_field():
    with pytest.raises(TypeError, match="OrderRequest.price must be a decimal.Decimal, got float"):
        OrderRequest("BTC/USDT", "buy", 50000.0, 1.0)
    with pytest.raises(ValueError, match="OrderRequest.side='short'"):
        OrderRequest("BTC/USDT", "short", D("50000"), 1.0)
    with pytest.raises(ValueError, match="RiskState.now=.*timezone-aware"):
        RiskState((), 0, D(0), None, datetime(2024, 9, 6, 12, 0))
    with pytest.raises(ValueError, match=r"Position\(BTC/USDT\).amount=-1"):
        state(held("BTC/USDT", "-1", "50000"))
    with pytest.raises(ValueError, match="but the market rules are for 'DOGE/USDT'"):
        assess(buy(), state(), LIMITS, DOGE)
    with pytest.raises(ValueError, match="RiskLimits.min_order_quote=200 is above max_order_quote=100"):
        replace(LIMITS, min_order_quote=D("200"))
    with pytest.raises(ValueError, match="RiskLimits.kelly_fraction=1.5: must be at most 1"):
        replace(LIMITS, kelly_fraction=D("1.5"))
    with pytest.raises(TypeError, match="RiskLimits.max_order_quote must be a decimal.Decimal"):
        replace(LIMITS, max_order_quote=100.0)


# --- positions and exposure -------------------------------------------------------------------


def test_max_open_positions_at_the_limit_rejects_a_new_symbol():
    two = state(held("ETH/USDT", "0.02", "2500"), held("SOL/USDT", "0.5", "140"))
    three = state(held("ETH/USDT", "0.02", "2500"), held("SOL/USDT", "0.5", "140"), held("XRP/USDT", "100", "0.5"))

    assert assess(buy(), two, LIMITS, BTC).approved
    verdict = assess(buy(), three, LIMITS, BTC)
    assert not verdict.approved
    assert verdict.reason == "open_positions: 3 open positions, limit 3"


def test_buying_a_symbol_already_held_is_rejected_without_pyramiding():
    verdict = assess(buy(), state(held("BTC/USDT", "0.0005", "48000")), LIMITS, BTC)

    assert not verdict.approved
    assert verdict.reason == "open_positions: already in position: 0.0005 BTC/USDT held, adding is not allowed"


def test_symbol_exposure_caps_an_added_position_and_rejects_when_no_room_is_left():
    pyramiding = replace(LIMITS, allow_adding_to_position=True)
    # 0.0012 BTC at 50000 = 60 USDT held: 40 of room under the 100 USDT symbol limit.
    verdict = assess(buy(), state(held("BTC/USDT", "0.0012", "50000")), pyramiding, BTC)
    assert verdict.approved, verdict.reason
    assert verdict.cost == D("40")
    assert "capped by symbol_exposure to 40" in check(verdict, "order_size").detail

    # 95 USDT held: room 5 = the minimum order, still allowed; 95.01 leaves 4.99: rejected.
    exactly = assess(buy(), state(held("BTC/USDT", "0.0019", "50000")), pyramiding, BTC)
    assert exactly.approved and exactly.cost == D("5")
    over = assess(buy(), state(held("BTC/USDT", "0.0019", "50005.26")), pyramiding, BTC)
    assert not over.approved
    assert over.reason.startswith("symbol_exposure: 95.009994 of 100 USDT in BTC/USDT: room 4.990006")


def test_total_exposure_caps_the_order_and_rejects_without_room_for_the_minimum():
    # 280 USDT in three other symbols (limit raised to 4 positions so only exposure binds).
    four = replace(LIMITS, max_open_positions=4)
    busy = state(held("ETH/USDT", "0.04", "2500"), held("SOL/USDT", "0.5", "140"), held("XRP/USDT", "220", "0.5"))
    verdict = assess(buy(), busy, four, BTC)
    assert verdict.approved, verdict.reason
    assert verdict.cost == D("20")  # 300 - 280

    full = state(held("ETH/USDT", "0.04", "2500"), held("SOL/USDT", "0.5", "140"), held("XRP/USDT", "250.02", "0.5"))
    rejected = assess(buy(), full, four, BTC)
    assert rejected.reason.startswith("total_exposure: 295.01 of 300 USDT in all positions: room 4.99")


def test_free_quote_balance_caps_the_buy():
    assert assess(buy(), state(free_quote="30"), LIMITS, BTC).cost == D("30")
    assert assess(buy(), state(free_quote="4.99"), LIMITS, BTC).reason.startswith("free_quote: 4.99 USDT free")


# --- daily limits, kill switch, cooldown -------------------------------------------------------


def test_daily_trade_limit_rejects_buys_at_eight():
    assert assess(buy(), state(trades_today=7), LIMITS, BTC).approved
    verdict = assess(buy(), state(trades_today=8), LIMITS, BTC)
    assert verdict.reason == "daily_trade_limit: daily trade limit reached: 8 trades today, limit 8"
    assert RiskLimits(D("5"), D("100"), D("100"), D("300"), D("50"), timedelta(0)).daily_trade_limit == 8


def test_kill_switch_trips_at_the_daily_loss_limit():
    assert assess(buy(), state(pnl="-49.99"), LIMITS, BTC).approved
    verdict = assess(buy(), state(pnl="-50"), LIMITS, BTC)
    assert verdict.reason == "kill_switch: kill switch active: realized PnL today -50, limit -50"


def test_cooldown_after_a_loss():
    cooldown_end = NOW - LIMITS.loss_cooldown
    assert assess(buy(), state(last_loss_at=cooldown_end), LIMITS, BTC).approved  # exactly over
    verdict = assess(buy(), state(last_loss_at=cooldown_end + timedelta(seconds=1)), LIMITS, BTC)
    assert verdict.reason == "loss_cooldown: cooling down after a loss until 2024-09-06T12:00:01+00:00"


# --- sells ---------------------------------------------------------------------------------------


def test_a_sell_closes_the_whole_position_even_under_every_halt():
    halted = state(
        held("BTC/USDT", "0.0012345", "52000"), trades_today=8, pnl="-80", last_loss_at=NOW - timedelta(minutes=1)
    )
    assert not assess(buy(symbol="BTC/USDT"), halted, replace(LIMITS, allow_adding_to_position=True), BTC).approved

    verdict = assess(sell(price="49999.999"), halted, LIMITS, BTC)

    assert verdict.approved, verdict.reason
    assert (verdict.amount, verdict.price) == (D("0.00123"), D("49999.99"))  # both rounded down
    assert verdict.cost == D("0.00123") * D("49999.99")
    assert tuple(c.name for c in verdict.checks) == SELL_CHECKS
    assert "kill switch active" in check(verdict, "kill_switch").detail
    assert "sells still allowed" in check(verdict, "kill_switch").detail
    assert "sells still allowed" in check(verdict, "daily_trade_limit").detail
    assert "sells still allowed" in check(verdict, "loss_cooldown").detail


def test_selling_without_a_position_is_rejected():
    verdict = assess(sell(), state(held("ETH/USDT", "0.02", "2500")), LIMITS, BTC)
    assert verdict.reason == "position: no open BTC/USDT position to sell (spot: no shorting)"


def test_a_dust_position_below_the_market_minimum_cannot_be_sold():
    verdict = assess(sell(price="50000"), state(held("BTC/USDT", "0.00009", "50000")), LIMITS, BTC)
    assert verdict.reason == "market_min_cost: cost 4.5 USDT, market minimum 5"


def test_verdict_record_is_exact_and_json_ready():
    record = assess(buy(price="63123.456"), state(), LIMITS, BTC).as_record()
    assert (record["approved"], record["amount"], record["price"], record["cost"]) == (
        True,
        "0.00158",
        "63123.45",
        "99.735051",
    )
    assert [c["name"] for c in record["checks"]] == list(BUY_CHECKS)
    assert all(c["passed"] for c in record["checks"])


# --- markets from ccxt ---------------------------------------------------------------------------


def test_precision_modes_match_ccxt():
    from ccxt.base import decimal_to_precision as ccxt_precision

    assert (risk.DECIMAL_PLACES, risk.SIGNIFICANT_DIGITS, risk.TICK_SIZE) == (
        ccxt_precision.DECIMAL_PLACES,
        ccxt_precision.SIGNIFICANT_DIGITS,
        ccxt_precision.TICK_SIZE,
    )


def test_market_rules_from_ccxt_binance_markets_loaded_from_the_local_server():
    with FakeBinance() as server:
        exchange = make_ccxt_exchange("binance", api_urls={"*": server.url})
        exchange.timeout = 2000
        markets = exchange.load_markets()

    btc = MarketRules.from_ccxt_market(markets["BTC/USDT"], exchange.precisionMode)
    doge = MarketRules.from_ccxt_market(markets["DOGE/USDT"], exchange.precisionMode)

    assert exchange.precisionMode == ccxt.TICK_SIZE
    assert btc == BTC
    assert doge == DOGE
    # The market read from ccxt sizes exactly like the hand-written one.
    assert assess(buy(price="63123.456"), state(), LIMITS, btc) == assess(buy(price="63123.456"), state(), LIMITS, BTC)
    with pytest.raises(ValueError, match="BTC/USDT:USDT: the risk manager sizes spot orders; this is a swap market"):
        MarketRules.from_ccxt_market(markets["BTC/USDT:USDT"], exchange.precisionMode)


def test_market_rules_from_decimal_places_and_significant_digits_markets():
    market = {
        "symbol": "ABC/USDT",
        "spot": True,
        "type": "spot",
        "precision": {"amount": 3, "price": 2},
        "limits": {"amount": {"min": 0.001, "max": None}, "cost": {"min": 10}},
    }

    places = MarketRules.from_ccxt_market(market, risk.DECIMAL_PLACES)
    assert (places.amount_step, places.price_tick, places.min_amount, places.max_amount, places.min_cost) == (
        D("0.001"),
        D("0.01"),
        D("0.001"),
        None,
        D("10"),
    )

    # Significant digits have no fixed step: orders on such a market are refused, not guessed.
    digits = MarketRules.from_ccxt_market(market, risk.SIGNIFICANT_DIGITS)
    assert (digits.amount_step, digits.price_tick) == (None, None)
    refused = assess(OrderRequest("ABC/USDT", "buy", D("20"), 1.0), state(), LIMITS, digits)
    assert refused.reason.startswith("market_precision: ABC/USDT: market precision unknown")
    with pytest.raises(ValueError, match="unknown ccxt precision mode 7"):
        MarketRules.from_ccxt_market(market, 7)
