//! Scans a cluster can ship: delt's JSON lines reader becomes DataFusion's JSON reader.
//!
//! DataFusion's plan format knows its own file formats only, and has no hook for others in a
//! table scan. delt's JSON lines format is DataFusion's JSON format with a faster decoder of the
//! same rows, so a cluster client swaps it back before the plan leaves: the executors read the
//! same rows with DataFusion's decoder, and the SQL stays the same as in a local run.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::Transformed;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::Result;
use datafusion::logical_expr::{LogicalPlan, TableScan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::io::jsonl::JsonLinesFormat;

/// The optimizer rule of a cluster client's session (see the module documentation).
#[derive(Debug, Default)]
pub struct PortableScans;

impl OptimizerRule for PortableScans {
    fn name(&self) -> &str {
        "delt_portable_scans"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::TableScan(scan) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let provider = source_as_provider(&scan.source)?;
        let Some(table) = provider.downcast_ref::<ListingTable>() else {
            return Ok(Transformed::no(plan));
        };
        let Some(json_lines) =
            (table.options().format.as_ref() as &dyn Any).downcast_ref::<JsonLinesFormat>()
        else {
            return Ok(Transformed::no(plan));
        };
        let options = ListingOptions {
            format: json_lines.datafusion_format(),
            ..table.options().clone()
        };
        // The table's schema ends with its partition columns; the files hold the rest.
        let table_schema = table.schema();
        let file_fields = table_schema.fields().len() - options.table_partition_cols.len();
        let file_schema = Arc::new(Schema::new_with_metadata(
            table_schema.fields()[..file_fields].to_vec(),
            table_schema.metadata().clone(),
        ));
        let portable = ListingTable::try_new(
            ListingTableConfig::new_with_multi_paths(table.table_paths().clone())
                .with_listing_options(options)
                .with_schema(file_schema),
        )?;
        Ok(Transformed::yes(LogicalPlan::TableScan(TableScan {
            source: provider_as_source(Arc::new(portable)),
            ..scan.clone()
        })))
    }
}
