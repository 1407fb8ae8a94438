-- Quickstart: curate the bundled sample (600 real documents from four domains).
-- Score every document with a scorer plugin, keep the better half, fold it into 3 layers,
-- write ordered Parquet, then look at it.
CREATE EXTERNAL TABLE docs STORED AS JSON LOCATION 'examples/data/docs.jsonl';

-- text_quality: the heuristic web-text quality plugin of examples/plugins/text-quality, found
-- by name beside the delt executable (cargo builds it there).
CREATE FUNCTION quality(text VARCHAR) RETURNS DOUBLE LANGUAGE delt AS 'text_quality#text_quality?min_words=100';

COPY (
  SELECT id, domain, score, text
  FROM (SELECT id, domain, round(quality(text), 4) AS score, text FROM docs)
  WHERE length(text) > 150 AND top_r(score, 0.5)
  ORDER BY fold_order(score, 3)
) TO 'out/quickstart.parquet';

-- Each fold layer sweeps the score range low to high: watch the score climb, drop, climb again.
SELECT id, domain, score, substr(text, 1, 60) AS text
FROM 'out/quickstart.parquet'
LIMIT 12;

SELECT domain, count(*) AS docs, round(avg(score), 3) AS mean_score
FROM 'out/quickstart.parquet'
GROUP BY domain
ORDER BY docs DESC;
