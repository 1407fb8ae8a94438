-- Arms of `delt bench efficacy`: every CREATE VIEW is one arm, trained in its row order.
-- The command registers the training corpus as table `corpus` (the held-out slice removed)
-- and gives every arm the same token budget (one pass over `corpus`): an arm that keeps
-- half the documents trains two epochs over them.
--
--   delt bench efficacy --corpus CORPUS --target TARGET --arms sql/efficacy_arms.sql \
--     --param scorer=out/lqs/scorer --out out/efficacy
CREATE FUNCTION lqs_score(text VARCHAR) RETURNS DOUBLE LANGUAGE delt
AS 'delt_lqs#lqs_score?scorer=${scorer}&batch_size=256';

-- Score once; every arm reads the scores.
CREATE TABLE scored AS SELECT text, lqs_score(text) AS score FROM corpus;

CREATE VIEW shuffle AS SELECT text FROM scored ORDER BY shuffle_order(1);
CREATE VIEW fold_l3 AS SELECT text FROM scored ORDER BY fold_order(score, 3);
CREATE VIEW sort_asc AS SELECT text FROM scored ORDER BY score;
CREATE VIEW sort_desc AS SELECT text FROM scored ORDER BY score DESC;
CREATE VIEW top50_fold_l3 AS
  SELECT text FROM scored WHERE top_r(score, 0.5) ORDER BY fold_order(score, 3);
