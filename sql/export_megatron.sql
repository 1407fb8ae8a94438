-- Hand a curated order to the trainer: score the bundled sample, fold it into 3 layers and
-- write it, tokenized, as a Megatron-LM indexed dataset (out/train/part-00000.bin + .idx) with
-- a sidecar (part-00000.docs.parquet) giving each document's id and token span.
-- The tokenizer is SmolLM2's vocabulary, read from its GGUF file: tests/fetch_models.sh
-- fetches it into .models/ (any tokenizer.json works the same way).
CREATE EXTERNAL TABLE docs STORED AS JSON LOCATION 'examples/data/docs.jsonl';
CREATE FUNCTION quality(text VARCHAR) RETURNS DOUBLE LANGUAGE delt AS 'text_quality#text_quality?min_words=100';

COPY (
  SELECT id, text
  FROM (SELECT id, quality(text) AS score, text FROM docs)
  ORDER BY fold_order(score, 3)
) TO 'out/train/' STORED AS MEGATRON
OPTIONS (tokenizer '.models/SmolLM2-135M-Instruct.Q4_1.gguf');

-- The sidecar: the trainer's document i is the query's row i.
SELECT row, id, start, tokens FROM 'out/train/part-00000.docs.parquet' LIMIT 5;
