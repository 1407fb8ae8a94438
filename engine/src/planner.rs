//! Physical planning of the DELT plan nodes.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::catalog::Session;

use crate::fold::{FoldExec, FoldMode, FoldNode};
use crate::order_key::OrderKeyExec;
use crate::select::{SelectExec, SelectNode};

/// DataFusion's planner, taught [`FoldNode`] and [`SelectNode`].
#[derive(Debug, Default)]
pub struct DeltQueryPlanner;

#[async_trait]
impl QueryPlanner for DeltQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(DeltExtensionPlanner)])
            .create_physical_plan(logical_plan, session_state)
            .await
    }
}

/// Maps each DELT logical node to its execution plan.
#[derive(Debug)]
struct DeltExtensionPlanner;

#[async_trait]
impl ExtensionPlanner for DeltExtensionPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let input = || Arc::clone(&physical_inputs[0]);
        let any = node.as_any();
        Ok(if let Some(fold) = any.downcast_ref::<FoldNode>() {
            let input = input();
            let score = input.schema().fields().len() - 1;
            let descending = fold.mode() == FoldMode::Descending;
            let keyed = Arc::new(OrderKeyExec::new(input, score, descending));
            Some(Arc::new(FoldExec::new(keyed, fold.layers(), fold.mode())))
        } else if let Some(select) = any.downcast_ref::<SelectNode>() {
            Some(Arc::new(SelectExec::new(input(), select.selection())))
        } else {
            None
        })
    }
}
