//! The error type of the delt library.

use datafusion::error::DataFusionError;
use object_store::client::{HttpError, HttpErrorKind};

/// Everything that can go wrong while planning or running a delt pipeline.
///
/// Each message names the thing at fault (file, line, statement, option) and, where there is
/// one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DeltError {
    /// A `${name}` in the SQL text has no value.
    #[error("parameter `{name}` is used in the SQL but not set: pass --param {name}=VALUE")]
    MissingParam { name: String },

    /// A `--param` argument is not of the form `name=value`.
    #[error("invalid --param `{0}`: expected NAME=VALUE")]
    BadParam(String),

    /// A `${name}` outside quotes whose value is neither a number nor `true`/`false`.
    #[error(
        "parameter `{name}` is used outside quotes, where only a number or true/false can go, \
         but its value is {value:?}: put '${{{name}}}' in quotes for a text value"
    )]
    ParamNotLiteral { name: String, value: String },

    /// A `${name}` inside a quoted identifier.
    #[error(
        "parameter `{name}` is inside a quoted identifier ({quote}...{quote}): identifiers \
         cannot be parameters; write the name itself, or '${{{name}}}' where text is meant"
    )]
    ParamInIdentifier { name: String, quote: String },

    /// A `${name}` inside a string other than a plain `'...'` one.
    #[error(
        "parameter `{name}` is inside a string opened by {opening}, where a value cannot be \
         bound safely: use a plain '...' string, '${{{name}}}'"
    )]
    ParamInString { name: String, opening: String },

    /// Text values that would change the SQL around their strings, not just the strings.
    #[error(
        "the value of parameter {} would change the SQL around its '...' string: delt misread \
         the quotes near it; write that part of the SQL more plainly (and please report it)",
        list(.names, "`", "`")
    )]
    ParamChangesSql { names: Vec<String> },

    /// `--param` values that no `${name}` of the run's SQL uses.
    #[error(
        "unused --param {}: the SQL has no {} outside comments; remove the --param or \
         correct the name",
        list(.names, "`", "`"),
        list(.names, "${", "}")
    )]
    UnusedParams { names: Vec<String> },

    /// A statement failed; `source` says why.
    #[error("{origin}, statement {index} ({sql}): {source}")]
    Statement {
        /// 1-based position of the statement in its SQL text.
        index: usize,
        /// Where the SQL text came from (a file path or `-c`).
        origin: String,
        /// The start of the statement.
        sql: String,
        source: Box<DeltError>,
    },

    /// An error from DataFusion (planning or execution).
    #[error("{}", clean_datafusion_message(.0))]
    DataFusion(#[from] DataFusionError),

    /// A scorer plugin could not be loaded.
    #[error(transparent)]
    Plugin(#[from] crate::plugins::host::PluginError),

    /// The diagnosis of a failed scan: which input file is bad and where.
    #[error("{0}")]
    BadInput(String),

    /// Writing the output failed; the destination was left as it was.
    #[error("writing {destination} failed (destination left untouched): {source}")]
    Output {
        destination: String,
        source: Box<DeltError>,
    },

    /// A dependency panicked (for example a decoder on corrupt input); delt caught it.
    #[error("internal error while running the statement: {0}")]
    Panic(String),

    /// Invalid options or configuration.
    #[error("{0}")]
    Config(String),

    /// A cluster's scheduler or executor could not start, or could not be reached.
    #[error("{0}")]
    Cluster(String),

    /// A model could not be loaded, trained or run.
    #[error(transparent)]
    Model(#[from] delt_models::ModelError),

    /// An Arrow or Parquet error outside a query.
    #[error("{0}")]
    Arrow(String),

    /// An I/O error outside DataFusion.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Parameter names for a message, each between `before` and `after`: `a`, `b`.
fn list(names: &[String], before: &str, after: &str) -> String {
    names
        .iter()
        .map(|name| format!("{before}{name}{after}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Strips DataFusion's nesting noise ("External error: ", "Arrow error: " chains, backtraces)
/// down to the one line a user needs.
fn clean_datafusion_message(err: &DataFusionError) -> String {
    let root = err.find_root();
    let text = match root {
        DataFusionError::Context(_, _) => err.to_string(),
        other => other.to_string(),
    };
    let text = text
        .split("\n\nbacktrace")
        .next()
        .unwrap_or_default()
        .trim();
    // Object store errors can span lines (an XML body); keep the message on one line.
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = cluster_task_failure(&text).unwrap_or(text);
    if text.contains("Resources exhausted") {
        format!("{text} (raise --memory-limit, or leave it unset to use all memory)")
    } else if timed_out(err) {
        format!(
            "{text} (no answer in time: check that the endpoint of that URL is an S3 server \
             reachable from here, or allow more with OPTIONS ('aws.timeout' ..., \
             'aws.connect_timeout' ..., 'aws.retries' ...) or AWS_TIMEOUT, AWS_CONNECT_TIMEOUT)"
        )
    } else if text.contains("S3 error") {
        format!(
            "{text} (check the S3 endpoint, region and credentials: AWS_* environment variables \
             or OPTIONS ('aws.endpoint' ..., 'aws.access_key_id' ..., 'aws.secret_access_key' ...))"
        )
    } else {
        text
    }
}

/// The message of a task that failed on an executor, out of the scheduler's report of the job
/// (`Job ID failed: ... runtime execution error: DataFusionError(...("MESSAGE"))`), as
/// `cluster job ID failed: MESSAGE`. `None` for any other text.
fn cluster_task_failure(text: &str) -> Option<String> {
    let job = text.split("Job ").nth(1)?.split_whitespace().next()?;
    let (_, debug) = text.split_once("Task failed due to runtime execution error: ")?;
    let start = debug.find("(\"")? + 2;
    let end = debug.rfind("\")")?;
    let message = debug
        .get(start..end)?
        .replace("\\\"", "\"")
        .replace("\\\\", "\\");
    Some(format!("cluster job {job} failed: {message}"))
}

/// Whether an object store request gave up waiting: to connect (`aws.connect_timeout`) or for
/// the answer (`aws.timeout`).
fn timed_out(err: &DataFusionError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<HttpError>()
            .is_some_and(|e| matches!(e.kind(), HttpErrorKind::Timeout))
        {
            return true;
        }
        next = e.source();
    }
    false
}

impl From<datafusion::arrow::error::ArrowError> for DeltError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Self::Arrow(e.to_string())
    }
}

impl From<datafusion::parquet::errors::ParquetError> for DeltError {
    fn from(e: datafusion::parquet::errors::ParquetError) -> Self {
        Self::Arrow(e.to_string())
    }
}

impl DeltError {
    /// Wraps an I/O error with what was being attempted.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// An error of a query that reads the file(s) at `path`, naming them. DataFusion says a
    /// path it cannot find is a table that is not found; this says which path is missing.
    pub fn reading(path: &str, error: DataFusionError) -> Self {
        match error.find_root() {
            DataFusionError::Plan(message)
                if message.starts_with("table '") && message.ends_with("not found") =>
            {
                Self::BadInput(format!(
                    "{path}: no such file or no files in that directory; check the path"
                ))
            }
            _ => Self::Config(format!("{path}: {}", Self::from(error))),
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = DeltError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::cluster_task_failure;

    #[test]
    fn a_task_failure_is_reported_with_its_message_only() {
        let report = r#"Execution error: Job 038J failed: Job failed due to stage 0 failed: Task failed due to runtime execution error: DataFusionError(Shared(External(DataFusionError(Execution("plugin \"q\" is gone")))))"#;
        assert_eq!(
            cluster_task_failure(report).as_deref(),
            Some(r#"cluster job 038J failed: plugin "q" is gone"#)
        );
        assert_eq!(cluster_task_failure("Execution error: disk full"), None);
    }
}
