//! `delt plugins list|inspect`: what scorer plugin libraries provide.

use std::path::PathBuf;

use clap::Subcommand;

use super::allocator::{FreedMemory, tune_allocator};
use crate::plugins::host::{PluginLibrary, libraries_in};

#[derive(Subcommand, Debug)]
pub enum PluginsCommand {
    /// List the functions of the libraries in DELT_PLUGIN_PATH and given with --plugin.
    List {
        /// A plugin library (repeatable).
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
    },
    /// Print everything one library declares: functions, types, options.
    Inspect {
        /// The plugin library.
        library: PathBuf,
    },
}

/// Serves one instance of a plugin function for an isolated run (`isolation=process`):
/// started by delt itself, speaking frames of Arrow IPC on stdin and stdout.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The plugin library.
    library: PathBuf,
    /// The function.
    function: String,
    /// Its options, as a JSON object.
    options: String,
}

/// Runs `delt plugin-worker` and exits with its status.
pub(super) fn serve(args: WorkerArgs) -> ! {
    std::process::exit(crate::plugins::isolation::serve(
        &args.library,
        &args.function,
        &args.options,
    ))
}

/// Runs `delt plugins <command>`.
pub(super) fn run(command: PluginsCommand) -> anyhow::Result<()> {
    tune_allocator(FreedMemory::BelowMapThreshold, None);
    match command {
        PluginsCommand::List { plugins } => list(&plugins),
        PluginsCommand::Inspect { library } => inspect(&library),
    }
}

/// The libraries in the directories of DELT_PLUGIN_PATH.
pub(super) fn found_plugins() -> Vec<PathBuf> {
    std::env::var("DELT_PLUGIN_PATH")
        .map(|list| libraries_in(&list))
        .unwrap_or_default()
}

fn list(explicit: &[PathBuf]) -> anyhow::Result<()> {
    let found = found_plugins();
    anyhow::ensure!(
        !found.is_empty() || !explicit.is_empty(),
        "no plugins: pass --plugin PATH or set DELT_PLUGIN_PATH"
    );
    let found = found.into_iter().map(|path| (path, false));
    for (path, required) in found.chain(explicit.iter().map(|path| (path.clone(), true))) {
        let library = match PluginLibrary::load(&path) {
            Ok(library) => library,
            Err(e) if !required => {
                eprintln!("warning: skipped {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let manifest = library.manifest();
        println!(
            "{} ({} {})",
            path.display(),
            manifest.name,
            manifest.version
        );
        for function in &manifest.functions {
            println!("  {}  {}", signature(function), function.doc);
        }
    }
    Ok(())
}

fn inspect(path: &std::path::Path) -> anyhow::Result<()> {
    let library = PluginLibrary::load(path)?;
    let manifest = library.manifest();
    println!("library:  {}", path.display());
    println!("plugin:   {} {}", manifest.name, manifest.version);
    println!("abi:      {}", delt_plugin::ABI_VERSION);
    for function in &manifest.functions {
        println!("\n{}\n  {}", signature(function), function.doc);
        if function.options.is_empty() {
            println!("  options: none");
        }
        for (name, doc) in &function.options {
            println!("  option {name}: {doc}");
        }
    }
    Ok(())
}

fn signature(function: &delt_plugin::FunctionSpec) -> String {
    let args: Vec<String> = function
        .args
        .iter()
        .map(|a| a.data_type().to_string())
        .collect();
    format!(
        "{}({}) -> {}",
        function.name,
        args.join(", "),
        function.returns.data_type()
    )
}
