//! `delt cluster scheduler|executor`: the processes of a cluster (see `docs/cluster.md`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::anyhow;

use crate::cluster::executor::{self, ExecutorSettings};
use crate::cluster::scheduler::{self, SchedulerSettings};
use crate::sql::session::parse_size;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Plan queries and hand their tasks to executors.
    Scheduler {
        /// Address to listen on for clients (`delt sql --cluster df://HOST:PORT`) and executors.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
        bind: String,
        /// Seconds without a heartbeat after which an executor is lost; its tasks run again
        /// on the others.
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        executor_timeout: u64,
        /// Times one task may fail (an executor lost included) before the query fails.
        #[arg(long, value_name = "N", default_value_t = 4)]
        task_max_failures: usize,
    },
    /// Run tasks for a scheduler: scans, scoring, folds.
    Executor {
        /// The scheduler's address.
        #[arg(long, value_name = "HOST:PORT")]
        scheduler: String,
        /// Address to listen on: PORT serves shuffle data (Arrow Flight), PORT+1 the
        /// scheduler's task calls. Other hosts must reach this address.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50051")]
        bind: String,
        /// Device of the model scorers run here: cpu, cuda or cuda:N; given to every plugin
        /// function that has a `device` option.
        #[arg(long, value_name = "DEVICE")]
        device: Option<String>,
        /// Tasks run at once (default: the cores).
        #[arg(long, value_name = "N")]
        slots: Option<usize>,
        /// Directory for shuffle and spill files (default: a temporary directory).
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Memory for the sorts and DELT buffers of all tasks here, e.g. 8G, shared out by
        /// slots; beyond it they spill to the work directory (default: 70% of the host's or
        /// container's memory).
        #[arg(long, value_name = "SIZE")]
        memory_limit: Option<String>,
        /// Seconds between heartbeats to the scheduler.
        #[arg(long, value_name = "SECONDS", default_value_t = 5)]
        heartbeat: u64,
    },
}

fn address(flag: &str, text: &str) -> anyhow::Result<SocketAddr> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut found| found.next())
        .ok_or_else(|| anyhow!("--{flag} {text}: expected HOST:PORT, e.g. 127.0.0.1:50050"))
}

pub(super) fn run(command: ClusterCommand) -> anyhow::Result<()> {
    let runtime = super::small_runtime()?;
    match command {
        ClusterCommand::Scheduler {
            bind,
            executor_timeout,
            task_max_failures,
        } => {
            let settings = SchedulerSettings {
                bind: address("bind", &bind)?,
                executor_timeout_secs: executor_timeout.max(1),
                task_max_failures: task_max_failures.max(1),
            };
            runtime.block_on(scheduler::run(settings))?;
        }
        ClusterCommand::Executor {
            scheduler,
            bind,
            device,
            slots,
            work_dir,
            memory_limit,
            heartbeat,
        } => {
            let settings = ExecutorSettings {
                scheduler: address("scheduler", &scheduler)?,
                bind: address("bind", &bind)?,
                device,
                slots: slots
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                    .max(1),
                work_dir,
                memory_limit: memory_limit
                    .map(|limit| {
                        parse_size(&limit).map_err(|e| anyhow!("--memory-limit {limit}: {e}"))
                    })
                    .transpose()?,
                heartbeat_secs: heartbeat.max(1),
            };
            runtime.block_on(executor::run(settings))?;
        }
    }
    Ok(())
}
