-- DELT's best recipe: keep the top r of the scored documents, then fold them.
--   delt sql -f sql/select_then_fold.sql --param input=data/scored/ --param ratio=0.5 \
--            --param layers=3 --param output=data/curated.parquet
CREATE EXTERNAL TABLE scored STORED AS PARQUET LOCATION '${input}';

COPY (
  SELECT * FROM scored
  WHERE top_r(score, ${ratio})
  ORDER BY fold_order(score, ${layers})
) TO '${output}';
