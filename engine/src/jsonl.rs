//! `.jsonl` as a file format name: `STORED AS JSONL`, `SELECT * FROM 'docs.jsonl'`,
//! `COPY ... TO 'out.jsonl'`.
//!
//! DataFusion reads newline-delimited JSON under the name `json` and the extension `.json`;
//! the reference DELT tools and most LM data use `.jsonl`. This registers the same reader and
//! writer under that name, so such files work as they are.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::common::GetExt;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::file_format::json::JsonFormatFactory;
use datafusion::error::Result;

/// The JSON lines format under the name `jsonl`.
#[derive(Debug, Default)]
pub struct JsonLinesFormatFactory(JsonFormatFactory);

impl FileFormatFactory for JsonLinesFormatFactory {
    fn create(
        &self,
        state: &dyn Session,
        format_options: &HashMap<String, String>,
    ) -> Result<Arc<dyn FileFormat>> {
        self.0.create(state, format_options)
    }

    fn default(&self) -> Arc<dyn FileFormat> {
        self.0.default()
    }
}

impl GetExt for JsonLinesFormatFactory {
    fn get_ext(&self) -> String {
        "jsonl".to_string()
    }
}
