"""`tracer-backtest`: backtest one strategy spec on one candle file; print metrics and trades as JSON.

    tracer-backtest --spec SPEC.json --candles FILE [--fee F] [--slippage-bps B]
    tracer-backtest --builtin ema_cross --candles BTC_USDT-1h.feather --param fast=15 --output run.json
    tracer-backtest --list-builtins

The candle file is freqtrade's layout (`PAIR-TF.feather`, `PAIR-TF.json`) or Parquet with a
`date` or `ts` column, read by `resources.replay_exchange.read_candle_file`. Its bars are used
as they are: nothing is resampled, so the file should hold the timeframe the spec was written
for. `--timeframe` (default: the spec's) only annualizes Sharpe and Sortino; a file whose name
or bar spacing says another timeframe draws a warning on stderr.

User errors (a missing or unreadable file, bad candles, an invalid spec, a bad option) exit
with status 2 and one line on stderr naming what was wrong, never a traceback. The JSON layout
is documented in docs/backtesting.md (section `tracer-backtest`). No Dagster here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

# numpy, polars, numba (the engine), pydantic and ccxt (the spec's timeframe check) take
# seconds to import: they are imported where first needed, after the checks that need none of
# them, so `--help` and a mistyped path answer at once.
if TYPE_CHECKING:
    import numpy as np
    import polars as pl

    from tracer_assets.research.engine import FillRules
    from tracer_assets.research.spec import StrategySpec

PROG = "tracer-backtest"
EXIT_OK = 0
EXIT_USAGE = 2
CANDLE_SUFFIXES: tuple[str, ...] = (".feather", ".json", ".parquet")  # what read_candle_file reads
# The file's own grid is not known in advance (a backtest may use any timeframe), so the
# validation's on-grid rule is run against one second, which every exchange candle satisfies.
_ANY_GRID = "1s"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MESSAGE = 400
DEFAULT_CAPITAL = 10_000.0  # metrics.DEFAULT_INITIAL_CAPITAL, repeated here to keep imports lazy


class UsageError(Exception):
    """A user error: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse would print the whole usage first; one line naming the problem is kinder.
        raise UsageError(f"{message} (see {PROG} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The command line of `tracer-backtest`."""
    parser = _Parser(
        prog=PROG,
        description="Backtest one strategy spec on one candle file (freqtrade .feather/.json or "
        "Parquet) and print the metrics and the trades as JSON.",
        epilog="Errors exit with status 2 and one line on stderr. See docs/backtesting.md.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--spec", metavar="SPEC.json", help="the strategy spec, a JSON file (docs/strategies.md)")
    source.add_argument("--builtin", metavar="NAME", help="a built-in strategy instead of --spec (see --list-builtins)")
    parser.add_argument("--candles", metavar="FILE", help="candle file: PAIR-TF.feather, PAIR-TF.json or .parquet")
    parser.add_argument(
        "--param",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="override a parameter's default, within the spec's range (repeatable)",
    )
    parser.add_argument(
        "--fee",
        type=float,
        metavar="F",
        help="fee per fill, a fraction of notional in [0, 1) (default: the engine's, 0.001 = 0.1%%)",
    )
    parser.add_argument(
        "--slippage-bps",
        type=float,
        default=0.0,
        metavar="B",
        help="adverse slippage per fill in basis points (default %(default)s)",
    )
    parser.add_argument(
        "--timeframe",
        metavar="TF",
        help="timeframe of the bars, for annualizing Sharpe and Sortino (default: the spec's)",
    )
    parser.add_argument(
        "--capital",
        type=float,
        metavar="QUOTE",
        help="initial capital in quote currency, for pnl and trade sizes (default 10000)",
    )
    parser.add_argument("--output", metavar="FILE", help="write the JSON to FILE instead of stdout")
    parser.add_argument("--list-builtins", action="store_true", help="list the built-in strategies and exit")
    return parser


def _one_line(text: object) -> str:
    """Error texts from polars/pydantic may span lines; the CLI promises one."""
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def iso_utc(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC, e.g. 2024-01-01T00:00:00Z (exact: integer arithmetic)."""
    return (_EPOCH + timedelta(milliseconds=int(ms))).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- inputs -------------------------------------------------------------------------------


def load_spec_argument(spec_path: str | None, builtin: str | None) -> tuple[StrategySpec, str]:
    """(spec, where it came from) for --spec PATH or --builtin NAME."""
    from tracer_assets.research.spec import SpecError, builtin_spec, load_spec

    if builtin is not None:
        try:
            return builtin_spec(builtin), f"builtin:{builtin}"
        except KeyError as error:
            raise UsageError(f"--builtin: {error.args[0]}") from None
    if spec_path is None:
        raise UsageError("one of --spec SPEC.json or --builtin NAME is required")
    path = check_input_file("--spec", Path(spec_path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--spec {path}: cannot read the file: {_one_line(error)}") from None
    try:
        return load_spec(text), str(path)
    except SpecError as error:
        raise UsageError(f"--spec {path}: invalid spec: {_one_line(error)}") from None


def _parse_number(raw: str, integer: bool) -> int | float:
    try:
        return int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"expected {kind}, got {raw!r}") from None


def parse_params(spec: StrategySpec, items: Sequence[str]) -> dict[str, int | float]:
    """`--param NAME=VALUE` items as {name: value}, each checked against the spec's range."""
    from tracer_assets.research.rules import check_parameter_value

    values: dict[str, int | float] = {}
    for item in items:
        name, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not name or not raw:
            raise UsageError(f"--param {item!r}: expected NAME=VALUE, e.g. --param fast=12")
        if name in values:
            raise UsageError(f"--param {name}: given twice")
        parameter = spec.parameters.get(name)
        if parameter is None:
            known = ", ".join(sorted(spec.parameters)) or "none"
            raise UsageError(f"--param {item}: spec {spec.name!r} has no parameter {name!r} (parameters: {known})")
        try:
            value = _parse_number(raw, parameter.is_integer)
            values[name] = check_parameter_value(spec, name, value)
        except ValueError as error:
            raise UsageError(f"--param {item}: {_one_line(error)}") from None
    return values


def fill_rules(spec: StrategySpec, fee: float | None, slippage_bps: float) -> FillRules:
    """The engine's fill rules: fee (None: the engine's default) and slippage from the options,
    sizing from the spec."""
    from tracer_assets.research.engine import FillRules

    fee = FillRules.fee if fee is None else fee
    for option, kwargs in (("--fee", {"fee": fee}), ("--slippage-bps", {"slippage_bps": slippage_bps})):
        try:
            FillRules(**kwargs)
        except ValueError as error:
            raise UsageError(f"{option}: {error}") from None
    try:
        return FillRules(
            fee=fee,
            slippage_bps=slippage_bps,
            position_fraction=spec.position_fraction,
            pyramiding=spec.pyramiding,
        )
    except ValueError as error:  # e.g. pyramiding, which the engine does not simulate
        raise UsageError(f"spec {spec.name!r}: {error}") from None


def check_timeframe(option: str, timeframe: str) -> str:
    from tracer_assets.market.timeframes import timeframe_seconds

    try:
        timeframe_seconds(timeframe)
    except ValueError as error:
        raise UsageError(f"{option}: {error}") from None
    return timeframe


def check_output_path(output: str | None) -> Path | None:
    """The --output path, refused before the run when it cannot be written (a folder, or a
    missing parent folder)."""
    if output is None:
        return None
    path = Path(output)
    if path.is_dir():
        raise UsageError(f"--output {path}: is a directory")
    if not path.parent.is_dir():
        raise UsageError(f"--output {path}: its folder {path.parent} does not exist")
    return path


def check_capital(capital: float) -> float:
    if not (math.isfinite(capital) and capital > 0):
        raise UsageError(f"--capital {capital!r}: must be a positive finite amount of quote currency")
    return capital


def check_input_file(option: str, path: Path) -> Path:
    """`path` if it is an existing file, else a UsageError naming the option."""
    if not path.exists():
        raise UsageError(f"{option} {path}: no such file")
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory, not a file")
    return path


def check_candle_path(path: Path) -> Path:
    check_input_file("--candles", path)
    if path.suffix not in CANDLE_SUFFIXES:
        raise UsageError(
            f"--candles {path}: unsupported file type {path.suffix or '(none)'!r}; expected "
            f"{', '.join(CANDLE_SUFFIXES)} (freqtrade's layout, or Parquet with a date or ts column)"
        )
    return path


def load_candles(path: Path) -> pl.DataFrame:
    """The candle file as ms/open/high/low/close/volume, refused unless every candle is sane
    and the timestamps strictly increase (the error names the timestamp and the rule)."""
    import polars as pl

    from tracer_assets.market.candles import RULES, CandleValidationError, validate_candles
    from tracer_assets.research.spec import PRICE_COLUMNS
    from tracer_assets.resources.replay_exchange import read_candle_file

    check_candle_path(path)
    try:
        frame = read_candle_file(path)
    except ValueError as error:  # names the file and what the reader choked on
        raise UsageError(f"--candles: {_one_line(error)}") from None
    if frame.is_empty():
        raise UsageError(f"--candles {path}: the file holds no candles")
    stored = frame.select(
        pl.lit(path.name).alias("symbol"),
        pl.lit(_ANY_GRID).alias("timeframe"),
        pl.from_epoch("ms", time_unit="ms").cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("ts"),
        *PRICE_COLUMNS,
    )
    try:
        validate_candles(stored)
    except CandleValidationError as error:
        first = error.violations[0]
        when = first.ts.strftime("%Y-%m-%dT%H:%M:%SZ") if first.ts else "?"
        rows = f" ({first.rows} rows)" if first.rows > 1 else ""
        others = len(error.violations) - 1
        more = f"; and {others} more problem{'s' if others > 1 else ''}" if others else ""
        raise UsageError(
            f"--candles {path}: candle at {when}: {RULES[first.rule]} [{first.rule}]{rows}: {first.detail}{more}"
        ) from None
    return frame


def file_timeframe(path: Path) -> str | None:
    """The timeframe a freqtrade-style file name states (BTC_USDT-5m.feather -> '5m'), or None."""
    from tracer_assets.market.timeframes import timeframe_seconds
    from tracer_assets.resources.replay_exchange import CANDLE_FILE_NAME

    match = CANDLE_FILE_NAME.match(path.name)
    if match is None:
        return None
    try:
        timeframe_seconds(match["tf"])
    except ValueError:
        return None
    return match["tf"]


def timeframe_warnings(path: Path, ms: np.ndarray, timeframe: str, explicit: bool) -> list[str]:
    """Warnings when the file's name or bar spacing says another timeframe than the one used."""
    import numpy as np

    from tracer_assets.market.timeframes import timeframe_seconds

    used = timeframe_seconds(timeframe)
    chosen = f"--timeframe {timeframe}" if explicit else f"the spec's timeframe {timeframe}"
    named = file_timeframe(path)
    if named is not None and timeframe_seconds(named) != used:
        advice = "" if explicit else f"; pass --timeframe {named} if the {named} bars are what you mean to test"
        return [
            f"warning: {path.name} holds {named} candles by its name, but Sharpe and Sortino are "
            f"annualized for {chosen} (the bars are used as they are, never resampled){advice}"
        ]
    if len(ms) >= 2:
        spacing = float(np.median(np.diff(ms))) / 1000.0
        if spacing != used:
            return [
                f"warning: the candles of {path.name} are {spacing:g} s apart (median), but Sharpe and "
                f"Sortino are annualized for {chosen} ({used} s)"
            ]
    return []


# --- the backtest -------------------------------------------------------------------------


def backtest_report(
    spec: StrategySpec,
    candles: pl.DataFrame,
    params: Mapping[str, int | float],
    rules: FillRules,
    timeframe: str,
    capital: float = DEFAULT_CAPITAL,
    spec_source: str = "",
    candles_file: str = "",
) -> dict[str, Any]:
    """Backtest `spec` with `params` (missing ones: the defaults) over `candles` (ms + OHLCV, in
    time order) and return the report the CLI prints: spec, candles, fill_rules, metrics, trades."""
    import numpy as np

    from tracer_assets.research.engine import EXIT_REASON_NAMES, simulate
    from tracer_assets.research.metrics import metrics
    from tracer_assets.research.rules import evaluate, resolve_combo
    from tracer_assets.research.spec import PRICE_COLUMNS

    combo = resolve_combo(spec, params)
    columns = {name: candles[name].to_numpy() for name in PRICE_COLUMNS}
    signals = evaluate(spec, columns, [combo])
    result = simulate(
        columns["open"],
        columns["high"],
        columns["low"],
        columns["close"],
        signals.entries,
        signals.exits,
        signals.stop_loss,
        signals.take_profit,
        signals.trailing_stop,
        rules=rules,
    )
    row = metrics(result, timeframe, capital).drop("combo").row(0, named=True)
    ms = candles["ms"].to_numpy()
    spacing = np.diff(ms)
    gaps = int((spacing > np.median(spacing)).sum()) if spacing.size else 0
    trades = [
        {
            "entry_time": iso_utc(ms[entry]),
            "exit_time": iso_utc(ms[exit_]),
            "entry_bar": entry,
            "exit_bar": exit_,
            "entry_price": entry_price,
            "exit_price": exit_price,
            "size": size * capital,  # base units bought
            "return": trade_return,
            "pnl": pnl * capital,  # quote, after both fees
            "exit_reason": EXIT_REASON_NAMES[reason],
        }
        for entry, exit_, entry_price, exit_price, size, trade_return, pnl, reason in zip(
            result.entry_idx.tolist(),
            result.exit_idx.tolist(),
            result.entry_price.tolist(),
            result.exit_price.tolist(),
            result.size.tolist(),
            result.return_.tolist(),
            result.pnl.tolist(),
            result.exit_reason.tolist(),
        )
    ]
    return {
        "spec": {
            "name": spec.name,
            "hash": spec.content_hash(),
            "source": spec_source,
            "timeframe": spec.timeframe,
            "parameters": combo,
        },
        "candles": {
            "file": candles_file,
            "bars": candles.height,
            "first": iso_utc(ms[0]),
            "last": iso_utc(ms[-1]),
            "timeframe": timeframe,
            "gaps": gaps,
        },
        "fill_rules": {
            "fee": rules.fee,
            "slippage_bps": rules.slippage_bps,
            "position_fraction": rules.position_fraction,
            "initial_capital": capital,
        },
        "metrics": row,
        "trades": trades,
    }


def _json_safe(value: Any) -> Any:
    """NaN and inf become null, so the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def report_json(report: Mapping[str, Any]) -> str:
    return json.dumps(_json_safe(report), indent=2, allow_nan=False)


def list_builtins_text() -> str:
    from tracer_assets.research.spec import builtin_specs

    specs = builtin_specs()
    width = max(len(spec.name) for spec in specs)
    return "\n".join(f"{spec.name:<{width}}  {spec.timeframe:<4} {spec.description}" for spec in specs)


# --- main ---------------------------------------------------------------------------------


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_builtins:
        print(list_builtins_text())
        return EXIT_OK
    if args.spec is None and args.builtin is None:
        raise UsageError("one of --spec SPEC.json or --builtin NAME is required")
    if args.candles is None:
        raise UsageError("--candles FILE is required")
    # Checks that need no heavy import first: a mistyped path or amount answers at once.
    path = check_candle_path(Path(args.candles))
    if args.spec is not None:
        check_input_file("--spec", Path(args.spec))
    output = check_output_path(args.output)
    capital = check_capital(DEFAULT_CAPITAL if args.capital is None else args.capital)

    spec, spec_source = load_spec_argument(args.spec, args.builtin)
    params = parse_params(spec, args.param)
    rules = fill_rules(spec, args.fee, args.slippage_bps)
    timeframe = check_timeframe("--timeframe", args.timeframe) if args.timeframe else spec.timeframe
    candles = load_candles(path)
    for warning in timeframe_warnings(path, candles["ms"].to_numpy(), timeframe, args.timeframe is not None):
        print(f"{PROG}: {warning}", file=sys.stderr)
    report = backtest_report(spec, candles, params, rules, timeframe, capital, spec_source, str(path))
    text = report_json(report)
    if output is None:
        print(text)
    else:
        try:
            output.write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            raise UsageError(f"--output {output}: cannot write: {_one_line(error)}") from None
        print(f"{PROG}: wrote {output} ({len(report['trades'])} trades)", file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `tracer-backtest`; returns the exit status."""
    try:
        return _run(argv)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `tracer-backtest ... | head`: the reader left, nothing is wrong
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
