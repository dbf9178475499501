-- Every timeframe in one place: the base candles and the resampled ones, same columns.
{{ config(materialized='view') }}
SELECT symbol, timeframe, ts, open, high, low, close, volume
FROM {{ ref('market/candles') }}
UNION ALL
SELECT symbol, timeframe, ts, open, high, low, close, volume
FROM {{ ref('market/candles_resampled') }}
