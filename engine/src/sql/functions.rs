//! The DELT functions as SQL sees them.
//!
//! `fold_order`, `shuffle_order`, `top_k` and `top_r` are not evaluated row by row: the SQL
//! planner only needs to know their names and types, and [`crate::sql::rewrite::DeltRewrite`] turns
//! each use into a plan node (an ordering or a selection). Used anywhere else they fail with a
//! message saying where they belong.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::plan_err;
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

/// `ORDER BY fold_order(score, L [, mode])`.
pub const FOLD_ORDER: &str = "fold_order";
/// `ORDER BY shuffle_order(seed)`.
pub const SHUFFLE_ORDER: &str = "shuffle_order";
/// `WHERE top_k(score, k)`.
pub const TOP_K: &str = "top_k";
/// `WHERE top_r(score, r)`.
pub const TOP_R: &str = "top_r";

/// A function that exists for the planner and is replaced before execution.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PlanOnlyFunction {
    name: &'static str,
    signature: Signature,
    return_type: DataType,
    usage: &'static str,
}

impl ScalarUDFImpl for PlanOnlyFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.return_type.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        plan_err!(
            "{} cannot be evaluated as a value: {}",
            self.name,
            self.usage
        )
    }
}

fn plan_only(
    name: &'static str,
    arities: &[usize],
    return_type: DataType,
    usage: &'static str,
) -> Arc<ScalarUDF> {
    let signature = Signature::one_of(
        arities.iter().map(|&n| TypeSignature::Any(n)).collect(),
        Volatility::Volatile,
    );
    Arc::new(ScalarUDF::new_from_impl(PlanOnlyFunction {
        name,
        signature,
        return_type,
        usage,
    }))
}

/// All DELT functions, ready to register in a session.
pub fn all() -> Vec<Arc<ScalarUDF>> {
    vec![
        plan_only(
            FOLD_ORDER,
            &[2, 3],
            DataType::UInt64,
            "use it as the only ORDER BY key, e.g. ORDER BY fold_order(score, 3)",
        ),
        plan_only(
            SHUFFLE_ORDER,
            &[1],
            DataType::UInt64,
            "use it as the only ORDER BY key, e.g. ORDER BY shuffle_order(42)",
        ),
        plan_only(
            TOP_K,
            &[2],
            DataType::Boolean,
            "use it as a WHERE condition, e.g. WHERE top_k(score, 1000)",
        ),
        plan_only(
            TOP_R,
            &[2],
            DataType::Boolean,
            "use it as a WHERE condition, e.g. WHERE top_r(score, 0.5)",
        ),
    ]
}
