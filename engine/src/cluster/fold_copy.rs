//! `COPY (... ORDER BY fold_order(score, L)) TO 'dir/'` on a cluster: every executor scores,
//! sorts and writes; nothing passes through one place. `ORDER BY shuffle_order(seed)` runs
//! the same way, as one layer keyed by the rows' hash.
//!
//! The client runs two jobs ([`crate::cluster::distributed_fold`]) and publishes what they
//! wrote:
//!
//! 1. every task scans, scores and keys its input partition, sorts it by key under its
//!    executor's memory limit and writes it as a sorted run into the COPY's staging directory;
//!    it reports its row counts and the first key of each block of its run;
//! 2. from the counts, the client knows how many shards of `rows_per_shard` rows the output
//!    has and which ranks each holds ([`crate::cluster::fold_layout`]), and from the block
//!    keys, a fence just before each piece; one task per shard then merges the runs from
//!    its fences, counts ranks exactly and writes its shard into the staging directory.
//!
//! The shards are those a local run writes (same rows, same files, byte for byte), and are
//! published atomically as a local COPY's are; a failed job publishes nothing. The staging
//! directory, beside the destination, must be one that every executor and the client reach:
//! an `s3://` destination, or a directory on a file system all hosts share (on one host, any
//! directory).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, LogicalPlanBuilder, UserDefinedLogicalNode,
};
use datafusion::physical_plan::EmptyRecordBatchStream;
use datafusion::prelude::SessionContext;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::cluster::distributed_fold::{
    FoldRunsNode, FoldShardsNode, RunKey, ShardsSpec, reported_runs,
};
use crate::cluster::fold_layout::{RunIndex, shard_pieces};
use crate::error::{DeltError, Result};
use crate::io::output::CopyTarget;
use crate::sql::runner::CopyWriter;
use crate::stages::node::SCORE_COLUMN;
use crate::stages::shuffle::SHUFFLE_KEY;
use crate::stages::{FoldMode, Stage, StageNode};

/// The [`CopyWriter`] of a cluster client: a COPY of a fold or a shuffle to a directory runs
/// as a distributed fold; other COPYs are left to the runner.
#[derive(Debug, Default)]
pub struct DistributedFold {
    /// Print a line on stderr when each job ends.
    pub report: bool,
}

#[async_trait]
impl CopyWriter for DistributedFold {
    async fn write(
        &self,
        ctx: &SessionContext,
        query: &LogicalPlan,
        target: &CopyTarget,
    ) -> Result<Option<u64>> {
        if target.is_single_file() {
            return Ok(None);
        }
        // The fold is a plan node once the plan is analyzed (see `sql::rewrite`).
        let query = ctx.state().optimize(query)?;
        let Some((input, key, layers)) = sorted_by_runs(&query)? else {
            return Ok(None);
        };
        let store = ctx.runtime_env().object_store(target.store_url())?;
        let fold = Fold {
            ctx,
            query: &query,
            input: &input,
            key,
            layers,
            target,
            store: Arc::clone(&store),
            report: self.report,
        };
        let rows = target
            .write_staged(store, |staging| fold.run(staging))
            .await?;
        Ok(Some(rows))
    }
}

/// The input, key and layer count of `query` as the jobs run it, if they can: a fold, or a
/// shuffle (one layer, keyed by the rows' hash); the input's last column is the score or hash.
fn sorted_by_runs(query: &LogicalPlan) -> Result<Option<(LogicalPlan, RunKey, u64)>> {
    match query {
        LogicalPlan::Extension(extension) => {
            let Some(stage) = extension.node.as_any().downcast_ref::<StageNode>() else {
                return Ok(None);
            };
            let Stage::Fold { layers, mode } = stage.stage() else {
                return Ok(None);
            };
            Ok(Some((
                stage.input().clone(),
                RunKey::Fold(mode),
                layers as u64,
            )))
        }
        LogicalPlan::Sort(sort) if sort.fetch.is_none() => {
            let [order] = sort.expr.as_slice() else {
                return Ok(None);
            };
            let Expr::ScalarFunction(hash) = &order.expr else {
                return Ok(None);
            };
            if hash.name() != SHUFFLE_KEY || !order.asc {
                return Ok(None);
            }
            let mut columns: Vec<Expr> = sort
                .input
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            columns.push(order.expr.clone().alias(SCORE_COLUMN));
            let input = LogicalPlanBuilder::from(sort.input.as_ref().clone())
                .project(columns)?
                .build()?;
            Ok(Some((input, RunKey::Shuffle, 1)))
        }
        _ => Ok(None),
    }
}

/// One distributed fold to write.
struct Fold<'a> {
    ctx: &'a SessionContext,
    /// The fold or shuffle (its schema is the output's).
    query: &'a LogicalPlan,
    /// The fold's scored input (or the shuffle's input and hash).
    input: &'a LogicalPlan,
    key: RunKey,
    layers: u64,
    target: &'a CopyTarget,
    store: Arc<dyn ObjectStore>,
    report: bool,
}

