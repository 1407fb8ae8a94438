//! The client side of cluster mode: a delt session whose queries run on a Ballista cluster.

use std::sync::Arc;
use std::time::Duration;

use ballista::extension::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;

use super::codec::{DeltLogicalCodec, DeltPhysicalCodec, PluginFunctions};
use super::portable_scans::PortableScans;
use crate::DeltSession;
use crate::error::{DeltError, Result};
use crate::io::object_stores::BucketOptions;
use crate::plugins::host::PluginRegistry;

/// How long the scheduler may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `session` with its queries planned by the scheduler at `url` (`df://HOST:PORT`) and run on
/// its executors. DDL, `CREATE FUNCTION` and writing `COPY` output stay in this process; the
/// plugin functions this session defines travel to the executors with each plan.
pub async fn connect(session: &DeltSession, url: &str) -> Result<SessionContext> {
    let address = url.strip_prefix("df://").ok_or_else(|| {
        DeltError::Cluster(format!(
            "--cluster {url}: expected df://HOST:PORT, the address of a `delt cluster scheduler`"
        ))
    })?;
    let unreachable = |why: String| {
        DeltError::Cluster(format!(
            "cannot reach the delt scheduler at {url}: {why}; start one with `delt cluster \
             scheduler --bind {address}`, or check the address and the network"
        ))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => {
            return Err(unreachable(format!(
                "no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    }
    let local = session.build_state()?;
    let registry = local
        .config()
        .get_extension::<PluginRegistry>()
        .unwrap_or_default();
    let functions = PluginFunctions::client(registry);
    let mut config = local.config().clone();
    // Tasks number their rows' fold positions by their first file (see `PartitionStart`), so
    // partitions must be runs of whole files.
    config.options_mut().optimizer.repartition_file_scans = false;
    let config = config
        .with_option_extension(BucketOptions::default())
        .with_ballista_logical_extension_codec(Arc::new(DeltLogicalCodec::new(Arc::clone(
            &functions,
        ))))
        .with_ballista_physical_extension_codec(Arc::new(DeltPhysicalCodec::new(functions)));
    let state = SessionStateBuilder::new_from_existing(local)
        .with_config(config)
        .with_optimizer_rule(Arc::new(PortableScans))
        .build();
    // Ballista resets the scalar functions to DataFusion's own: register delt's again.
    let functions: Vec<_> = state.scalar_functions().values().cloned().collect();
    let ctx = SessionContext::remote_with_state(url, state)
        .await?
        .enable_url_table();
    for function in functions {
        ctx.register_udf(function.as_ref().clone());
    }
    Ok(ctx)
}
