//! Plans that carry their score as a column.
//!
//! Fold and selection nodes evaluate their score expression once, in a projection below them
//! (`input.*, <score> AS __delt_score`), so the expensive part (later: a model scorer) runs
//! where DataFusion runs projections, in parallel and only once per row.

use std::sync::Arc;

use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};

/// Name of the score column appended below fold and selection nodes.
pub const SCORE_COLUMN: &str = "__delt_score";

/// `input` with one more column, `score AS __delt_score`.
pub fn append_score(input: LogicalPlan, score: Expr) -> Result<LogicalPlan> {
    let mut exprs: Vec<Expr> = input.schema().columns().into_iter().map(Expr::Column).collect();
    exprs.push(score.alias(SCORE_COLUMN));
    LogicalPlanBuilder::from(input).project(exprs)?.build()
}

/// The schema of `input` without its score column: what the node above hands on.
pub fn strip_score(input: &LogicalPlan) -> Result<DFSchemaRef> {
    let schema = input.schema();
    let fields = schema
        .iter()
        .filter(|(_, field)| field.name() != SCORE_COLUMN)
        .map(|(qualifier, field)| (qualifier.cloned(), Arc::clone(field)))
        .collect();
    Ok(Arc::new(DFSchema::new_with_metadata(fields, schema.metadata().clone())?))
}
