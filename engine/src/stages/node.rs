//! The logical plan node of the DELT stages that work on a score: folding and selection.
//!
//! A [`StageNode`] evaluates its score expression once, in a projection below it
//! (`input.*, <score> AS __delt_score`), so the expensive part (later: a model scorer) runs
//! where DataFusion runs projections, in parallel and once per row. The node hands on its
//! input's columns without the score.
//!
//! The types the node carries ([`FoldMode`], [`Selection`]) live here, so that the SQL rewrite
//! that builds the node and the executors that run it both take them from one place.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::{DFSchema, DFSchemaRef, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, UserDefinedLogicalNodeCore};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{Partitioning, PlanProperties};

/// Name of the score column appended below a stage.
pub const SCORE_COLUMN: &str = "__delt_score";

/// What a [`StageNode`] does with its scored input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum Stage {
    /// All rows in folded order ([`crate::stages::fold`]).
    Fold { layers: usize, mode: FoldMode },
    /// The best rows, in input order ([`crate::stages::select`]).
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

/// How the layers of a fold run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum FoldMode {
    /// Every layer low-to-high score (the DELT paper's folding).
    Ascending,
    /// Every layer high-to-low score (ties still in input order).
    Descending,
    /// Even layers low-to-high, odd layers high-to-low (layers counted from 0).
    Zigzag,
}

impl FromStr for FoldMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "asc" | "ascending" => Ok(Self::Ascending),
            "desc" | "descending" => Ok(Self::Descending),
            "zigzag" => Ok(Self::Zigzag),
            other => Err(format!(
                "unknown fold mode '{other}': use 'asc', 'desc' or 'zigzag'"
            )),
        }
    }
}

impl fmt::Display for FoldMode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Self::Ascending => "asc",
            Self::Descending => "desc",
            Self::Zigzag => "zigzag",
        })
    }
}

/// How many rows a selection keeps.
#[derive(Debug, Clone, Copy)]
pub enum Selection {
    /// The k best.
    TopK(u64),
    /// The best `floor(N * r)`.
    TopR(f64),
}

impl Selection {
    /// Rows to keep out of `n`.
    pub fn count(self, n: usize) -> usize {
        match self {
            Self::TopK(k) => usize::try_from(k).unwrap_or(usize::MAX).min(n),
            Self::TopR(r) => ((n as f64) * r).floor() as usize,
        }
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::TopK(k) => write!(f, "top_k={k}"),
            Self::TopR(r) => write!(f, "top_r={r}"),
        }
    }
}

// Plan nodes must be comparable and hashable; a ratio compares by its bits.
impl PartialEq for Selection {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Selection {}
impl std::hash::Hash for Selection {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}
impl PartialOrd for Selection {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.key().cmp(&other.key()))
    }
}
impl Selection {
    fn key(&self) -> (u8, u64) {
        match self {
            Self::TopK(k) => (0, *k),
            Self::TopR(r) => (1, r.to_bits()),
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

    /// The scored input: its columns, then the score ([`SCORE_COLUMN`]).
    pub fn input(&self) -> &LogicalPlan {
        &self.input
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
        Self::over_scored(inputs.swap_remove(0), self.stage)
    }
}

impl StageNode {
    /// `stage` over `input`, whose last column is already the score ([`SCORE_COLUMN`]): how a
    /// node is rebuilt from its parts (a new input, or a plan read back in a cluster).
    pub fn over_scored(input: LogicalPlan, stage: Stage) -> Result<Self> {
        if input.schema().fields().last().map(|f| f.name().as_str()) != Some(SCORE_COLUMN) {
            return plan_err!("a {stage} node's input must end with its score column");
        }
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
            stage,
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
