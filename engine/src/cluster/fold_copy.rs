//! `COPY (... ORDER BY fold_order(score, L)) TO 'dir/'` on a cluster: every executor scores,
//! sorts and writes; nothing passes through one place.
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

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::logical_expr::{Extension, LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_plan::EmptyRecordBatchStream;
use datafusion::prelude::SessionContext;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::cluster::distributed_fold::{FoldRunsNode, FoldShardsNode, ShardsSpec, reported_runs};
use crate::cluster::fold_layout::{RunIndex, shard_pieces};
use crate::error::{DeltError, Result};
use crate::io::output::CopyTarget;
use crate::sql::runner::CopyWriter;
use crate::stages::{FoldMode, Stage, StageNode};

/// The [`CopyWriter`] of a cluster client: a COPY of a fold to a directory runs as a
/// distributed fold; other COPYs are left to the runner.
#[derive(Debug, Default)]
pub struct DistributedFold;

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
        let LogicalPlan::Extension(extension) = &query else {
            return Ok(None);
        };
        let Some(stage) = extension.node.as_any().downcast_ref::<StageNode>() else {
            return Ok(None);
        };
        let Stage::Fold { layers, mode } = stage.stage() else {
            return Ok(None);
        };
        let store = ctx.runtime_env().object_store(target.store_url())?;
        let fold = Fold {
            ctx,
            query: &query,
            input: stage.input(),
            layers: layers as u64,
            mode,
            target,
            store: Arc::clone(&store),
        };
        let rows = target
            .write_staged(store, |staging| fold.run(staging))
            .await?;
        Ok(Some(rows))
    }
}

/// One distributed fold to write.
struct Fold<'a> {
    ctx: &'a SessionContext,
    /// The fold node (its schema is the output's).
    query: &'a LogicalPlan,
    /// The fold's scored input.
    input: &'a LogicalPlan,
    layers: u64,
    mode: FoldMode,
    target: &'a CopyTarget,
    store: Arc<dyn ObjectStore>,
}

impl Fold<'_> {
    /// Runs both jobs into `staging`; returns the staged shards and their rows, in order.
    async fn run(self, staging: Path) -> Result<Vec<(Path, u64)>> {
        let runs_dir = staging.clone().join("runs");
        let node = FoldRunsNode::new(self.input.clone(), self.mode, self.target.url_of(&runs_dir));
        let batches = self.execute(Arc::new(node)).await?;
        let runs = reported_runs(&batches)?;
        let rows: u64 = runs.iter().map(|run| run.summary.rows).sum();
        let scored: u64 = runs.iter().map(|run| run.summary.scored).sum();
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
            self.mode,
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
        let batches = self
            .execute(Arc::new(FoldShardsNode::new(spec.to_json())))
            .await?;
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
                return Err(DeltError::Cluster(format!(
                    "shard {shard} of the distributed fold holds {written:?} rows, not {expected}"
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
