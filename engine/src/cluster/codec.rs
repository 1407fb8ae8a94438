//! How delt's plan nodes and plugin functions travel between the processes of a cluster.
//!
//! Ballista serializes plans with DataFusion's protobuf format and hands whatever that format
//! does not know to an extension codec. delt's codecs wrap Ballista's own (its shuffle and
//! cache nodes) and add:
//!
//! * the logical [`StageNode`] (fold or selection) that the client's rewrite puts in the plan
//!   it sends to the scheduler;
//! * the physical [`OrderKeyExec`], [`FoldExec`] and [`SelectExec`] that the scheduler sends to
//!   the executors;
//! * plugin functions (`CREATE FUNCTION ... LANGUAGE delt`): encoded as their
//!   [`PluginCall`], so the scheduler and every executor load the library and create the
//!   function themselves. An executor's `--device` becomes the function's `device` option.
//!
//! Every delt payload starts with [`DELT_TAG`]; anything else is Ballista's.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde_json::{Value, json};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::distributed_fold::{
    FoldRunsExec, FoldRunsNode, FoldShardsExec, FoldShardsNode, HashKeyExec,
};
use super::unavailable_function::UnavailableFunction;
use crate::plugins::call::PluginCall;
use crate::plugins::host::{PluginRegistry, find_library};
use crate::plugins::remote_library;
use crate::stages::fold::{FoldExec, FoldStrategy};
use crate::stages::node::{Selection, Stage, StageNode};
use crate::stages::order_key::{OrderKeyExec, PartitionStart};
use crate::stages::select::{SelectExec, SelectStrategy};

/// First byte of every payload that delt's codecs write (Ballista's never start with it: a
/// protobuf message starts with a field tag, and field 0 does not exist).
const DELT_TAG: u8 = 0;

/// The plugin functions a process knows how to ship and has made from shipped definitions.
#[derive(Debug, Default)]
pub struct PluginFunctions {
    /// The client's registry: which SQL names are plugin functions and how they were made.
    registry: Arc<PluginRegistry>,
    /// This host's device for model scorers (an executor's `--device`).
    device: Option<String>,
    /// Functions made here from a shipped definition, by its bytes: a library and its models
    /// are loaded once per process, not once per task.
    made: Mutex<HashMap<Vec<u8>, Arc<ScalarUDF>>>,
}

impl PluginFunctions {
    /// A client's: it ships the functions `registry` made.
    pub fn client(registry: Arc<PluginRegistry>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            ..Self::default()
        })
    }

    /// A scheduler's or executor's: it makes the functions it is sent, on `device` if given.
    pub fn server(device: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            device,
            ..Self::default()
        })
    }

    fn encode(&self, udf: &ScalarUDF, buf: &mut Vec<u8>) {
        let made = self.made.lock().expect("plugin functions");
        let shipped = made
            .iter()
            .find(|(_, known)| Arc::ptr_eq(known.inner(), udf.inner()))
            .map(|(bytes, _)| bytes.clone());
        drop(made);
        if let Some(bytes) =
            shipped.or_else(|| self.registry.call(udf.name()).map(|c| c.to_bytes()))
        {
            buf.push(DELT_TAG);
            buf.extend_from_slice(&bytes);
        }
    }

    fn decode(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        let Some((&DELT_TAG, bytes)) = buf.split_first() else {
            return datafusion::common::plan_err!(
                "function {name} is not known here: it is neither a DataFusion nor a delt \
                 function, nor a plugin function the plan defines"
            );
        };
        if let Some(udf) = self.made.lock().expect("plugin functions").get(bytes) {
            return Ok(Arc::clone(udf));
        }
        let call = PluginCall::from_bytes(bytes)?;
        let host = super::process_name();
        let failed = |e: DataFusionError| {
            DataFusionError::Plan(format!(
                "plugin function {name} cannot be made on {host}: {}; the library must be at \
                 the same path on every host of the cluster, be found by name there \
                 (DELT_PLUGIN_PATH), or be an s3:// URL",
                e.message()
            ))
        };
        let path = if remote_library::is_remote(&call.library) {
            block_on(remote_library::fetch(&call.library)).map_err(failed)?
        } else {
            find_library(&call.library, &[])
                .map_err(|e| failed(DataFusionError::Plan(e.to_string())))?
        };
        let udf = Arc::new(
            call.make_deferred(&path, &PluginRegistry::default(), self.device.as_deref())
                .map_err(failed)?,
        );
        let device = self
            .device
            .as_deref()
            .map(|d| format!(" on {d}"))
            .unwrap_or_default();
        eprintln!(
            "{host}: plugin function {name} made from {}{device}",
            path.display()
        );
        self.made
            .lock()
            .expect("plugin functions")
            .insert(bytes.to_vec(), Arc::clone(&udf));
        Ok(udf)
    }
}

/// Runs `future` to completion from synchronous code inside the runtime (decoding is
/// synchronous; fetching a library is not).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(future))
        }
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime to fetch a plugin library")
            .block_on(future),
    }
}