impl Fold<'_> {
    /// Runs both jobs into `staging`; returns the staged shards and their rows, in order.
    async fn run(self, staging: Path) -> Result<Vec<(Path, u64)>> {
        let runs_dir = staging.clone().join("runs");
        let node = FoldRunsNode::new(self.input.clone(), self.key, self.target.url_of(&runs_dir));
        let started = Instant::now();
        if self.report {
            eprintln!(
                "distributed fold: the executors score and sort the rows into runs under {}",
                self.target.url_of(&runs_dir)
            );
        }
        let batches = self.execute(Arc::new(node)).await?;
        let runs = reported_runs(&batches);
        let rows: u64 = runs.iter().map(|run| run.summary.rows).sum();
        // A shuffle has no scores: all its rows are "scored", in one layer.
        let (scored, mode) = match self.key {
            RunKey::Fold(mode) => (runs.iter().map(|run| run.summary.scored).sum(), mode),
            RunKey::Shuffle => (rows, FoldMode::Ascending),
        };
        if self.report {
            eprintln!(
                "distributed fold: {rows} rows scored and sorted into {} runs on the executors \
                 in {:.1}s",
                runs.len(),
                started.elapsed().as_secs_f64()
            );
        }
        if let Some(run) = runs.first() {
            let path = Path::from(run.path.as_str());
            if self.store.head(&path).await.is_err() {
                return Err(DeltError::Cluster(format!(
                    "the executors wrote the fold's sorted runs to {}, which this process cannot \
                     read: with executors on other hosts, COPY to an s3:// destination or to a \
                     directory that every host shares",
                    self.target.url_of(&runs_dir)
                )));
            }
        }
        let pieces = shard_pieces(
            rows,
            scored,
            self.layers,
            mode,
            self.target.rows_per_shard() as u64,
        );
        if rows == 0 {
            // Nothing to merge: the one empty shard keeps the schema.
            let path = self.target.shard_path(&staging, 0);
            let schema = Arc::new(self.query.schema().as_arrow().clone());
            let empty = Box::pin(EmptyRecordBatchStream::new(schema));
            self.target
                .write_shard(Arc::clone(&self.store), path.clone(), empty)
                .await?;
            return Ok(vec![(path, 0)]);
        }
        let index = RunIndex::new(
            runs.iter()
                .map(|run| (run.summary.block_keys.clone(), run.summary.rows))
                .collect(),
        );
        let expected: Vec<u64> = pieces
            .iter()
            .map(|pieces| pieces.iter().map(|p| p.count).sum())
            .collect();
        let spec = ShardsSpec {
            staging: self.target.url_of(&staging),
            destination: self.target.location(),
            file_type: self.target.file_type().to_string(),
            options: self.target.options().clone(),
            runs: runs.iter().map(|run| run.path.clone()).collect(),
            shards: pieces
                .into_iter()
                .enumerate()
                .map(|(shard, pieces)| {
                    let fenced = pieces.into_iter().map(|p| (p, index.fence(&p))).collect();
                    (shard as u64, fenced)
                })
                .collect(),
        };
        let started = Instant::now();
        let batches = self
            .execute(Arc::new(FoldShardsNode::new(spec.to_json())))
            .await?;
        if self.report {
            eprintln!(
                "distributed fold: {} shards merged and written by the executors in {:.1}s",
                expected.len(),
                started.elapsed().as_secs_f64()
            );
        }
        let mut written = vec![None; expected.len()];
        for batch in &batches {
            let shards = batch.column(0).as_any().downcast_ref::<UInt64Array>();
            let counts = batch.column(1).as_any().downcast_ref::<UInt64Array>();
            let (Some(shards), Some(counts)) = (shards, counts) else {
                continue;
            };
            for (shard, count) in shards.values().iter().zip(counts.values()) {
                if let Some(slot) = written.get_mut(*shard as usize) {
                    *slot = Some(*count);
                }
            }
        }
        for (shard, (written, expected)) in written.iter().zip(&expected).enumerate() {
            if *written != Some(*expected) {
                let got = written.map_or("no".to_string(), |rows| rows.to_string());
                return Err(DeltError::Cluster(format!(
                    "shard {shard} of the distributed fold came back with {got} rows, not \
                     {expected}: nothing was published; please report this as a delt bug"
                )));
            }
        }
        Ok(expected
            .into_iter()
            .enumerate()
            .map(|(shard, rows)| (self.target.shard_path(&staging, shard), rows))
            .collect())
    }

    /// Runs the job of `node` on the cluster and collects its (small) result.
    async fn execute(&self, node: Arc<dyn UserDefinedLogicalNode>) -> Result<Vec<RecordBatch>> {
        let plan = LogicalPlan::Extension(Extension { node });
        Ok(self.ctx.execute_logical_plan(plan).await?.collect().await?)
    }
}
