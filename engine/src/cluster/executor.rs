//! `delt cluster executor`: Ballista's executor, running delt's plan nodes and functions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;

use super::codec::{DeltLogicalCodec, DeltPhysicalCodec, PluginFunctions};
use crate::error::{DeltError, Result};
use crate::sql::session::delt_functions;

/// How an executor runs.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// The scheduler to register with.
    pub scheduler: SocketAddr,
    /// Where it listens for the scheduler's tasks and other executors' shuffle reads; port
    /// `P` serves Arrow Flight and `P + 1` gRPC.
    pub bind: SocketAddr,
    /// The device its model scorers use (`cpu`, `cuda`, `cuda:N`): the `device` option of
    /// every plugin function that takes one.
    pub device: Option<String>,
    /// Tasks run at once.
    pub slots: usize,
    /// Where shuffle and spill files go (a temporary directory if not given).
    pub work_dir: Option<PathBuf>,
    /// Bytes that the sorts and DELT buffers of all its tasks may hold before they spill,
    /// each task a share by its slots (`None`: 70% of the host's or container's memory).
    pub memory_limit: Option<usize>,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat_secs: u64,
}

/// Runs the executor until the process is stopped.
pub async fn run(settings: ExecutorSettings) -> Result<()> {
    let name = settings.bind.to_string();
    super::set_process_name(format!("executor {name}"));
    let functions = PluginFunctions::server(settings.device.clone());
    let mut registry = BallistaFunctionRegistry::default();
    for function in delt_functions() {
        registry
            .scalar_functions
            .insert(function.name().to_string(), function);
    }
    let work_dir = settings.work_dir.as_ref().map(|d| d.display().to_string());
    let temp_dir = work_dir.clone();
    let config = ExecutorProcessConfig {
        bind_host: settings.bind.ip().to_string(),
        external_host: Some(settings.bind.ip().to_string()),
        port: settings.bind.port(),
        grpc_port: settings.bind.port() + 1,
        scheduler_host: settings.scheduler.ip().to_string(),
        scheduler_port: settings.scheduler.port(),
        vcores: settings.slots,
        // Ballista gives each task a spilling pool of its slots' share of this.
        memory_pool_size: settings.memory_limit.map(|bytes| bytes as u64),
        work_dir,
        executor_heartbeat_interval_seconds: settings.heartbeat_secs,
        override_function_registry: Some(Arc::new(registry)),
        override_logical_codec: Some(Arc::new(DeltLogicalCodec::new(Arc::clone(&functions)))),
        override_physical_codec: Some(Arc::new(DeltPhysicalCodec::new(functions))),
        override_config_producer: Some(Arc::new(super::session_config)),
        override_runtime_producer: Some(Arc::new(move |config: &SessionConfig| {
            let mut runtime =
                RuntimeEnvBuilder::new().with_object_store_registry(super::object_stores(config)?);
            if let Some(dir) = &temp_dir {
                runtime = runtime.with_temp_file_path(dir.clone());
            }
            runtime.build_arc()
        })),
        ..ExecutorProcessConfig::default()
    };
    let memory = settings
        .memory_limit
        .map_or("70% of this host's memory".into(), |bytes| {
            format!("{:.3} GB", bytes as f64 / 1e9)
        });
    eprintln!(
        "delt executor {name} ({} slots, device {}, {memory} for tasks before they spill) joining the scheduler at {}",
        settings.slots,
        settings
            .device
            .as_deref()
            .unwrap_or("as each function says"),
        settings.scheduler
    );
    start_executor_process(Arc::new(config)).await.map_err(|e| {
        DeltError::Cluster(format!(
            "executor {name} stopped: {e}; check that the scheduler runs at {} and that \
                 ports {} and {} are free",
            settings.scheduler,
            settings.bind.port(),
            settings.bind.port() + 1
        ))
    })
}
