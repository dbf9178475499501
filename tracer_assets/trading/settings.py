"""The trading domain's settings: the live switches, order sizes, the deciders' thresholds, the
paper account, risk limits and signal ages. The exchange keys are listed in the table but are not
settings: they are read through Dagster's EnvVar where used (trading/secrets.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from tracer_assets.config import (
    Row,
    SettingsError,
    choice,
    defaults,
    flag,
    fraction,
    not_negative,
    number,
    path,
    positive,
    text,
)

TABLE: tuple[Row, ...] = (
    ("DRY_RUN", "1", "Seed flag: 1 means paper trading. Live orders need `DRY_RUN=0` and the other live conditions."),
    ("FORCE_DRY", "0", "Seed flag: 1 forces paper trading whatever else is set."),
    ("ENABLE_LIVE", "0", "Seed flag: first of the two live switches."),
    ("IS_LIVE", "0", "Seed flag: second of the two live switches."),
    (
        "TRACER_EXCHANGE_API_KEY",
        "(none)",
        (
            "Secret. The exchange API key for live orders, read through Dagster's `EnvVar` and only in LIVE mode; "
            "never logged or stored."
        ),
    ),
    (
        "TRACER_EXCHANGE_SECRET",
        "(none)",
        "Secret. The exchange API secret for live orders, like `TRACER_EXCHANGE_API_KEY`.",
    ),
    ("TRACER_SANDBOX", "0", "1: live orders go to the exchange's sandbox (testnet) through ccxt's sandbox mode."),
    (
        "TRACER_DECIDER",
        "strategy",
        (
            "`strategy` (the kept strategy with the best out-of-sample score on the timeframe the macro selection "
            "picked, read at the newest closed candle: its entry buys with the spec's stops, its exit sells), "
            "`rules` (thresholds `TB_MIN_SIGNAL_QUALITY`, `TB_MIN_CONVICTION_SCORE`) or `llm` "
            "(the anthropic client; key from `ANTHROPIC_API_KEY` through Dagster's `EnvVar`)."
        ),
    ),
    (
        "ORDER_AMOUNT",
        "MAX_ORDER_AMOUNT",
        (
            "The order size (quote currency) the strategy and rules deciders ask for; "
            "the risk manager sizes within the smaller of it (or the LLM's size) and `MAX_ORDER_AMOUNT`, "
            "and Kelly scales it down: at 10, half Kelly of a typical edge fell below `MIN_ALLOWED_ORDER_AMOUNT`."
        ),
    ),
    ("MIN_ALLOWED_ORDER_AMOUNT", "5", "Smallest order size in quote currency; smaller orders are refused."),
    ("MAX_ORDER_AMOUNT", "100", "Largest order size in quote currency."),
    ("MACRO_MIN_WIN_RATE", "0.2", "Win rate below which backtest stats never read as a Bull regime."),
    ("TB_MIN_SIGNAL_QUALITY", "6", "Rules decider: least signal quality (0-10) to act."),
    ("TB_MIN_CONVICTION_SCORE", "5", "Rules decider: least conviction score to act."),
    (
        "SIM_PRICE",
        "(none: market price)",
        "Paper broker: the price an order is sized at when no market price of its symbol is known "
        "(no candle stored yet); it still fills at the next candle's open.",
    ),
    ("SIM_BASE_BALANCE", "0", "Paper broker: starting base-currency balance."),
    ("SIM_QUOTE_BALANCE", "10000", "Paper broker: starting quote-currency balance."),
    (
        "TRACER_LOG_DIR",
        ".tracer/logs",
        (
            "The seed's audit files: `macro_ccxt_orders.log` (tab-separated), "
            "`macro_ccxt_orders_audit.jsonl`, `macro_diagnostics.json`."
        ),
    ),
    (
        "TRACER_FEE_RATE",
        "0.001",
        "Paper broker: fee on every fill, as a fraction of the notional, taken in the quote currency.",
    ),
    ("TRACER_SLIPPAGE_BPS", "5", "Paper broker: adverse slippage on every fill, in basis points."),
    ("TRACER_MAX_OPEN_POSITIONS", "3", "Risk: most positions open at once."),
    ("TRACER_MAX_SYMBOL_EXPOSURE", "MAX_ORDER_AMOUNT", "Risk: most quote currency held in one symbol (at cost)."),
    ("TRACER_MAX_TOTAL_EXPOSURE", "3 x MAX_ORDER_AMOUNT", "Risk: most quote currency held over all symbols (at cost)."),
    ("TRACER_DAILY_TRADE_LIMIT", "8", "Risk: most new positions per UTC day."),
    (
        "TRACER_DAILY_LOSS_LIMIT",
        "50",
        "Risk: realized loss in a UTC day (quote currency) at which new risk halts; positions can still close.",
    ),
    ("TRACER_LOSS_COOLDOWN_MINUTES", "30", "Risk: no new position this long after a losing trade."),
    (
        "TRACER_KELLY_FRACTION",
        "0.5",
        (
            "Risk: a buy's size is multiplied by this fraction of full Kelly, from the selected strategy's "
            "out-of-sample win rate and payoff (profit factor); no edge means no buy. Half Kelly of a typical "
            "edge is 5-20% of the order (5-20 USDT of the default 100), which must clear `MIN_ALLOWED_ORDER_AMOUNT`."
        ),
    ),
    (
        "TRACER_MAX_SIGNAL_AGE_SECONDS",
        "2 base candles (600 on 5m)",
        (
            "A signal event whose newest candle closed longer ago than this, on the exchange's clock, is not traded: "
            "HOLD at decision time, refused at execution."
        ),
    ),
    (
        "TRACER_MAX_PRICE_DEVIATION",
        "0.05",
        (
            "Live orders: refused when the decision's price differs from a fresh ticker's last price "
            "by more than this fraction."
        ),
    ),
)
DEFAULTS = defaults(TABLE)


@dataclass(frozen=True)
class TradingSettings:
    dry_run: bool
    force_dry: bool
    enable_live: bool
    is_live: bool
    sandbox: bool
    decider: str
    order_amount: Decimal
    min_allowed_order_amount: Decimal
    max_order_amount: Decimal
    macro_min_win_rate: float
    tb_min_signal_quality: float
    tb_min_conviction_score: float
    sim_price: Decimal | None
    sim_base_balance: Decimal
    sim_quote_balance: Decimal
    log_dir: Path
    fee_rate: Decimal
    slippage_bps: Decimal
    max_open_positions: int
    max_symbol_exposure: Decimal
    max_total_exposure: Decimal
    daily_trade_limit: int
    daily_loss_limit: Decimal
    loss_cooldown_minutes: float
    kelly_fraction: Decimal
    max_signal_age_seconds: float
    max_price_deviation: Decimal

    @property
    def live_flags_on(self) -> bool:
        """The flag half of the live conditions (docs/architecture.md); the exchange keys are the other."""
        return self.enable_live and self.is_live and not self.force_dry and not self.dry_run


def _decimal(env: Mapping[str, str], name: str, default: str) -> Decimal:
    return number(env, name, default, Decimal)


def load(env: Mapping[str, str], base_timeframe_seconds: int) -> TradingSettings:
    """`base_timeframe_seconds`: the market's base candle, in which the signal age is measured."""
    max_order = positive("MAX_ORDER_AMOUNT", _decimal(env, "MAX_ORDER_AMOUNT", DEFAULTS["MAX_ORDER_AMOUNT"]))
    sim_price = text(env, "SIM_PRICE", None)
    settings = TradingSettings(
        dry_run=flag(env, "DRY_RUN", DEFAULTS["DRY_RUN"] == "1"),
        force_dry=flag(env, "FORCE_DRY", DEFAULTS["FORCE_DRY"] == "1"),
        enable_live=flag(env, "ENABLE_LIVE", DEFAULTS["ENABLE_LIVE"] == "1"),
        is_live=flag(env, "IS_LIVE", DEFAULTS["IS_LIVE"] == "1"),
        sandbox=flag(env, "TRACER_SANDBOX", DEFAULTS["TRACER_SANDBOX"] == "1"),
        decider=choice(env, "TRACER_DECIDER", DEFAULTS["TRACER_DECIDER"], ("strategy", "rules", "llm")),
        order_amount=positive("ORDER_AMOUNT", _decimal(env, "ORDER_AMOUNT", str(max_order))),
        min_allowed_order_amount=positive(
            "MIN_ALLOWED_ORDER_AMOUNT", _decimal(env, "MIN_ALLOWED_ORDER_AMOUNT", DEFAULTS["MIN_ALLOWED_ORDER_AMOUNT"])
        ),
        max_order_amount=max_order,
        macro_min_win_rate=number(env, "MACRO_MIN_WIN_RATE", DEFAULTS["MACRO_MIN_WIN_RATE"], float),
        tb_min_signal_quality=number(env, "TB_MIN_SIGNAL_QUALITY", DEFAULTS["TB_MIN_SIGNAL_QUALITY"], float),
        tb_min_conviction_score=number(env, "TB_MIN_CONVICTION_SCORE", DEFAULTS["TB_MIN_CONVICTION_SCORE"], float),
        sim_price=None if sim_price is None else positive("SIM_PRICE", _decimal(env, "SIM_PRICE", sim_price)),
        sim_base_balance=not_negative(
            "SIM_BASE_BALANCE", _decimal(env, "SIM_BASE_BALANCE", DEFAULTS["SIM_BASE_BALANCE"])
        ),
        sim_quote_balance=not_negative(
            "SIM_QUOTE_BALANCE", _decimal(env, "SIM_QUOTE_BALANCE", DEFAULTS["SIM_QUOTE_BALANCE"])
        ),
        log_dir=path(env, "TRACER_LOG_DIR", DEFAULTS["TRACER_LOG_DIR"]),
        fee_rate=fraction(env, "TRACER_FEE_RATE", DEFAULTS["TRACER_FEE_RATE"], Decimal),
        slippage_bps=not_negative(
            "TRACER_SLIPPAGE_BPS", _decimal(env, "TRACER_SLIPPAGE_BPS", DEFAULTS["TRACER_SLIPPAGE_BPS"])
        ),
        max_open_positions=positive(
            "TRACER_MAX_OPEN_POSITIONS",
            number(env, "TRACER_MAX_OPEN_POSITIONS", DEFAULTS["TRACER_MAX_OPEN_POSITIONS"], int),
        ),
        # Derived defaults: one order's worth in one symbol, three in all.
        max_symbol_exposure=positive(
            "TRACER_MAX_SYMBOL_EXPOSURE", _decimal(env, "TRACER_MAX_SYMBOL_EXPOSURE", str(max_order))
        ),
        max_total_exposure=positive(
            "TRACER_MAX_TOTAL_EXPOSURE", _decimal(env, "TRACER_MAX_TOTAL_EXPOSURE", str(3 * max_order))
        ),
        daily_trade_limit=not_negative(
            "TRACER_DAILY_TRADE_LIMIT",
            number(env, "TRACER_DAILY_TRADE_LIMIT", DEFAULTS["TRACER_DAILY_TRADE_LIMIT"], int),
        ),
        daily_loss_limit=positive(
            "TRACER_DAILY_LOSS_LIMIT", _decimal(env, "TRACER_DAILY_LOSS_LIMIT", DEFAULTS["TRACER_DAILY_LOSS_LIMIT"])
        ),
        loss_cooldown_minutes=not_negative(
            "TRACER_LOSS_COOLDOWN_MINUTES",
            number(env, "TRACER_LOSS_COOLDOWN_MINUTES", DEFAULTS["TRACER_LOSS_COOLDOWN_MINUTES"], float),
        ),
        kelly_fraction=fraction(env, "TRACER_KELLY_FRACTION", DEFAULTS["TRACER_KELLY_FRACTION"], Decimal),
        # Derived default: two base candles past the newest candle's close.
        max_signal_age_seconds=positive(
            "TRACER_MAX_SIGNAL_AGE_SECONDS",
            number(env, "TRACER_MAX_SIGNAL_AGE_SECONDS", str(2 * base_timeframe_seconds), float),
        ),
        max_price_deviation=positive(
            "TRACER_MAX_PRICE_DEVIATION",
            fraction(env, "TRACER_MAX_PRICE_DEVIATION", DEFAULTS["TRACER_MAX_PRICE_DEVIATION"], Decimal),
        ),
    )
    _check(settings)
    return settings


def _check(settings: TradingSettings) -> None:
    if settings.max_symbol_exposure > settings.max_total_exposure:
        raise SettingsError(
            f"TRACER_MAX_SYMBOL_EXPOSURE={settings.max_symbol_exposure} is above "
            f"TRACER_MAX_TOTAL_EXPOSURE={settings.max_total_exposure}"
        )
    if settings.min_allowed_order_amount > settings.max_order_amount:
        raise SettingsError(
            f"MIN_ALLOWED_ORDER_AMOUNT={settings.min_allowed_order_amount} is above "
            f"MAX_ORDER_AMOUNT={settings.max_order_amount}"
        )
    if settings.order_amount > settings.max_order_amount:
        raise SettingsError(
            f"ORDER_AMOUNT={settings.order_amount} is above MAX_ORDER_AMOUNT={settings.max_order_amount}: "
            "the risk manager would never size an order that large; lower ORDER_AMOUNT or raise MAX_ORDER_AMOUNT"
        )
    if not 0 <= settings.macro_min_win_rate <= 1:
        raise SettingsError(f"MACRO_MIN_WIN_RATE={settings.macro_min_win_rate}: must lie in [0, 1]")