fn malformed(what: &str) -> DataFusionError {
    DataFusionError::Internal(format!(
        "a delt plan node in the plan is malformed ({what}): are all processes of the cluster \
         the same delt version?"
    ))
}

/// The partition starts of an `order_key` payload (`[[file, offset], ...]` or null).
fn partition_starts_from(value: &Value) -> Result<Option<Arc<Vec<PartitionStart>>>> {
    let Some(starts) = value.as_array() else {
        return Ok(None);
    };
    starts
        .iter()
        .map(|start| {
            Some(PartitionStart {
                file: start.get(0)?.as_str()?.to_string(),
                offset: start.get(1)?.as_u64()?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .map(|starts| Some(Arc::new(starts)))
        .ok_or_else(|| malformed("starts"))
}

fn tagged(value: Value, buf: &mut Vec<u8>) {
    buf.push(DELT_TAG);
    buf.extend_from_slice(value.to_string().as_bytes());
}

/// The payload of a delt node, or `None` for one of Ballista's.
fn untag(buf: &[u8]) -> Result<Option<Value>> {
    match buf.split_first() {
        Some((&DELT_TAG, json)) => serde_json::from_slice(json)
            .map(Some)
            .map_err(|e| malformed(&e.to_string())),
        _ => Ok(None),
    }
}

fn stage_json(stage: Stage) -> Value {
    match stage {
        Stage::Fold { layers, mode } => {
            json!({"fold": {"layers": layers, "mode": mode.to_string()}})
        }
        Stage::Select(selection) => selection_json(selection),
    }
}

fn selection_json(selection: Selection) -> Value {
    match selection {
        Selection::TopK(k) => json!({"top_k": k}),
        Selection::TopR(r) => json!({"top_r": r}),
    }
}

fn stage_from(value: &Value) -> Result<Stage> {
    if let Some(fold) = value.get("fold") {
        let layers = fold["layers"]
            .as_u64()
            .ok_or_else(|| malformed("fold layers"))?;
        let mode = fold["mode"]
            .as_str()
            .ok_or_else(|| malformed("fold mode"))?
            .parse()
            .map_err(|e: String| malformed(&e))?;
        return Ok(Stage::Fold {
            layers: layers as usize,
            mode,
        });
    }
    selection_from(value).map(Stage::Select)
}

fn selection_from(value: &Value) -> Result<Selection> {
    if let Some(k) = value.get("top_k").and_then(Value::as_u64) {
        return Ok(Selection::TopK(k));
    }
    if let Some(r) = value.get("top_r").and_then(Value::as_f64) {
        return Ok(Selection::TopR(r));
    }
    Err(malformed("stage"))
}

fn strategy_name(strategy: FoldStrategy) -> &'static str {
    match strategy {
        FoldStrategy::SortedStream => "sorted_stream",
        FoldStrategy::InMemory => "in_memory",
    }
}

fn strategy_from(name: &str) -> Result<FoldStrategy> {
    Ok(match name {
        "sorted_stream" => FoldStrategy::SortedStream,
        "in_memory" => FoldStrategy::InMemory,
        other => return Err(malformed(&format!("fold strategy {other}"))),
    })
}

/// The logical codec of delt's client and scheduler.
pub struct DeltLogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
    functions: Arc<PluginFunctions>,
}

impl DeltLogicalCodec {
    /// A codec that ships and makes plugin functions through `functions`.
    pub fn new(functions: Arc<PluginFunctions>) -> Self {
        Self {
            ballista: BallistaLogicalExtensionCodec::default(),
            functions,
        }
    }
}

impl fmt::Debug for DeltLogicalCodec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("DeltLogicalCodec")
    }
}

impl LogicalExtensionCodec for DeltLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        let Some(value) = untag(buf)? else {
            return self.ballista.try_decode(buf, inputs, ctx);
        };
        if value["node"] == "fold_shards" {
            let spec = value["spec"].as_str().ok_or_else(|| malformed("spec"))?;
            return Ok(Extension {
                node: Arc::new(FoldShardsNode::new(spec.to_string())),
            });
        }
        let input = inputs.first().ok_or_else(|| malformed("no input"))?.clone();
        if value["node"] == "fold_runs" {
            let key = value["key"]
                .as_str()
                .ok_or_else(|| malformed("run key"))?
                .parse()
                .map_err(|e: String| malformed(&e))?;
            let dir = value["dir"].as_str().ok_or_else(|| malformed("dir"))?;
            return Ok(Extension {
                node: Arc::new(FoldRunsNode::new(input, key, dir.to_string())),
            });
        }
        let stage = stage_from(&value["stage"])?;
        Ok(Extension {
            node: Arc::new(StageNode::over_scored(input, stage)?),
        })
    }

    fn try_encode(&self, extension: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        let node = extension.node.as_any();
        if let Some(stage) = node.downcast_ref::<StageNode>() {
            tagged(json!({"stage": stage_json(stage.stage())}), buf);
        } else if let Some(runs) = node.downcast_ref::<FoldRunsNode>() {
            tagged(
                json!({"node": "fold_runs", "key": runs.key().to_string(), "dir": runs.dir()}),
                buf,
            );
        } else if let Some(shards) = node.downcast_ref::<FoldShardsNode>() {
            tagged(json!({"node": "fold_shards", "spec": shards.spec()}), buf);
        } else {
            return self.ballista.try_encode(extension, buf);
        }
        Ok(())
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        self.ballista
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.functions.decode(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.functions.encode(node, buf);
        Ok(())
    }
}

