-- The daily overview figures of logveil's demo pipeline (visitors, visits, pageviews per local
-- day), computed by DuckDB straight from a plain combined-format access log with regular
-- expressions and window functions: the "hand-written SQL" contender of benches/compare.sh.
--
-- Input: the variable log_file (a path or glob of uncompressed logs), e.g.
--   duckdb -c "SET VARIABLE log_file = 'access.log'" -c ".read benches/compare.sql"
-- or through Python, as benches/compare.sh does it.
--
-- The rules follow pipelines/demo.toml as logveil applies them:
--   * a line counts only if it parses as combined format with a valid timestamp;
--   * pageview = GET, target a path (starts with "/", or an absolute http(s) URL), status 2xx
--     or 304, last path segment without a static-asset extension (logveil's default list),
--     and not a bot by a simple user-agent test (logveil uses uap-core + crawler-user-agents;
--     the test below catches every bot the sample generator writes, including UA "-");
--   * visitor = (client IP, user agent);
--   * visit = a visitor's pageviews with gaps of at most 30 min, cut every 6 h (max_visit),
--     and cut where a pageview carries a campaign (utm_source, utm_medium, utm_campaign,
--     lower-cased) other than the last one seen in that stretch of activity (logveil's
--     decision 9, as GA4: an untagged stretch followed by a tagged pageview splits too);
--     a visit and all its pageviews belong to the local day of its first pageview;
--   * the local day is the date written in the log line (the time zone of the server, which
--     is Europe/Moscow, +0300, for the generated sample).
-- It computes only these figures, where logveil also builds its other tables, pseudonymises
-- and writes Parquet, and GoAccess builds its whole report.

WITH lines AS (
    -- seq: the line's place in the input (DuckDB keeps the file's order), which breaks ties
    -- between a visitor's pageviews in the same second as logveil does.
    SELECT line, row_number() OVER () AS seq
    FROM read_csv(getvariable('log_file'),
                  columns = {'line': 'VARCHAR'}, delim = E'\x01', quote = '', escape = '',
                  header = false, auto_detect = false, max_line_size = 4194304)
),
m AS MATERIALIZED (
    -- %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-Agent}i"; quoted fields may hold \".
    -- MATERIALIZED: otherwise DuckDB runs the regular expression again for every field used.
    SELECT regexp_extract(line,
        '^(\S+) \S+ \S+ \[([^\]]*)\] "(\S+) ([^ "?]*)(\?[^ "]*)?(?:[^"\\]|\\.)*" (\d{3}) \S+ "(?:[^"\\]|\\.)*" "((?:[^"\\]|\\.)*)"',
        ['ip', 'ts', 'method', 'path', 'query', 'status', 'ua']) AS f, seq
    FROM lines
    WHERE line IS NOT NULL
),
parsed AS (
    SELECT f.ip AS ip,
           try_strptime(f.ts, '%d/%b/%Y:%H:%M:%S %z') AS ts,
           f.ts AS ts_text,
           f.method AS method,
           f.path AS path,
           f.query AS query,
           f.status AS status,
           f.ua AS ua,
           seq
    FROM m
    WHERE f.ip <> ''
),
pageviews AS (
    SELECT ip, ua, seq, epoch(ts)::BIGINT AS t,
           try_strptime(left(ts_text, 11), '%d/%b/%Y')::DATE AS day,
           CASE WHEN regexp_matches(query, '[?&]utm_(source|medium|campaign)=[^&]')
                THEN concat_ws('|',
                    lower(trim(url_decode(replace(regexp_extract(query, '[?&]utm_source=([^&]*)', 1), '+', ' ')))),
                    lower(trim(url_decode(replace(regexp_extract(query, '[?&]utm_medium=([^&]*)', 1), '+', ' ')))),
                    lower(trim(url_decode(replace(regexp_extract(query, '[?&]utm_campaign=([^&]*)', 1), '+', ' ')))))
           END AS tag
    FROM parsed
    WHERE ts IS NOT NULL
      AND method = 'GET'
      AND (status LIKE '2%' OR status = '304')
      AND (path LIKE '/%' OR regexp_matches(path, '^(?i)https?://'))
      AND NOT regexp_matches(path,  -- the extension of the last path segment
            '(?i)\.(css|js|mjs|map|png|jpg|jpeg|gif|svg|ico|webp|avif|bmp|tif|tiff|woff|woff2|ttf|otf|eot|mp4|webm|mp3|ogg|wav|json|xml|txt|pdf|zip|gz|rar|7z|exe|dmg|apk|csv|xls|xlsx|doc|docx)$')
      AND ua NOT IN ('', '-')
      AND NOT regexp_matches(ua,
            '(?i)bot|crawl|spider|slurp|curl|wget|python-requests|python-urllib|headless|scrapy|go-http-client|java/|libwww|okhttp')
),
idle AS (
    SELECT *,
           CASE WHEN t - lag(t) OVER (PARTITION BY ip, ua ORDER BY t, seq) <= 1800 THEN 0 ELSE 1 END
               AS idle_start
    FROM pageviews
),
idle_ids AS (
    SELECT *,
           sum(idle_start) OVER (PARTITION BY ip, ua ORDER BY t, seq
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS idle_id
    FROM idle
),
gaps AS (
    SELECT *,
           CASE WHEN idle_start = 1 THEN 1
                WHEN tag IS NOT NULL AND tag IS DISTINCT FROM
                     last_value(tag IGNORE NULLS) OVER (
                         PARTITION BY ip, ua, idle_id ORDER BY t, seq
                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) THEN 1
                ELSE 0 END AS gap_start
    FROM idle_ids
),
gap_ids AS (
    SELECT *,
           sum(gap_start) OVER (PARTITION BY ip, ua ORDER BY t, seq
                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS gap_id
    FROM gaps
),
chunks AS (
    SELECT *, (t - min(t) OVER (PARTITION BY ip, ua, gap_id)) // 21600 AS chunk
    FROM gap_ids
),
visits AS (
    SELECT ip, ua, arg_min(day, (t, seq)) AS day, count(*) AS pageviews
    FROM chunks
    GROUP BY ip, ua, gap_id, chunk
)
SELECT day,
       count(DISTINCT (ip, ua)) AS visitors,
       count(*) AS visits,
       sum(pageviews)::BIGINT AS pageviews
FROM visits
GROUP BY day
ORDER BY day;
