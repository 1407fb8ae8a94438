//! Physical planning of the DELT plan nodes.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use crate::stages::FoldMode;
use crate::stages::fold::{FoldExec, FoldStrategy};
use crate::stages::node::{Stage, StageNode};
use crate::stages::order_key::OrderKeyExec;
use crate::stages::select::{SelectExec, SelectStrategy};

/// DataFusion's planner, taught the DELT [`StageNode`] (and, in a cluster's scheduler, the
/// nodes of its extensions).
#[derive(Default, Clone)]
pub struct DeltQueryPlanner {
    distributed: bool,
    extensions: Vec<Arc<dyn ExtensionPlanner + Send + Sync>>,
}

impl std::fmt::Debug for DeltQueryPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("DeltQueryPlanner")
            .field("distributed", &self.distributed)
            .field("extensions", &self.extensions.len())
            .finish()
    }
}

impl DeltQueryPlanner {
    /// The planner of a cluster's scheduler: everything below a fold or a selection runs as
    /// a separate stage of one task per input partition, spread over the executors. A fold
    /// sorts its keyed rows there ([`FoldStrategy::SortedStream`]: each task sorts its own,
    /// spilling under its executor's memory limit) and merges the sorted streams in one task;
    /// a selection's tasks sort their rows by position (keys position first) and one task
    /// merges them in input order and selects, spilling ([`SelectStrategy::Gathered`]). Keys
    /// number rows by the scan's files
    /// ([`PartitionStart`](crate::stages::order_key::PartitionStart)). `extensions` plan the
    /// nodes that only a cluster's jobs hold.
    pub fn distributed(extensions: Vec<Arc<dyn ExtensionPlanner + Send + Sync>>) -> Self {
        Self {
            distributed: true,
            extensions,
        }
    }
}

#[async_trait]
impl QueryPlanner for DeltQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let planner = DeltExtensionPlanner {
            distributed: self.distributed,
        };
        let mut planners: Vec<Arc<dyn ExtensionPlanner + Send + Sync>> = vec![Arc::new(planner)];
        planners.extend(self.extensions.iter().cloned());
        let plan = DefaultPhysicalPlanner::with_extension_planners(planners)
            .create_physical_plan(logical_plan, session_state)
            .await?;
        if !self.distributed {
            return Ok(plan);
        }
        // The plan is final: record the files of each scan, for the tasks that will each read
        // a slice of them (see `PartitionStart`).
        plan.transform_up(|node| {
            let Some(keys) = node.downcast_ref::<OrderKeyExec>() else {
                return Ok(Transformed::no(node));
            };
            let starts = keys.input_files().map(Arc::new);
            let mut rebuilt = OrderKeyExec::new(
                Arc::clone(keys.children()[0]),
                keys.score(),
                keys.descending(),
            )
            .with_partition_starts(starts);
            if keys.is_position_first() {
                rebuilt = rebuilt.position_first();
            }
            Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
        })
        .map(|transformed| transformed.data)
    }
}

/// Maps each stage to its execution plan.
#[derive(Debug)]
struct DeltExtensionPlanner {
    distributed: bool,
}

#[async_trait]
impl ExtensionPlanner for DeltExtensionPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<StageNode>() else {
            return Ok(None);
        };
        let input = Arc::clone(&physical_inputs[0]);
        Ok(Some(match node.stage() {
            Stage::Fold { layers, mode } => {
                let score = input.schema().fields().len() - 1;
                let keyed = Arc::new(OrderKeyExec::new(
                    input,
                    score,
                    mode == FoldMode::Descending,
                ));
                // Without a memory limit nothing spills: the fold may hold every row. In a
                // cluster the sort runs in the tasks below, on every executor, under its limit.
                let strategy = match session.runtime_env().memory_pool.memory_limit() {
                    _ if self.distributed => FoldStrategy::SortedStream,
                    MemoryLimit::Infinite => FoldStrategy::InMemory,
                    MemoryLimit::Finite(_) | MemoryLimit::Unknown => FoldStrategy::SortedStream,
                };
                Arc::new(FoldExec::new(keyed, layers, mode, strategy))
            }
            Stage::Select(selection) if self.distributed => {
                let score = input.schema().fields().len() - 1;
                let keyed = Arc::new(OrderKeyExec::new(input, score, false).position_first());
                Arc::new(SelectExec::new(keyed, selection, SelectStrategy::Gathered))
            }
            Stage::Select(selection) => Arc::new(SelectExec::new(
                input,
                selection,
                SelectStrategy::InputOrder,
            )),
        }))
    }
}
