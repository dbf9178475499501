"""`tracer-backtest`, run as the installed console script: on the bundled BTC/USDT 5m Parquet
and on freqtrade-layout .feather and .json files cut from it. The printed trades must be the
ones the engine gives in-process, priced as the fill rules say; every user error exits 2 with
one line naming what was wrong."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.feather
import pytest

from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.research.cli import DEFAULT_CAPITAL, main
from tracer_assets.research.engine import EXIT_REASON_NAMES, FillRules, simulate
from tracer_assets.research.metrics import DEFAULT_INITIAL_CAPITAL
from tracer_assets.research.rules import evaluate, resolve_combo
from tracer_assets.research.spec import builtin_spec, builtin_specs, load_spec

pytestmark = pytest.mark.slow

SCRIPT = shutil.which("tracer-backtest", path=str(Path(sys.executable).parent))
BTC_5M = BUNDLED_REPLAY_DIR / "BTC_USDT-5m.parquet"
OHLCV = ("open", "high", "low", "close", "volume")

# An EMA cross written for 5m bars, without stops: every trade opens and closes at a bar's open
# (or the last close), so the slippage arithmetic can be checked against the candles alone.
EMA_CROSS_5M = {
    "name": "ema_cross_5m",
    "description": "EMA cross on 5m bars, no stops.",
    "timeframe": "5m",
    "parameters": {
        "fast": {"default": 12, "low": 4, "high": 20, "step": 4},
        "slow": {"default": 48, "low": 30, "high": 60, "step": 6},
    },
    "entry": {
        "cross_above": {
            "a": {"indicator": "ema", "params": {"window": "$fast"}},
            "b": {"indicator": "ema", "params": {"window": "$slow"}},
        }
    },
    "exit": {
        "cross_below": {
            "a": {"indicator": "ema", "params": {"window": "$fast"}},
            "b": {"indicator": "ema", "params": {"window": "$slow"}},
        }
    },
}


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    assert SCRIPT is not None, "tracer-backtest is not installed: pip install -e . --no-deps"
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=300)


def report_of(process: subprocess.CompletedProcess[str]) -> dict:
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))


def iso(stamp: datetime) -> str:
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def trade_keys(report: dict) -> list[tuple]:
    return [
        (t["entry_time"], t["exit_time"], t["entry_price"], t["exit_price"], t["exit_reason"]) for t in report["trades"]
    ]


def engine_trades(spec, candles: pl.DataFrame, params: dict, rules: FillRules) -> list[tuple]:
    """The same backtest in-process: (entry time, exit time, entry price, exit price, reason)."""
    columns = {name: candles[name].to_numpy() for name in OHLCV}
    signals = evaluate(spec, columns, [resolve_combo(spec, params)])
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
    dates = candles["date"].to_list()
    return [
        (iso(dates[entry]), iso(dates[exit_]), entry_price, exit_price, EXIT_REASON_NAMES[reason])
        for entry, exit_, entry_price, exit_price, reason in zip(
            result.entry_idx.tolist(),
            result.exit_idx.tolist(),
            result.entry_price.tolist(),
            result.exit_price.tolist(),
            result.exit_reason.tolist(),
        )
    ]


@pytest.fixture(scope="module")
def btc_5m() -> pl.DataFrame:
    return pl.read_parquet(BTC_5M)


@pytest.fixture(scope="module")
def default_run() -> tuple[subprocess.CompletedProcess[str], dict]:
    """The built-in ema_cross (written for 1h) on the whole bundled 5m file, all defaults."""
    process = run_cli("--builtin", "ema_cross", "--candles", BTC_5M)
    return process, report_of(process)


def test_parquet_run_prints_the_engines_trades(default_run, btc_5m):
    process, report = default_run
    spec = builtin_spec("ema_cross")
    # The spec says 1h, the file 5m: the user is told, once, and how to annualize for 5m.
    assert "BTC_USDT-5m.parquet holds 5m candles" in process.stderr
    assert "--timeframe 5m" in process.stderr
    assert "Traceback" not in process.stderr

    assert report["spec"]["name"] == "ema_cross"
    assert report["spec"]["hash"] == spec.content_hash()
    assert report["spec"]["parameters"] == {name: p.default for name, p in spec.parameters.items()}
    assert report["candles"]["bars"] == btc_5m.height
    assert report["candles"]["first"] == iso(btc_5m["date"].min())
    assert report["candles"]["last"] == iso(btc_5m["date"].max())
    assert report["candles"]["timeframe"] == "1h"
    assert report["fill_rules"]["fee"] == FillRules().fee
    assert report["fill_rules"]["initial_capital"] == DEFAULT_INITIAL_CAPITAL == DEFAULT_CAPITAL

    trades, row = report["trades"], report["metrics"]
    assert len(trades) == row["trades"] > 100
    assert trade_keys(report) == engine_trades(spec, btc_5m, {}, FillRules(fee=FillRules().fee))
    # Without slippage a signal entry fills exactly at its bar's open.
    opens = dict(zip(map(iso, btc_5m["date"].to_list()), btc_5m["open"].to_list()))
    assert all(t["entry_price"] == opens[t["entry_time"]] for t in trades)
    # Whole capital per trade: the trades' pnl adds up to the run's pnl, in quote currency.
    assert math.fsum(t["pnl"] for t in trades) == pytest.approx(row["pnl"], rel=1e-9)
    assert row["pnl"] == pytest.approx(row["total_return"] * DEFAULT_CAPITAL, rel=1e-12)
    assert {t["exit_reason"] for t in trades} <= {"signal", "stop", "end_of_data"}


def test_a_higher_fee_keeps_the_trades_and_costs_what_the_arithmetic_says(default_run):
    _, cheap = default_run
    process = run_cli("--builtin", "ema_cross", "--candles", BTC_5M, "--fee", "0.003")
    dear = report_of(process)
    assert dear["fill_rules"]["fee"] == 0.003
    assert trade_keys(dear) == trade_keys(cheap)  # fees never move a signal, a stop or a fill price
    for trade in dear["trades"]:
        expected = trade["exit_price"] * (1 - 0.003) / (trade["entry_price"] * (1 + 0.003)) - 1
        assert trade["return"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    compounded = math.prod(1 + t["return"] for t in dear["trades"]) - 1
    assert dear["metrics"]["total_return"] == pytest.approx(compounded, rel=1e-9)
    assert dear["metrics"]["total_return"] < cheap["metrics"]["total_return"]


def test_timeframe_option_annualizes_for_the_bars_and_output_writes_the_file(default_run, tmp_path):
    _, hourly = default_run
    target = tmp_path / "run.json"
    process = run_cli("--builtin", "ema_cross", "--candles", BTC_5M, "--timeframe", "5m", "--output", target)
    assert process.returncode == 0, process.stderr
    assert process.stdout == ""
    assert "warning" not in process.stderr
    assert str(target) in process.stderr
    report = json.loads(target.read_text())
    assert report["candles"]["timeframe"] == "5m"
    assert trade_keys(report) == trade_keys(hourly)
    assert report["metrics"]["total_return"] == hourly["metrics"]["total_return"]
    # 5m has 12 times the bars of 1h per year: Sharpe and Sortino scale by sqrt(12).
    for ratio in ("sharpe", "sortino"):
        assert report["metrics"][ratio] == pytest.approx(hourly["metrics"][ratio] * math.sqrt(12), rel=1e-9)


def test_freqtrade_feather_and_json_files_with_params_and_slippage(btc_5m, tmp_path):
    piece = btc_5m.slice(20_000, 4_000)
    feather = tmp_path / "BTC_USDT-5m.feather"
    # freqtrade's feather layout: date (UTC, ns) and OHLCV, written as pandas' to_feather does.
    table = piece.select(pl.col("date").cast(pl.Datetime("ns", "UTC")), *OHLCV).to_arrow()
    pyarrow.feather.write_feather(table, feather, compression="lz4")
    as_json = tmp_path / "BTC_USDT-5m.json"
    ms = piece["date"].dt.epoch("ms").to_list()
    rows = [[stamp, *values] for stamp, values in zip(ms, piece.select(OHLCV).rows())]
    as_json.write_text(json.dumps(rows))  # freqtrade's json layout: [[ms, o, h, l, c, v], ...]
    spec_file = tmp_path / "ema_cross_5m.json"
    spec_file.write_text(json.dumps(EMA_CROSS_5M))

    options = ("--spec", spec_file, "--param", "fast=8", "--param", "slow=36", "--fee", "0", "--slippage-bps", "20")
    runs = [run_cli(*options, "--candles", path) for path in (feather, as_json)]
    from_feather, from_json = (report_of(run) for run in runs)
    assert all("warning" not in run.stderr for run in runs)  # a 5m spec on a 5m file
    assert trade_keys(from_feather) == trade_keys(from_json)
    assert from_feather["metrics"] == from_json["metrics"]
    assert from_feather["spec"]["parameters"] == {"fast": 8, "slow": 36}
    assert from_feather["candles"]["bars"] == 4_000
    assert from_feather["candles"]["first"] == iso(piece["date"][0])
    assert from_feather["candles"]["last"] == iso(piece["date"][-1])

    spec = load_spec(EMA_CROSS_5M)
    expected = engine_trades(spec, piece, {"fast": 8, "slow": 36}, FillRules(fee=0.0, slippage_bps=20))
    assert trade_keys(from_feather) == expected
    trades = from_feather["trades"]
    assert len(trades) == from_feather["metrics"]["trades"] > 10
    # 20 bps adverse: buys 0.2% above the open, signal sells 0.2% below it, the end-of-data
    # sale 0.2% below the last close; with no fee a trade returns exit / entry - 1.
    opens = piece["open"].to_list()
    for trade in trades:
        assert trade["entry_price"] == pytest.approx(opens[trade["entry_bar"]] * 1.002, rel=1e-12)
        if trade["exit_reason"] == "signal":
            assert trade["exit_price"] == pytest.approx(opens[trade["exit_bar"]] * 0.998, rel=1e-12)
        else:
            assert trade["exit_reason"] == "end_of_data"
            assert trade["exit_price"] == pytest.approx(piece["close"][-1] * 0.998, rel=1e-12)
        assert trade["return"] == pytest.approx(trade["exit_price"] / trade["entry_price"] - 1, rel=1e-9, abs=1e-12)


def test_list_builtins_names_every_builtin(capsys):
    assert main(["--list-builtins"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == [spec.name for spec in builtin_specs()]


def _garbage_candles(tmp: Path) -> Path:
    path = tmp / "BTC_USDT-5m.feather"
    path.write_bytes(b"this is not an Arrow file\n" * 10)
    return path


def _unordered_candles(tmp: Path) -> Path:
    rows = pl.read_parquet(BTC_5M).head(50)
    ms = rows["date"].dt.epoch("ms").to_list()
    data = [[stamp, *values] for stamp, values in zip(ms, rows.select(OHLCV).rows())]
    data[30], data[31] = data[31], data[30]
    path = tmp / "BTC_USDT-5m.json"
    path.write_text(json.dumps(data))
    return path


def _misspelled_spec(tmp: Path) -> Path:
    spec = json.loads(json.dumps(EMA_CROSS_5M))
    spec["entry"]["cross_above"]["a"]["params"]["window"] = "$fats"
    path = tmp / "bad_spec.json"
    path.write_text(json.dumps(spec))
    return path


ERROR_CASES = {
    "missing candle file": (
        lambda tmp: ["--builtin", "ema_cross", "--candles", tmp / "BTC_USDT-5m.parquet"],
        ["--candles", "BTC_USDT-5m.parquet", "no such file"],
    ),
    "unreadable candle file": (
        lambda tmp: ["--builtin", "ema_cross", "--candles", _garbage_candles(tmp)],
        ["cannot read candle file", "BTC_USDT-5m.feather"],
    ),
    "candles out of order": (
        lambda tmp: ["--builtin", "ema_cross", "--candles", _unordered_candles(tmp)],
        ["--candles", "2024-01-01T02:30:00Z", "out_of_order_timestamp"],
    ),
    "missing spec file": (
        lambda tmp: ["--spec", tmp / "nope.json", "--candles", BTC_5M],
        ["--spec", "nope.json", "no such file"],
    ),
    "invalid spec": (
        lambda tmp: ["--spec", _misspelled_spec(tmp), "--candles", BTC_5M],
        ["invalid spec", "entry.cross_above.a.params.window", "'$fats'"],
    ),
    "param outside its range": (
        lambda tmp: ["--builtin", "ema_cross", "--candles", BTC_5M, "--param", "fast=100"],
        ["--param fast=100", "outside its range [5, 20]"],
    ),
    "param not a number": (
        lambda tmp: ["--builtin", "ema_cross", "--candles", BTC_5M, "--param", "slow=abc"],
        ["--param slow=abc", "expected an integer"],
    ),
    "unknown param": (
        lambda tmp: ["--builtin", "ema_cross", "--candles", BTC_5M, "--param", "fats=5"],
        ["--param fats=5", "no parameter 'fats'", "fast, slow"],
    ),
    "unknown builtin": (
        lambda tmp: ["--builtin", "nope", "--candles", BTC_5M],
        ["--builtin", "no built-in strategy 'nope'", "ema_cross"],
    ),
    "fee of 100%": (lambda tmp: ["--builtin", "ema_cross", "--candles", BTC_5M, "--fee", "1"], ["--fee", "[0, 1)"]),
    "spec and builtin together": (
        lambda tmp: ["--spec", "x.json", "--builtin", "ema_cross", "--candles", BTC_5M],
        ["--builtin", "not allowed with", "--spec"],
    ),
}


def check_error_message(message: str, expected: list[str]) -> None:
    assert "Traceback" not in message
    message = message.strip()
    assert message.count("\n") == 0, message
    assert message.startswith("tracer-backtest: error: ")
    for fragment in expected:
        assert fragment in message, message


# Every case goes through `main` in-process (the console script is `sys.exit(main())`; a
# subprocess costs seconds of imports), and a few through the installed script below.
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_user_errors_return_2_with_one_line_naming_the_problem(case, tmp_path, capsys):
    make_args, expected = ERROR_CASES[case]
    assert main([str(arg) for arg in make_args(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    check_error_message(captured.err, expected)


@pytest.mark.parametrize("case", ["unreadable candle file", "invalid spec", "fee of 100%"])
def test_the_script_exits_2_with_one_line_on_stderr(case, tmp_path):
    make_args, expected = ERROR_CASES[case]
    process = run_cli(*make_args(tmp_path))
    assert process.returncode == 2, (process.stdout[:200], process.stderr)
    assert process.stdout == ""
    check_error_message(process.stderr, expected)


def test_a_run_without_trades_prints_strict_json_with_nulls(tmp_path, btc_5m):
    """A run with no trade has no win rate, expectancy, profit factor or sortino: null, not NaN."""
    never = dict(
        EMA_CROSS_5M,
        name="never",
        entry={"compare": {"left": "close", "op": "<", "right": 1.0}},
        exit=None,
        parameters={},
    )
    spec_file = tmp_path / "never.json"
    spec_file.write_text(json.dumps(never))
    process = run_cli("--spec", spec_file, "--candles", BTC_5M, "--timeframe", "5m")
    report = report_of(process)  # parse_constant fails the test on NaN/Infinity
    assert report["trades"] == []
    assert report["metrics"]["trades"] == 0
    for name in ("win_rate", "expectancy", "profit_factor", "sortino"):
        assert report["metrics"][name] is None
    assert report["metrics"]["total_return"] == 0.0
    assert np.isclose(report["metrics"]["exposure"], 0.0)
