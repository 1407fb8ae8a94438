-- Read the reference DELT tools' JSONL as it is, fold by its score column, write Parquet shards.
--   delt sql -f sql/jsonl_to_parquet.sql --param input=data/train.jsonl --param output=data/train_folded/
CREATE EXTERNAL TABLE docs STORED AS JSON LOCATION '${input}';

COPY (SELECT * FROM docs WHERE score IS NOT NULL ORDER BY fold_order(score, 3))
TO '${output}' STORED AS PARQUET OPTIONS (rows_per_shard 100000);
