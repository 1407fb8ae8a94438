//! Turns uses of the DELT functions into plan nodes, before DataFusion optimises the plan.
//!
//! * `Sort` whose only key is `fold_order(score, L [, mode])` becomes a fold [`StageNode`];
//! * `Sort` whose only key is `shuffle_order(seed)` becomes a sort on a seeded row hash;
//! * `Filter` with a `top_k(score, k)` or `top_r(score, r)` conjunct becomes a selection [`StageNode`]
//!   over a filter of the other conjuncts (they apply first, so N counts the rows that pass them).
//!
//! Every misuse is a planning error that says what to write instead.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::expr::{ScalarFunction, Sort as SortExpr};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    Expr, ExprSchemable, Extension, Filter, LogicalPlan, LogicalPlanBuilder, ScalarUDF, Sort,
    UserDefinedLogicalNode,
};
use datafusion::optimizer::AnalyzerRule;

use crate::sql::functions::{FOLD_ORDER, SHUFFLE_ORDER, TOP_K, TOP_R};
use crate::stages::FoldMode;
use crate::stages::Selection;
use crate::stages::node::{Stage, StageNode};
use crate::stages::shuffle::ShuffleKey;

/// The analyzer rule that plans the DELT functions.
#[derive(Debug, Default)]
pub struct DeltRewrite;

impl AnalyzerRule for DeltRewrite {
    fn name(&self) -> &str {
        "delt_rewrite"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| match node {
            LogicalPlan::Sort(sort) => rewrite_sort(sort),
            LogicalPlan::Filter(filter) => rewrite_filter(filter),
            other => Ok(Transformed::no(other)),
        })
        .data()
    }
}

/// The arguments of `expr` if it is a call to the function `name`.
fn call_args<'a>(expr: &'a Expr, name: &str) -> Option<&'a [Expr]> {
    match expr {
        Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == name => Some(args),
        _ => None,
    }
}

fn mentions(expr: &Expr, names: &[&str]) -> bool {
    expr.exists(|e| Ok(names.iter().any(|name| call_args(e, name).is_some())))
        .unwrap_or(false)
}

fn rewrite_sort(sort: Sort) -> Result<Transformed<LogicalPlan>> {
    let orderings = [FOLD_ORDER, SHUFFLE_ORDER];
    if !sort.expr.iter().any(|s| mentions(&s.expr, &orderings)) {
        return Ok(Transformed::no(LogicalPlan::Sort(sort)));
    }
    let Some(name) = orderings
        .into_iter()
        .find(|n| call_args(&sort.expr[0].expr, n).is_some())
    else {
        return plan_err!(
            "fold_order/shuffle_order must be a whole ORDER BY key, not part of an expression"
        );
    };
    if sort.expr.len() > 1 {
        return plan_err!(
            "{name}(...) must be the only ORDER BY key, found {} keys",
            sort.expr.len()
        );
    }
    let SortExpr { expr, asc, .. } = &sort.expr[0];
    if !asc {
        return plan_err!(
            "ORDER BY {name}(...) DESC is not supported: {name} defines the whole order \
             (for high-to-low folding use fold_order(score, L, 'desc'))"
        );
    }
    let args = call_args(expr, name).unwrap_or_default();
    let input = Arc::unwrap_or_clone(sort.input);
    let plan = if name == FOLD_ORDER {
        plan_fold(input, args)?
    } else {
        plan_shuffle(input, args)?
    };
    let plan = match sort.fetch {
        Some(fetch) => LogicalPlanBuilder::from(plan)
            .limit(0, Some(fetch))?
            .build()?,
        None => plan,
    };
    Ok(Transformed::yes(plan))
}

fn plan_fold(input: LogicalPlan, args: &[Expr]) -> Result<LogicalPlan> {
    let (score, layers, mode) = match args {
        [score, layers] => (score, layers, None),
        [score, layers, mode] => (score, layers, Some(mode)),
        _ => return plan_err!("fold_order takes (score, L) or (score, L, mode)"),
    };
    check_numeric(FOLD_ORDER, score, &input)?;
    let layers = match integer_literal(layers) {
        Some(l) if l >= 1 => l as usize,
        _ => {
            return plan_err!(
                "fold_order: L must be a positive integer literal, e.g. fold_order(score, 3); got {layers}"
            );
        }
    };
    let mode = match mode {
        None => FoldMode::Ascending,
        Some(Expr::Literal(ScalarValue::Utf8(Some(m)) | ScalarValue::Utf8View(Some(m)), _)) => m
            .parse()
            .map_err(|e| datafusion::error::DataFusionError::Plan(format!("fold_order: {e}")))?,
        Some(other) => {
            return plan_err!(
                "fold_order: the mode must be a string literal ('asc', 'desc' or 'zigzag'), got {other}"
            );
        }
    };
    Ok(extension(StageNode::try_new(
        input,
        score.clone(),
        Stage::Fold { layers, mode },
    )?))
}

