//! `delt cluster scheduler`: Ballista's scheduler, planning with delt's session.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;

use super::codec::{DeltLogicalCodec, DeltPhysicalCodec, PluginFunctions};
use super::distributed_fold::DistributedFoldPlanner;
use crate::error::{DeltError, Result};
use crate::sql::planner::DeltQueryPlanner;
use crate::sql::session::session_state;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Where it listens for clients and executors.
    pub bind: SocketAddr,
    /// Seconds without a heartbeat after which an executor counts as lost and its tasks run
    /// elsewhere.
    pub executor_timeout_secs: u64,
    /// Times a task may fail (its executor lost included) before the job fails.
    pub task_max_failures: usize,
}

/// Runs the scheduler until the process is stopped.
pub async fn run(settings: SchedulerSettings) -> Result<()> {
    super::set_process_name(format!("scheduler {}", settings.bind));
    let functions = PluginFunctions::server(None);
    let config = SchedulerConfig {
        bind_host: settings.bind.ip().to_string(),
        bind_port: settings.bind.port(),
        external_host: settings.bind.ip().to_string(),
        executor_timeout_seconds: settings.executor_timeout_secs,
        expire_dead_executor_interval_seconds: settings.executor_timeout_secs.clamp(1, 15),
        no_executors_grace_period_seconds: settings.executor_timeout_secs,
        task_max_failures: settings.task_max_failures,
        override_logical_codec: Some(Arc::new(DeltLogicalCodec::new(Arc::clone(&functions)))),
        override_physical_codec: Some(Arc::new(DeltPhysicalCodec::new(functions))),
        override_config_producer: Some(Arc::new(super::session_config)),
        override_session_builder: Some(Arc::new(|config: SessionConfig| {
            let runtime = RuntimeEnvBuilder::new()
                .with_object_store_registry(super::object_stores(&config)?)
                .build_arc()?;
            let planner = DeltQueryPlanner::distributed(vec![Arc::new(DistributedFoldPlanner)]);
            session_state(config, runtime, planner, None)
                .map_err(|e| DataFusionError::External(Box::new(e)))
        })),
        ..SchedulerConfig::default()
    };
    let failed = |e: &dyn std::fmt::Display| {
        DeltError::Cluster(format!(
            "the scheduler could not start on {}: {e}",
            settings.bind
        ))
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| failed(&e))?;
    eprintln!(
        "delt scheduler listening on {}; start executors with: delt cluster executor --scheduler {}",
        settings.bind, settings.bind
    );
    start_server(cluster, settings.bind, Arc::new(config))
        .await
        .map_err(|e| failed(&e))
}
