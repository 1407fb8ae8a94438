//! `COPY (query) TO 'out/' STORED AS MEGATRON | TOKENS OPTIONS (tokenizer 'tokenizer.json')`:
//! the plan that feeds [`crate::io::training`], in the query's order.
//!
//! DataFusion does not know these formats, so the runner takes such a COPY before DataFusion
//! plans it. With a `tokenizer`, the query's `text_column` (default `text`) is tokenized on top
//! of the query, with an end-of-document token after each document (`eos`, default true) and
//! optionally a start token (`bos`); without one, the query must return a list of token ids
//! (`tokens_column`, default `tokens`, for example from `tokenize(...)`) and the
//! `vocab_size`.

use std::collections::HashMap;

use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col, lit};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{CopyToSource, CopyToStatement, Statement};
use datafusion::sql::sqlparser::ast::{Statement as SqlStatement, Value};

use crate::error::{DeltError, Result};
use crate::io::object_stores::take_aws_options;
use crate::io::training::{self, TrainingFormat, TrainingTarget};
use crate::sql::tokenize::{DocumentTokenizer, TOKENIZE};

/// The options read here; the format's own are [`training::OPTIONS`].
pub const TOKENIZER_OPTIONS: [&str; 7] = [
    "tokenizer",
    "text_column",
    "eos",
    "bos",
    "eos_token",
    "bos_token",
    "pad_token",
];

/// The column the tokens of a tokenized export travel in.
const TOKENS: &str = "__delt_tokens";

/// The trainer format of a `COPY` statement, if it writes one.
pub fn training_format(statement: &Statement) -> Option<TrainingFormat> {
    match statement {
        Statement::CopyTo(copy) => copy
            .stored_as
            .as_deref()
            .and_then(TrainingFormat::from_name),
        _ => None,
    }
}

/// A planned export: the query, how it is tokenized, where it goes, and the S3 options given
/// with it.
pub struct Export {
    /// The query as written.
    pub query: LogicalPlan,
    /// With a tokenizer: the columns the writer reads, the tokens computed over the query's
    /// (see [`Export::writer_plan`]).
    pub tokenized: Option<Vec<Expr>>,
    /// The destination and format options.
    pub target: TrainingTarget,
    /// `aws.*` options for the destination's bucket.
    pub aws: HashMap<String, String>,
}

/// Plans `copy`, a COPY to `format`.
pub async fn plan(
    ctx: &SessionContext,
    copy: CopyToStatement,
    format: TrainingFormat,
) -> Result<Export> {
    let what = format!("COPY ... STORED AS {}", format.name());
    if !copy.partitioned_by.is_empty() {
        return Err(DeltError::Config(format!(
            "{what}: PARTITIONED BY is not supported: the shards follow the query's order (shard_tokens)"
        )));
    }
    let mut options = options_map(copy.options);
    let aws = take_aws_options(&mut options);
    let unknown: Vec<&String> = options
        .keys()
        .filter(|k| !TOKENIZER_OPTIONS.contains(&k.as_str()))
        .filter(|k| !training::OPTIONS.contains(&k.as_str()))
        .collect();
    if let Some(key) = unknown.first() {
        return Err(DeltError::Config(format!(
            "{what}: unknown option '{key}'; the options are {}, {} and aws.*",
            TOKENIZER_OPTIONS.join(", "),
            training::OPTIONS.join(", ")
        )));
    }
    let query = match copy.source {
        CopyToSource::Query(query) => {
            let statement = Statement::Statement(Box::new(SqlStatement::Query(query)));
            ctx.state().statement_to_plan(statement).await?
        }
        CopyToSource::Relation(name) => ctx.table(name.to_string()).await?.into_unoptimized_plan(),
    };
    let Some(path) = options.remove("tokenizer") else {
        if let Some(key) = TOKENIZER_OPTIONS.iter().find(|k| options.contains_key(**k)) {
            return Err(DeltError::Config(format!(
                "{what}: option {key} needs a tokenizer: give OPTIONS (tokenizer 'tokenizer.json')"
            )));
        }
        let target = TrainingTarget::new(&copy.target, format, &mut options, None, None)?;
        return Ok(Export {
            query,
            tokenized: None,
            target,
            aws,
        });
    };
    let tokenizer = DocumentTokenizer::shared(&path)?;
    let text = options
        .remove("text_column")
        .unwrap_or_else(|| "text".into());
    let flag = |options: &mut HashMap<String, String>, key: &str, default: bool| match options
        .remove(key)
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(DeltError::Config(format!(
            "{what}: option {key} must be true or false, got '{other}'"
        ))),
    };
    let eos = flag(&mut options, "eos", true)?;
    let bos = flag(&mut options, "bos", false)?;
    let eos_token = options.remove("eos_token");
    let bos_token = options.remove("bos_token");
    // A missing special token fails here, before anything is written.
    if eos {
        tokenizer.eos(eos_token.as_deref())?;
    }
    if bos {
        tokenizer.bos(bos_token.as_deref())?;
    }
    let pad = match options.remove("pad_token") {
        Some(name) => Some(tokenizer.token("pad_token", &name)?),
        // The end-of-document token pads when there is one.
        None => tokenizer.eos(eos_token.as_deref()).ok(),
    };
    // `tokenize`'s add_eos / add_bos: false, true (the usual names) or a token's name.
    let special = |on: bool, name: Option<String>| match (on, name) {
        (false, _) => lit(false),
        (true, None) => lit(true),
        (true, Some(name)) => lit(name),
    };
    let schema = query.schema();
    if schema.field_with_unqualified_name(&text).is_err() {
        return Err(DeltError::Config(format!(
            "{what}: the query has no column '{text}' to tokenize: select it, or name the text column with OPTIONS (text_column 'body')"
        )));
    }
    let target = TrainingTarget::new(
        &copy.target,
        format,
        &mut options,
        Some(tokenizer.vocab_size() as u64),
        pad,
    )?
    .with_tokens_column(TOKENS);
    let id = target.id_column().map(str::to_string).or_else(|| {
        schema
            .field_with_unqualified_name("id")
            .ok()
            .map(|_| "id".into())
    });
    let tokenize = ctx.udf(TOKENIZE)?.call(vec![
        col(text.as_str()),
        lit(path),
        special(eos, eos_token),
        special(bos, bos_token),
    ]);
    let mut columns: Vec<Expr> = id.iter().map(|id| col(id.as_str())).collect();
    columns.push(tokenize.alias(TOKENS));
    Ok(Export {
        query,
        tokenized: Some(columns),
        target: target.with_id_column(id),
        aws,
    })
}

impl Export {
    /// The plan the writer reads: `query` (the export's query, or what `--resume` made of it),
    /// tokenized on top when a tokenizer was given.
    pub fn writer_plan(&self, query: LogicalPlan) -> Result<LogicalPlan> {
        Ok(match &self.tokenized {
            Some(columns) => LogicalPlanBuilder::from(query)
                .project(columns.clone())?
                .build()?,
            None => query,
        })
    }
}

/// COPY options as `key -> value` text, keys in lower case.
fn options_map(options: Vec<(String, Value)>) -> HashMap<String, String> {
    options
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s,
                Value::Number(n, _) => n.to_string(),
                other => other.to_string(),
            };
            let key = key.to_ascii_lowercase();
            let key = key
                .strip_prefix("format.")
                .map(str::to_string)
                .unwrap_or(key);
            (key, value)
        })
        .collect()
}
