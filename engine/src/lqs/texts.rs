//! The texts the LQS jobs read: one text column (and an id column) of any file delt reads.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;

use crate::DeltError;

/// Texts of a file with their ids.
pub struct Texts {
    /// The id column, as stored.
    pub ids: ArrayRef,
    /// The texts, in file order.
    pub texts: Vec<String>,
}

/// Reads `id_column` and `text_column` of `path` (Parquet, JSON lines, CSV; local or S3).
pub async fn read_texts(
    ctx: &SessionContext,
    path: &str,
    id_column: Option<&str>,
    text_column: &str,
) -> Result<Texts, DeltError> {
    let id = id_column.map_or("row_number() OVER () - 1".to_string(), |c| {
        format!("\"{c}\"")
    });
    let sql = format!("SELECT {id} AS id, \"{text_column}\" AS text FROM '{path}'");
    let read = async { ctx.sql(&sql).await?.collect().await };
    let batches = read.await.map_err(|e| DeltError::reading(path, e))?;
    let ids: Vec<ArrayRef> = batches.iter().map(|b| b.column(0).clone()).collect();
    let id_refs: Vec<&dyn Array> = ids.iter().map(|a| a.as_ref()).collect();
    let ids = if id_refs.is_empty() {
        Arc::new(StringArray::from(Vec::<String>::new())) as ArrayRef
    } else {
        concat(&id_refs)?
    };
    let mut texts = Vec::new();
    for b in &batches {
        let column = cast(b.column(1), &DataType::Utf8)?;
        for (row, t) in column.as_string::<i32>().iter().enumerate() {
            texts.push(t.map(str::to_string).ok_or_else(|| {
                DeltError::Config(format!(
                    "{path}: row {} has no {text_column}: remove NULL texts first",
                    texts.len() + row
                ))
            })?);
        }
    }
    Ok(Texts { ids, texts })
}