fn plan_shuffle(input: LogicalPlan, args: &[Expr]) -> Result<LogicalPlan> {
    let seed = match args {
        [seed] => integer_literal(seed),
        _ => None,
    };
    let Some(seed) = seed else {
        return plan_err!("shuffle_order takes one integer literal seed, e.g. shuffle_order(42)");
    };
    let mut key_args = vec![Expr::Literal(ScalarValue::Int64(Some(seed)), None)];
    key_args.extend(input.schema().columns().into_iter().map(Expr::Column));
    let key = Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(ShuffleKey::new())),
        key_args,
    ));
    LogicalPlanBuilder::from(input)
        .sort(vec![key.sort(true, false)])?
        .build()
}

fn rewrite_filter(filter: Filter) -> Result<Transformed<LogicalPlan>> {
    let selections = [TOP_K, TOP_R];
    if !mentions(&filter.predicate, &selections) {
        return Ok(Transformed::no(LogicalPlan::Filter(filter)));
    }
    let mut calls = Vec::new();
    let mut others = Vec::new();
    for conjunct in split_conjunction(&filter.predicate) {
        match selections
            .into_iter()
            .find_map(|n| call_args(conjunct, n).map(|a| (n, a)))
        {
            Some(call) => calls.push(call),
            None if mentions(conjunct, &selections) => {
                return plan_err!(
                    "top_k/top_r must be a condition of its own in WHERE, joined to the others with AND \
                     (not inside OR, NOT or an expression)"
                );
            }
            None => others.push(conjunct.clone()),
        }
    }
    let [(name, args)] = calls[..] else {
        return plan_err!(
            "only one top_k/top_r per WHERE: select in a subquery to chain selections"
        );
    };
    let [score, amount] = args else {
        return plan_err!(
            "{name} takes two arguments: (score, {})",
            if name == TOP_K { "k" } else { "r" }
        );
    };
    let input = Arc::unwrap_or_clone(filter.input);
    check_numeric(name, score, &input)?;
    let selection = if name == TOP_K {
        match integer_literal(amount) {
            Some(k) if k >= 0 => Selection::TopK(k as u64),
            _ => return plan_err!("top_k: k must be a non-negative integer literal, got {amount}"),
        }
    } else {
        match float_literal(amount) {
            Some(r) if (0.0..=1.0).contains(&r) => Selection::TopR(r),
            _ => {
                return plan_err!(
                    "top_r: r must be a number literal between 0 and 1, got {amount}"
                );
            }
        }
    };
    let input = match conjunction(others) {
        Some(predicate) => LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(input))?),
        None => input,
    };
    Ok(Transformed::yes(extension(StageNode::try_new(
        input,
        score.clone(),
        Stage::Select(selection),
    )?)))
}

fn extension(node: impl UserDefinedLogicalNode + 'static) -> LogicalPlan {
    LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    })
}

fn check_numeric(function: &str, score: &Expr, input: &LogicalPlan) -> Result<()> {
    let data_type = score.get_type(input.schema())?;
    if data_type.is_numeric() || data_type.is_null() {
        Ok(())
    } else {
        plan_err!("{function}: the score must be numeric, but {score} is {data_type}")
    }
}

/// The value of a numeric literal of a type `accept`s, cast to `to`.
fn literal(expr: &Expr, accept: fn(&DataType) -> bool, to: &DataType) -> Option<ScalarValue> {
    match expr {
        Expr::Literal(value, _) if accept(&value.data_type()) => value.cast_to(to).ok(),
        _ => None,
    }
}

fn integer_literal(expr: &Expr) -> Option<i64> {
    match literal(expr, DataType::is_integer, &DataType::Int64)? {
        ScalarValue::Int64(v) => v,
        _ => None,
    }
}

fn float_literal(expr: &Expr) -> Option<f64> {
    match literal(expr, DataType::is_numeric, &DataType::Float64)? {
        ScalarValue::Float64(v) => v,
        _ => None,
    }
}