/// The physical codec of delt's scheduler and executors.
pub struct DeltPhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
    functions: Arc<PluginFunctions>,
}

impl DeltPhysicalCodec {
    /// A codec that ships and makes plugin functions through `functions`.
    pub fn new(functions: Arc<PluginFunctions>) -> Self {
        Self {
            ballista: BallistaPhysicalExtensionCodec::default(),
            functions,
        }
    }
}

impl fmt::Debug for DeltPhysicalCodec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("DeltPhysicalCodec")
    }
}

impl PhysicalExtensionCodec for DeltPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(value) = untag(buf)? else {
            return self.ballista.try_decode(buf, inputs, ctx, proto_converter);
        };
        let node = &value["node"];
        let input = Arc::clone(inputs.first().ok_or_else(|| malformed("no input"))?);
        Ok(match node.as_str() {
            Some("fold_shards") => Arc::new(FoldShardsExec::with_input(
                input,
                value["spec"].as_str().ok_or_else(|| malformed("spec"))?,
            )?),
            Some("hash_key") => Arc::new(HashKeyExec::new(input)),
            Some("fold_runs") => Arc::new(FoldRunsExec::new(
                input,
                value["dir"]
                    .as_str()
                    .ok_or_else(|| malformed("dir"))?
                    .to_string(),
            )),
            Some("order_key") => {
                let keys = OrderKeyExec::new(
                    input,
                    value["score"].as_u64().ok_or_else(|| malformed("score"))? as usize,
                    value["descending"]
                        .as_bool()
                        .ok_or_else(|| malformed("descending"))?,
                )
                .with_partition_starts(partition_starts_from(&value["starts"])?);
                match value["position_first"].as_bool() {
                    Some(true) => Arc::new(keys.position_first()),
                    Some(false) => Arc::new(keys),
                    None => return Err(malformed("position_first")),
                }
            }
            Some("fold") => {
                let Stage::Fold { layers, mode } = stage_from(&value["stage"])? else {
                    return Err(malformed("fold stage"));
                };
                let strategy = strategy_from(
                    value["strategy"]
                        .as_str()
                        .ok_or_else(|| malformed("strategy"))?,
                )?;
                Arc::new(FoldExec::new(input, layers, mode, strategy))
            }
            Some("select") => {
                let strategy = match value["strategy"].as_str() {
                    Some("input_order") => SelectStrategy::InputOrder,
                    Some("gathered") => SelectStrategy::Gathered,
                    _ => return Err(malformed("select strategy")),
                };
                Arc::new(SelectExec::new(
                    input,
                    selection_from(&value["stage"])?,
                    strategy,
                ))
            }
            _ => return Err(malformed("node")),
        })
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(keys) = node.downcast_ref::<OrderKeyExec>() {
            tagged(
                json!({
                    "node": "order_key",
                    "score": keys.score(),
                    "descending": keys.descending(),
                    "position_first": keys.is_position_first(),
                    "starts": keys.partition_starts().map(|starts| starts
                        .iter()
                        .map(|s| json!([s.file, s.offset]))
                        .collect::<Vec<_>>()),
                }),
                buf,
            );
        } else if let Some(fold) = node.downcast_ref::<FoldExec>() {
            let stage = Stage::Fold {
                layers: fold.layers(),
                mode: fold.mode(),
            };
            tagged(
                json!({"node": "fold", "stage": stage_json(stage), "strategy": strategy_name(fold.strategy())}),
                buf,
            );
        } else if node.is::<HashKeyExec>() {
            tagged(json!({"node": "hash_key"}), buf);
        } else if let Some(runs) = node.downcast_ref::<FoldRunsExec>() {
            tagged(json!({"node": "fold_runs", "dir": runs.dir()}), buf);
        } else if let Some(shards) = node.downcast_ref::<FoldShardsExec>() {
            tagged(
                json!({"node": "fold_shards", "spec": shards.spec_json()}),
                buf,
            );
        } else if let Some(select) = node.downcast_ref::<SelectExec>() {
            tagged(
                json!({
                    "node": "select",
                    "stage": selection_json(select.selection()),
                    "strategy": match select.strategy() {
                        SelectStrategy::InputOrder => "input_order",
                        SelectStrategy::Gathered => "gathered",
                    },
                }),
                buf,
            );
        } else {
            return self.ballista.try_encode(node, buf, proto_converter);
        }
        Ok(())
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        // Physical plans are decoded on executors: a function that cannot be made here fails
        // the task when it runs, with the reason (see `unavailable_function`).
        Ok(self.functions.decode(name, buf).unwrap_or_else(|e| {
            Arc::new(UnavailableFunction::new(name, e.message().into_owned()).into_udf())
        }))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.functions.encode(node, buf);
        Ok(())
    }
}
