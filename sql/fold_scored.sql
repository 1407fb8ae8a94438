-- Fold a scored Parquet dataset (file, directory or glob; local or s3://) into ordered shards.
--   delt sql -f sql/fold_scored.sql --param input=data/scored/ --param output=data/folded/ \
--            --param layers=3 --param rows_per_shard=1000000
CREATE EXTERNAL TABLE scored STORED AS PARQUET LOCATION '${input}';

COPY (SELECT * FROM scored ORDER BY fold_order(score, ${layers}))
TO '${output}' STORED AS PARQUET OPTIONS (rows_per_shard ${rows_per_shard});
