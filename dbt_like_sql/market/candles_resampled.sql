-- The base candles rolled up to every higher timeframe in TRACER_TIMEFRAMES: first open,
-- max high, min low, last close, summed volume. Only complete buckets are kept (every base
-- candle of the bucket present), so a gap never yields a made-up candle.
{{ config(materialized='incremental', time_column='ts') }}
WITH frames (timeframe, seconds) AS (
    VALUES {{ resample_timeframes }}
),
base AS (
    SELECT symbol, ts, open, high, low, close, volume
    FROM {{ ref('market/candles') }}
    WHERE timeframe = '{{ base_timeframe }}'
      AND ts >= {{ window_start }} AND ts < {{ window_end }}
)
SELECT
    b.symbol,
    f.timeframe,
    to_timestamp((epoch(b.ts)::BIGINT // f.seconds) * f.seconds) AS ts,
    arg_min(b.open, b.ts) AS open,
    max(b.high) AS high,
    min(b.low) AS low,
    arg_max(b.close, b.ts) AS close,
    sum(b.volume) AS volume
FROM base AS b
CROSS JOIN frames AS f
GROUP BY b.symbol, f.timeframe, f.seconds, 3
HAVING count(*) = f.seconds // {{ base_seconds }}
