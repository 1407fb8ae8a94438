//! The logical plan node of the DELT stages that work on a score: folding and selection.
//!
//! A [`StageNode`] evaluates its score expression once, in a projection below it
//! (`input.*, <score> AS __delt_score`), so the expensive part (later: a model scorer) runs
//! where DataFusion runs projections, in parallel and once per row. The node hands on its
//! input's columns without the score.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::{DFSchema, DFSchemaRef, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{Partitioning, PlanProperties};

use crate::fold::FoldMode;
use crate::select::Selection;

/// Name of the score column appended below a stage.
pub const SCORE_COLUMN: &str = "__delt_score";

/// What a [`StageNode`] does with its scored input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum Stage {
    /// All rows in folded order ([`crate::fold`]).
    Fold { layers: usize, mode: FoldMode },
    /// The best rows, in input order ([`crate::select`]).
    Select(Selection),
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Fold { layers, mode } => write!(f, "Fold: layers={layers}, mode={mode}"),
            Self::Select(selection) => write!(f, "Select: {selection}"),
        }
    }
}

/// Logical node of a stage. Its input's last column is the score.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StageNode {
    input: LogicalPlan,
    stage: Stage,
    schema: DFSchemaRef,
}

impl StageNode {
    /// Applies `stage` to `input`, scored by `score`.
    pub fn try_new(input: LogicalPlan, score: Expr, stage: Stage) -> Result<Self> {
        if let Stage::Fold { layers: 0, .. } = stage {
            return plan_err!("fold_order: the layer count L must be at least 1");
        }
        let schema = Arc::clone(input.schema());
        let mut exprs: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
        exprs.push(score.alias(SCORE_COLUMN));
        let input = LogicalPlanBuilder::from(input).project(exprs)?.build()?;
        Ok(Self {
            input,
            stage,
            schema,
        })
    }

    /// The stage this node runs.
    pub fn stage(&self) -> Stage {
        self.stage
    }
}

// The schema follows from the input, so it takes no part in the comparison.
impl PartialOrd for StageNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (&self.input, self.stage).partial_cmp(&(&other.input, other.stage))
    }
}

impl UserDefinedLogicalNodeCore for StageNode {
    fn name(&self) -> &str {
        match self.stage {
            Stage::Fold { .. } => "Fold",
            Stage::Select(_) => "Select",
        }
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    // Filtering after a fold is not filtering before it, and a selection's N counts the rows
    // that reach it: every predicate above stays above.
    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        self.schema.columns().into_iter().map(|c| c.name).collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}, score={SCORE_COLUMN}", self.stage)
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let input = inputs.swap_remove(0);
        let fields = input
            .schema()
            .iter()
            .filter(|(_, field)| field.name() != SCORE_COLUMN)
            .map(|(qualifier, field)| (qualifier.cloned(), Arc::clone(field)))
            .collect();
        let schema = Arc::new(DFSchema::new_with_metadata(
            fields,
            input.schema().metadata().clone(),
        )?);
        Ok(Self {
            input,
            stage: self.stage,
            schema,
        })
    }
}

/// Output schema and properties of a stage's operator: the input's columns but the last (its
/// score or key), in one partition, emitted once the input is consumed.
pub fn stage_output(input: &SchemaRef) -> (SchemaRef, Arc<PlanProperties>) {
    let kept = input.fields().len() - 1;
    let schema = Arc::new(Schema::new_with_metadata(
        input.fields()[..kept].to_vec(),
        input.metadata().clone(),
    ));
    let properties = Arc::new(PlanProperties::new(
        EquivalenceProperties::new(Arc::clone(&schema)),
        Partitioning::UnknownPartitioning(1),
        EmissionType::Final,
        Boundedness::Bounded,
    ));
    (schema, properties)
}
