//! `CREATE FUNCTION ... LANGUAGE delt AS 'library#function?option=value&...'`.
//!
//! DataFusion parses `CREATE FUNCTION` and hands it to a [`FunctionFactory`]; it keeps no
//! `OPTIONS` clause, so the function body carries everything, URL style:
//!
//! ```sql
//! CREATE FUNCTION quality(text VARCHAR) RETURNS DOUBLE LANGUAGE delt
//! AS 'plugins/libtext_quality.so#text_quality?min_words=50&batch_size=4096';
//! ```
//!
//! * the library: a path (relative to the working directory), or a bare name such as
//!   `delt_lqs` for `libdelt_lqs.so` in `DELT_PLUGIN_PATH` or beside the `delt` executable,
//!   or an `s3://` URL (fetched once into a local cache, by content hash);
//! * `#function`: the plugin function (default: the SQL name, or the library's only function);
//! * `?name=value&...`: `batch_size` (rows per call), `concurrency` (instances scoring at
//!   once) and `isolation` (`process`: each instance in a child process, so that a crash fails
//!   the query; `in-process`, the default) are delt's; every other option goes to the plugin,
//!   as a number or boolean when it reads as one, else as a string.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::{FunctionFactory, RegisterFunction};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{CreateFunction, Expr};
use delt_plugin::Options;

use crate::plugins::call::PluginCall;
use crate::plugins::host::{FunctionSettings, PluginRegistry, find_library};
use crate::plugins::isolation::Isolation;
use crate::plugins::remote_library;

/// Creates plugin functions from `CREATE FUNCTION ... LANGUAGE delt`.
#[derive(Debug)]
pub struct DeltFunctionFactory {
    registry: Arc<PluginRegistry>,
    isolation: Isolation,
    dirs: Vec<PathBuf>,
}

impl DeltFunctionFactory {
    /// A factory loading libraries through `registry`; functions whose body names no
    /// `isolation` get `isolation`; a library named without a path is looked for in `dirs`
    /// first (see [`find_library`]).
    pub fn new(registry: Arc<PluginRegistry>, isolation: Isolation, dirs: Vec<PathBuf>) -> Self {
        Self {
            registry,
            isolation,
            dirs,
        }
    }
}

/// A parsed function body.
#[derive(Debug, PartialEq)]
pub struct FunctionBody {
    /// Library path.
    pub library: String,
    /// Plugin function, if named.
    pub function: Option<String>,
    /// Host settings and plugin options.
    pub settings: FunctionSettings,
    /// The isolation the body asks for, if it names one.
    pub isolation: Option<Isolation>,
}

/// Parses `library#function?name=value&...`.
pub fn parse_body(body: &str) -> Result<FunctionBody> {
    let (rest, query) = body.split_once('?').unwrap_or((body, ""));
    let (library, function) = match rest.split_once('#') {
        Some((library, function)) => (library, Some(function.to_string())),
        None => (rest, None),
    };
    if library.is_empty() {
        return plan_err!("CREATE FUNCTION ... AS '{body}': the library path is missing");
    }
    let mut settings = FunctionSettings::default();
    let mut isolation = None;
    let mut options = Options::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return plan_err!("CREATE FUNCTION option '{pair}' has no value: write name=value");
        };
        let count = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "CREATE FUNCTION option {name} must be a positive integer, got '{value}'"
                    ))
                })
        };
        match name {
            "batch_size" => settings.batch_size = count()?,
            "concurrency" => settings.concurrency = count()?,
            "isolation" => {
                isolation =
                    Some(value.parse().map_err(|e: String| {
                        DataFusionError::Plan(format!("CREATE FUNCTION: {e}"))
                    })?)
            }
            _ => {
                let parsed = serde_json::from_str::<serde_json::Value>(value)
                    .ok()
                    .filter(|v| v.is_number() || v.is_boolean())
                    .unwrap_or_else(|| serde_json::Value::String(value.to_string()));
                options.insert(name.to_string(), parsed);
            }
        }
    }
    settings.options = options;
    Ok(FunctionBody {
        library: library.to_string(),
        function,
        settings,
        isolation,
    })
}

#[async_trait]
impl FunctionFactory for DeltFunctionFactory {
    async fn create(
        &self,
        _state: &SessionState,
        statement: CreateFunction,
    ) -> Result<RegisterFunction> {
        let language = statement
            .params
            .language
            .as_ref()
            .map(|l| l.value.to_ascii_lowercase());
        if language.as_deref() != Some("delt") {
            return plan_err!(
                "CREATE FUNCTION {}: use LANGUAGE delt (a scorer plugin)",
                statement.name
            );
        }
        let body = match &statement.params.function_body {
            Some(Expr::Literal(ScalarValue::Utf8(Some(body)), _)) => body.clone(),
            _ => {
                return plan_err!(
                    "CREATE FUNCTION {}: AS 'path/to/library.so#function?option=value' expected",
                    statement.name
                );
            }
        };
        let body = parse_body(&body)?;
        let path = if remote_library::is_remote(&body.library) {
            remote_library::fetch(&body.library).await?
        } else {
            find_library(&body.library, &self.dirs)
                .map_err(|e| DataFusionError::Plan(e.to_string()))?
        };
        let library = self
            .registry
            .load(&path)
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let function = match body.function {
            Some(function) => function,
            None if library.manifest().find(&statement.name).is_some() => statement.name.clone(),
            None if library.manifest().functions.len() == 1 => {
                library.manifest().functions[0].name.clone()
            }
            None => {
                return plan_err!(
                    "CREATE FUNCTION {}: {} has several functions; name one with '#function'",
                    statement.name,
                    body.library
                );
            }
        };
        let spec = library
            .function(&function)
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        if let Some(args) = &statement.args
            && args.len() != spec.args.len()
        {
            return plan_err!(
                "CREATE FUNCTION {}: {function} takes {} argument(s), not {}",
                statement.name,
                spec.args.len(),
                args.len()
            );
        }
        if let Some(returns) = &statement.return_type
            && *returns != spec.returns.data_type()
        {
            return plan_err!(
                "CREATE FUNCTION {}: {function} returns {}, not {returns}",
                statement.name,
                spec.returns.data_type()
            );
        }
        let settings = FunctionSettings {
            isolation: body.isolation.unwrap_or(self.isolation),
            ..body.settings
        };
        let call = PluginCall {
            sql_name: statement.name.clone(),
            library: body.library,
            function,
            settings,
        };
        let udf = call.make(&path, &self.registry)?;
        self.registry.record(call);
        Ok(RegisterFunction::Scalar(Arc::new(udf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bodies() {
        let body =
            parse_body("lib/x.so#quality?min_words=5&lang=en&strict=true&batch_size=64").unwrap();
        assert_eq!(body.library, "lib/x.so");
        assert_eq!(body.function.as_deref(), Some("quality"));
        assert_eq!(body.settings.batch_size, 64);
        assert_eq!(body.settings.options["min_words"], serde_json::json!(5));
        assert_eq!(body.settings.options["lang"], serde_json::json!("en"));
        assert_eq!(body.settings.options["strict"], serde_json::json!(true));
        assert!(!body.settings.options.contains_key("batch_size"));
        assert_eq!(parse_body("x.so").unwrap().function, None);
        assert!(parse_body("x.so?batch_size=0").is_err());
        assert!(parse_body("x.so?novalue").is_err());
        assert!(parse_body("#f").is_err());
    }
}
