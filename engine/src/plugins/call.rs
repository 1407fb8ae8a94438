//! A plugin function as its definition: enough to make it again in another process.
//!
//! A cluster's scheduler and executors never see the `CREATE FUNCTION` statement: the client
//! ships each plugin function inside the plans as a [`PluginCall`] (JSON), and every process
//! loads the library and creates the function itself ([`PluginCall::make`]).

use std::path::Path;

use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::ScalarUDF;
use serde_json::{Value, json};

use super::host::{FunctionSettings, PluginFunction, PluginRegistry};

/// How a SQL function was made from a plugin library.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginCall {
    /// The name the SQL calls it by.
    pub sql_name: String,
    /// The library as the SQL named it: a path, a bare name (`delt_lqs`, looked up on each
    /// host in `DELT_PLUGIN_PATH` and beside its `delt` executable) or an `s3://` URL.
    pub library: String,
    /// The function of the library.
    pub function: String,
    /// Options and host settings.
    pub settings: FunctionSettings,
}

impl PluginCall {
    /// The definition as JSON bytes, as it travels in a plan.
    pub fn to_bytes(&self) -> Vec<u8> {
        json!({
            "sql_name": self.sql_name,
            "library": self.library,
            "function": self.function,
            "options": Value::Object(self.settings.options.clone()),
            "batch_size": self.settings.batch_size,
            "concurrency": self.settings.concurrency,
            "isolation": self.settings.isolation.to_string(),
        })
        .to_string()
        .into_bytes()
    }

    /// Reads [`to_bytes`](Self::to_bytes)'s output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |what: &str| {
            DataFusionError::Plan(format!(
                "a plugin function in the plan is malformed ({what}): are the client and this \
                 process the same delt version?"
            ))
        };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
        let text = |key: &str| {
            value[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(key))
        };
        let count = |key: &str| {
            value[key]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad(key))
        };
        Ok(Self {
            sql_name: text("sql_name")?,
            library: text("library")?,
            function: text("function")?,
            settings: FunctionSettings {
                options: value["options"]
                    .as_object()
                    .cloned()
                    .ok_or_else(|| bad("options"))?,
                batch_size: count("batch_size")?,
                concurrency: count("concurrency")?,
                isolation: text("isolation")?.parse().map_err(|e: String| bad(&e))?,
            },
        })
    }

    /// Loads the library at `path` through `registry` and creates the function with one
    /// instance, so that bad options fail now.
    pub fn make(&self, path: &Path, registry: &PluginRegistry) -> Result<ScalarUDF> {
        let library = registry
            .load(path)
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        Ok(PluginFunction::try_new(
            &self.sql_name,
            library,
            &self.function,
            self.settings.clone(),
        )?
        .into_udf())
    }

    /// As [`make`](Self::make) in a cluster's scheduler or executor: instances are created by
    /// the first batch ([`PluginFunction::deferred`]). With a `device`, a function that takes
    /// a `device` option gets it: an executor's `--device` decides where its models go.
    pub fn make_deferred(
        &self,
        path: &Path,
        registry: &PluginRegistry,
        device: Option<&str>,
    ) -> Result<ScalarUDF> {
        let library = registry
            .load(path)
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let mut settings = self.settings.clone();
        if let Some(device) = device {
            let spec = library
                .function(&self.function)
                .map_err(|e| DataFusionError::Plan(e.to_string()))?;
            if spec.options.contains_key("device") {
                settings
                    .options
                    .insert("device".into(), Value::String(device.to_string()));
            }
        }
        Ok(PluginFunction::deferred(&self.sql_name, library, &self.function, settings)?.into_udf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::isolation::Isolation;

    #[test]
    fn a_call_survives_its_bytes() {
        let mut settings = FunctionSettings {
            batch_size: 64,
            concurrency: 3,
            isolation: Isolation::Process,
            ..FunctionSettings::default()
        };
        settings.options.insert("min_words".into(), json!(5));
        let call = PluginCall {
            sql_name: "quality".into(),
            library: "s3://bucket/libq.so".into(),
            function: "text_quality".into(),
            settings,
        };
        assert_eq!(PluginCall::from_bytes(&call.to_bytes()).unwrap(), call);
        let err = PluginCall::from_bytes(b"{\"sql_name\": 1}").unwrap_err();
        assert!(err.to_string().contains("malformed (sql_name)"), "{err}");
    }
}
