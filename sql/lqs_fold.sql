-- LQS end to end, the last step: score the corpus with the data scorer that `delt lqs fit`
-- wrote, keep the better-scored share, fold into 3 layers, write ordered Parquet.
--
--   delt sql -f sql/lqs_fold.sql --param corpus=examples/data/docs.jsonl \
--     --param scorer=out/lqs-scorer --param keep=0.5 --param out=out/lqs_folded.parquet
CREATE FUNCTION lqs_score(text VARCHAR) RETURNS DOUBLE LANGUAGE delt
AS 'delt_lqs#lqs_score?scorer=${scorer}&batch_size=256';

COPY (
  SELECT id, text, score
  FROM (SELECT id, text, lqs_score(text) AS score FROM '${corpus}')
  WHERE top_r(score, ${keep})
  ORDER BY fold_order(score, 3)
) TO '${out}';

SELECT count(*) AS documents, round(min(score), 3) AS min_score, round(max(score), 3) AS max_score
FROM '${out}';
