"""Timeframe strings ('5m', '1h', '4h', ...) in ccxt's notation, and the rules for resampling.

`timeframe_seconds` is the project's one timeframe parser (ccxt's): strict, it takes ccxt's
notation only. What producers write ("1H", "60m") is brought to that notation by
`tracer_assets.vocabulary.normalize_timeframe`, which asks this parser for the length.
"""

from __future__ import annotations

import ccxt

DAY_SECONDS = 86_400


def timeframe_seconds(timeframe: str) -> int:
    """Length of a timeframe in seconds, by ccxt's own parser. Raises ValueError on nonsense."""
    try:
        seconds = int(ccxt.Exchange.parse_timeframe(timeframe))
    except Exception:  # ccxt raises NotSupported or ValueError depending on the typo
        raise ValueError(f"{timeframe!r} is not a timeframe like 5m, 1h or 4h") from None
    if seconds <= 0:
        raise ValueError(f"{timeframe!r} is not a timeframe like 5m, 1h or 4h")
    return seconds


def timeframe_ms(timeframe: str) -> int:
    return timeframe_seconds(timeframe) * 1000


def parse_timeframe_list(text: str) -> tuple[str, ...]:
    timeframes = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    for timeframe in timeframes:
        timeframe_seconds(timeframe)
    return tuple(sorted(timeframes, key=timeframe_seconds))


def check_resample_timeframes(base: str, targets: tuple[str, ...]) -> None:
    """Refuse targets that the base candles cannot be rolled up into exactly.

    A target must be a whole multiple of the base (every bucket is made of whole base
    candles) and divide one day (daily partitions then hold whole buckets, so
    re-materializing a day rebuilds exactly its buckets).
    """
    base_s = timeframe_seconds(base)
    for target in targets:
        target_s = timeframe_seconds(target)
        if target_s <= base_s or target_s % base_s:
            raise ValueError(
                f"timeframe {target} is not a whole multiple of the base timeframe {base} "
                f"({target_s}s is not k x {base_s}s with k >= 2)"
            )
        if DAY_SECONDS % target_s:
            raise ValueError(
                f"timeframe {target} does not divide one day evenly, so a daily partition "
                f"would hold part of a bucket; use e.g. 15m, 30m, 1h, 2h, 4h, 6h, 8h, 12h or 1d"
            )
