//! Scorer plugins: shared libraries loaded at run time and called from SQL.
//!
//! A library speaks the C ABI of the `delt-plugin` SDK (`plugins/sdk/include/delt_plugin.h`):
//! its manifest lists functions; each becomes a DataFusion async scalar UDF that scores
//! batches on blocking worker threads, a few instances at a time, so the async runtime never
//! waits on a model. Everything a plugin returns is checked (length, type) before it reaches a
//! query, and its errors and panics become SQL errors naming the plugin and function. A
//! fatal signal inside a call prints one line naming them ([`super::fatal_signal`]).
//!
//! A library is never unloaded: arrays a plugin returned carry release callbacks into its code,
//! and the rows holding them can outlive every handle on the library (a query cancelled by
//! Ctrl-C drops its buffers on other threads, after the session is gone).

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_void};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StructArray};
use datafusion::arrow::compute::kernels::boolean::or;
use datafusion::arrow::compute::{cast, nullif};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema, from_ffi, to_ffi};
use datafusion::common::{exec_err, plan_err};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use delt_plugin::{ArgType, FunctionSpec, Manifest, Options, symbols};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;

use super::call::PluginCall;
use super::fatal_signal;
use super::isolation::{ChildInstance, Isolation};

/// Rows per call into a plugin unless `batch_size` says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 8192;

/// Why a plugin could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The path does not exist.
    #[error("plugin {0}: no such file")]
    NotFound(PathBuf),
    /// The file is not a loadable library, or lacks the delt symbols.
    #[error("{path} is not a delt plugin: {reason}")]
    NotAPlugin { path: PathBuf, reason: String },
    /// Built against another ABI version.
    #[error(
        "plugin {path} was built for delt plugin ABI {found}, this delt speaks {expected}: rebuild it with a matching delt-plugin SDK"
    )]
    AbiMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("plugin {path} has an invalid manifest: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    /// No function of that name.
    #[error("plugin {path} has no function '{function}' (it has: {available})")]
    NoSuchFunction {
        path: PathBuf,
        function: String,
        available: String,
    },
}

/// The ABI entry points of a loaded library.
struct Api {
    create: delt_plugin::CreateFn,
    score: delt_plugin::ScoreFn,
    destroy: delt_plugin::DestroyFn,
    free_error: delt_plugin::FreeErrorFn,
}

/// Reads the symbol `name` (NUL-terminated) as a `T`.
///
/// # Safety
/// `T` must be the type the symbol has.
unsafe fn symbol<T: Copy>(
    library: &libloading::Library,
    name: &[u8],
    path: &Path,
) -> Result<T, PluginError> {
    // SAFETY: forwarded to the caller.
    unsafe { library.get::<T>(name) }
        .map(|s| *s)
        .map_err(|_| PluginError::NotAPlugin {
            path: path.to_path_buf(),
            reason: format!(
                "it does not export {}",
                String::from_utf8_lossy(&name[..name.len() - 1])
            ),
        })
}

/// A loaded plugin library.
pub struct PluginLibrary {
    path: PathBuf,
    manifest: Manifest,
    api: Api,
    // Never unloaded (see the module doc), so the function pointers above stay valid.
    _library: ManuallyDrop<libloading::Library>,
}

impl fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("path", &self.path)
            .field("manifest", &self.manifest)
            .finish()
    }
}

impl PluginLibrary {
    /// Loads the library at `path` and reads its manifest.
    pub fn load(path: &Path) -> Result<Arc<Self>, PluginError> {
        if !path.exists() {
            return Err(PluginError::NotFound(path.to_path_buf()));
        }
        // SAFETY: loading runs the library's initialisers; that is the point of a plugin.
        let library =
            unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::NotAPlugin {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        // SAFETY: each symbol is read with the type the ABI gives it.
        let (version, manifest, api) = unsafe {
            let version: delt_plugin::AbiVersionFn = symbol(&library, symbols::ABI_VERSION, path)?;
            let manifest: delt_plugin::ManifestFn = symbol(&library, symbols::MANIFEST, path)?;
            let api = Api {
                create: symbol(&library, symbols::CREATE, path)?,
                score: symbol(&library, symbols::SCORE, path)?,
                destroy: symbol(&library, symbols::DESTROY, path)?,
                free_error: symbol(&library, symbols::FREE_ERROR, path)?,
            };
            (version(), manifest, api)
        };
        if version != delt_plugin::ABI_VERSION {
            return Err(PluginError::AbiMismatch {
                path: path.to_path_buf(),
                found: version,
                expected: delt_plugin::ABI_VERSION,
            });
        }
        let bad_manifest = |reason: String| PluginError::BadManifest {
            path: path.to_path_buf(),
            reason,
        };
        // SAFETY: the ABI says the manifest is a static NUL-terminated string.
        let text = unsafe {
            let raw = manifest();
            if raw.is_null() {
                return Err(bad_manifest("null".into()));
            }
            CStr::from_ptr(raw)
        };
        let manifest: Manifest =
            serde_json::from_slice(text.to_bytes()).map_err(|e| bad_manifest(e.to_string()))?;
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            manifest,
            api,
            _library: ManuallyDrop::new(library),
        }))
    }

    /// What the library provides.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The spec of `function`.
    pub fn function(&self, function: &str) -> Result<&FunctionSpec, PluginError> {
        self.manifest
            .find(function)
            .ok_or_else(|| PluginError::NoSuchFunction {
                path: self.path.clone(),
                function: function.to_string(),
                available: self
                    .manifest
                    .functions
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Takes an error message written by the plugin.
    fn take_error(&self, error: *mut c_char) -> String {
        if error.is_null() {
            return "no message".into();
        }
        // SAFETY: the plugin wrote a NUL-terminated string that we hand back to it.
        unsafe {
            let message = CStr::from_ptr(error).to_string_lossy().into_owned();
            (self.api.free_error)(error);
            message
        }
    }

    /// A new instance of `function` with `options`.
    pub fn instance(self: &Arc<Self>, function: &str, options: &Options) -> Result<Instance> {
        let name = CString::new(function).map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let options = CString::new(serde_json::Value::Object(options.clone()).to_string())
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid strings and error slot, as the ABI asks.
        let handle = unsafe { (self.api.create)(name.as_ptr(), options.as_ptr(), &mut error) };
        match NonNull::new(handle) {
            Some(handle) => Ok(Instance {
                library: Arc::clone(self),
                function: function.to_string(),
                crash_message: format!(
                    "error: plugin {} function {function} crashed delt with ",
                    self.path.display()
                )
                .into_bytes(),
                handle,
            }),
            None => plan_err!(
                "plugin {} could not create {function}: {}",
                self.path.display(),
                self.take_error(error)
            ),
        }
    }
}

/// One configured function of a plugin. Used from one thread at a time.
pub struct Instance {
    library: Arc<PluginLibrary>,
    function: String,
    /// What a fatal signal during a call prints, before the signal's name.
    crash_message: Vec<u8>,
    handle: NonNull<c_void>,
}

// SAFETY: the ABI lets an instance move between threads as long as calls do not overlap,
// which `&mut self` on `score` guarantees.
unsafe impl Send for Instance {}

impl Instance {
    /// Scores `args` (one array per argument, of the declared types, `rows` rows each);
    /// checks that the result has `rows` values of type `returns`.
    pub fn score(
        &mut self,
        args: &[ArrayRef],
        rows: usize,
        returns: &DataType,
    ) -> Result<ArrayRef> {
        let fields: Vec<(Arc<Field>, ArrayRef)> = args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    Arc::new(Field::new(format!("arg{i}"), a.data_type().clone(), true)),
                    Arc::clone(a),
                )
            })
            .collect();
        let input = if fields.is_empty() {
            StructArray::new_empty_fields(rows, None)
        } else {
            StructArray::from(fields)
        };
        let (mut array, mut schema) = to_ffi(&input.to_data())?;
        let mut out_array = FFI_ArrowArray::empty();
        let mut out_schema = FFI_ArrowSchema::empty();
        let mut error: *mut c_char = std::ptr::null_mut();
        let lib = &self.library;
        // SAFETY: the input structs are moved to the plugin (it releases them); the output
        // structs are ours once it returns 0.
        let in_call = fatal_signal::enter(&self.crash_message);
        let status = unsafe {
            (lib.api.score)(
                self.handle.as_ptr(),
                &mut array,
                &mut schema,
                &mut out_array,
                &mut out_schema,
                &mut error,
            )
        };
        drop(in_call);
        let who = format!("plugin {} function {}", lib.path.display(), self.function);
        if status != 0 {
            return exec_err!("{who} failed: {}", lib.take_error(error));
        }
        let invalid = |reason: String| {
            DataFusionError::Execution(format!(
                "{who} returned an invalid Arrow array ({reason}): the plugin is at fault, \
                 not the input; fix or update the plugin"
            ))
        };
        // The import trusts the structs' layout and may panic on nonsense (a missing buffer,
        // a length past its end); the full validation then checks every buffer and offset.
        // SAFETY: a successful call filled both output structs.
        let imported = catch_unwind(AssertUnwindSafe(|| unsafe {
            from_ffi(out_array, &out_schema)
        }))
        .map_err(|_| invalid("its buffers do not match its type".into()))?
        .map_err(|e| invalid(e.to_string()))?;
        imported
            .validate_full()
            .map_err(|e| invalid(e.to_string()))?;
        check_scores(
            &who,
            datafusion::arrow::array::make_array(imported),
            rows,
            returns,
        )
    }
}

/// `scores` if `who` returned one value of the promised type per row, else the error.
pub(super) fn check_scores(
    who: &str,
    scores: ArrayRef,
    rows: usize,
    returns: &DataType,
) -> Result<ArrayRef> {
    if scores.len() != rows {
        return exec_err!("{who} returned {} values for {rows} rows", scores.len());
    }
    if scores.data_type() != returns {
        return exec_err!(
            "{who} returned {} values, its manifest promises {returns}",
            scores.data_type()
        );
    }
    Ok(scores)
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: the handle came from create and is not used again.
        unsafe { (self.library.api.destroy)(self.handle.as_ptr()) }
    }
}

/// Host-side settings of one SQL function backed by a plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSettings {
    /// Options handed to the plugin.
    pub options: Options,
    /// Rows per plugin call.
    pub batch_size: usize,
    /// Instances that may score at the same time.
    pub concurrency: usize,
    /// Where instances run: in delt's process or each in a child process.
    pub isolation: Isolation,
}

impl Default for FunctionSettings {
    fn default() -> Self {
        Self {
            options: Options::new(),
            batch_size: DEFAULT_BATCH_SIZE,
            concurrency: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            isolation: Isolation::default(),
        }
    }
}

/// An instance of a plugin function, in delt's process or in a child process.
enum Scorer {
    InProcess(Instance),
    Child(ChildInstance),
}

impl Scorer {
    fn new(
        library: &Arc<PluginLibrary>,
        function: &str,
        settings: &FunctionSettings,
    ) -> Result<Self> {
        Ok(match settings.isolation {
            Isolation::InProcess => Self::InProcess(library.instance(function, &settings.options)?),
            Isolation::Process => Self::Child(ChildInstance::start(
                library.path(),
                function,
                &settings.options,
            )?),
        })
    }

    fn score(&mut self, args: &[ArrayRef], rows: usize, returns: &DataType) -> Result<ArrayRef> {
        match self {
            Self::InProcess(instance) => instance.score(args, rows, returns),
            Self::Child(instance) => instance.score(args, rows, returns),
        }
    }
}

/// A plugin function as a DataFusion async scalar UDF.
pub struct PluginFunction {
    sql_name: String,
    spec: FunctionSpec,
    library: Arc<PluginLibrary>,
    settings: FunctionSettings,
    signature: Signature,
    idle: Mutex<Vec<Scorer>>,
    permits: Semaphore,
}

impl PluginFunction {
    /// `function` of `library` under the SQL name `sql_name`. Creates one instance now, so
    /// bad options fail when the function is registered, not mid-query.
    pub fn try_new(
        sql_name: &str,
        library: Arc<PluginLibrary>,
        function: &str,
        settings: FunctionSettings,
    ) -> Result<Self> {
        let function = Self::deferred(sql_name, library, function, settings)?;
        let first = Scorer::new(&function.library, &function.spec.name, &function.settings)?;
        function.idle.lock().expect("instance pool").push(first);
        Ok(function)
    }

    /// As [`try_new`](Self::try_new), but the first batch creates the first instance: a
    /// cluster's scheduler plans with the function without loading its model, and an
    /// executor loads it only if it scores.
    pub fn deferred(
        sql_name: &str,
        library: Arc<PluginLibrary>,
        function: &str,
        settings: FunctionSettings,
    ) -> Result<Self> {
        let spec = library
            .function(function)
            .map_err(|e| DataFusionError::Plan(e.to_string()))?
            .clone();
        let signature = signature_of(&spec);
        Ok(Self {
            sql_name: sql_name.to_string(),
            spec,
            signature,
            permits: Semaphore::new(settings.concurrency.max(1)),
            idle: Mutex::new(Vec::new()),
            library,
            settings,
        })
    }

    /// As a UDF to register.
    pub fn into_udf(self) -> ScalarUDF {
        AsyncScalarUDF::new(Arc::new(self)).into_scalar_udf()
    }

    fn returns(&self) -> DataType {
        self.spec.returns.data_type()
    }

    /// Binary values given for a `text` argument must be UTF-8: otherwise an error naming
    /// the function, argument and row (within the batch), with the first bytes of the value.
    fn check_utf8(&self, arg: usize, array: &ArrayRef) -> Result<()> {
        let values: Box<dyn Iterator<Item = Option<&[u8]>>> = match array.data_type() {
            DataType::Binary => Box::new(array.as_binary::<i32>().iter()),
            DataType::LargeBinary => Box::new(array.as_binary::<i64>().iter()),
            DataType::BinaryView => Box::new(array.as_binary_view().iter()),
            _ => return Ok(()),
        };
        for (row, value) in values.enumerate() {
            if let Some(bytes) = value
                && let Err(e) = std::str::from_utf8(bytes)
            {
                let head: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
                return exec_err!(
                    "{}: argument {} is binary and not UTF-8 text at row {row} of a batch of {} \
                     ({e}; bytes {}{}): decode the column to text first, or filter such rows out",
                    self.sql_name,
                    arg + 1,
                    array.len(),
                    head.join(" "),
                    if bytes.len() > 16 { " ..." } else { "" }
                );
            }
        }
        Ok(())
    }
}

/// DataFusion coerces arguments to the declared types (for example Utf8View to Utf8); a
/// `text` argument takes any string or binary type as it is.
fn signature_of(spec: &FunctionSpec) -> Signature {
    const TEXT: [DataType; 6] = [
        DataType::Utf8View,
        DataType::Utf8,
        DataType::LargeUtf8,
        DataType::Binary,
        DataType::LargeBinary,
        DataType::BinaryView,
    ];
    let mut choices: Vec<Vec<DataType>> = vec![Vec::new()];
    for arg in &spec.args {
        let options = match arg {
            ArgType::Text => TEXT.to_vec(),
            other => vec![other.data_type()],
        };
        choices = choices
            .into_iter()
            .flat_map(|prefix| {
                options.iter().map(move |t| {
                    let mut next = prefix.clone();
                    next.push(t.clone());
                    next
                })
            })
            .collect();
    }
    if choices.len() == 1 {
        Signature::exact(choices.pop().unwrap_or_default(), Volatility::Immutable)
    } else {
        Signature::one_of(
            choices.into_iter().map(TypeSignature::Exact).collect(),
            Volatility::Immutable,
        )
    }
}

impl fmt::Debug for PluginFunction {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "PluginFunction({} = {}#{})",
            self.sql_name,
            self.library.path.display(),
            self.spec.name
        )
    }
}

impl PartialEq for PluginFunction {
    fn eq(&self, other: &Self) -> bool {
        self.sql_name == other.sql_name
            && self.library.path == other.library.path
            && self.spec == other.spec
            && self.settings.options == other.settings.options
    }
}

impl Eq for PluginFunction {}

impl Hash for PluginFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.sql_name.hash(state);
        self.library.path.hash(state);
        self.spec.name.hash(state);
    }
}

impl ScalarUDFImpl for PluginFunction {
    fn name(&self) -> &str {
        &self.sql_name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.returns())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "{} is a plugin function and runs asynchronously",
            self.sql_name
        )
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for PluginFunction {
    fn ideal_batch_size(&self) -> Option<usize> {
        Some(self.settings.batch_size)
    }

    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .zip(&self.spec.args)
            .enumerate()
            .map(|(i, (arg, want))| {
                let array = arg.to_array(rows)?;
                if *want == ArgType::Text {
                    self.check_utf8(i, &array)?;
                }
                Ok(cast(&array, &want.data_type())?)
            })
            .collect::<Result<_>>()?;
        // A NULL argument gives a NULL score, whatever the plugin makes of it.
        let mut nulls: Option<BooleanArray> = None;
        for array in &arrays {
            if array.null_count() > 0 {
                let is_null = datafusion::arrow::compute::is_null(array)?;
                nulls = Some(match nulls {
                    Some(acc) => or(&acc, &is_null)?,
                    None => is_null,
                });
            }
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let reused = self.idle.lock().expect("instance pool").pop();
        let mut instance = match reused {
            Some(instance) => instance,
            None => Scorer::new(&self.library, &self.spec.name, &self.settings)?,
        };
        let returns = self.returns();
        let score = move || {
            let scores = instance.score(&arrays, rows, &returns);
            (instance, scores)
        };
        // Scoring blocks: on a multi-threaded runtime, score on this worker after handing its
        // other tasks to the rest of the pool (no thread switch per batch); otherwise move
        // the call to the blocking pool.
        let (instance, scores) = if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread
        {
            tokio::task::block_in_place(score)
        } else {
            tokio::task::spawn_blocking(score)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
        };
        self.idle.lock().expect("instance pool").push(instance);
        let scores = scores?;
        Ok(ColumnarValue::Array(match nulls {
            Some(nulls) => nullif(&scores, &nulls)?,
            None => scores,
        }))
    }
}

/// Libraries loaded so far, by path, so a library is loaded once per session, and the
/// definitions of the plugin functions made from them, by SQL name (what a cluster client
/// ships to the executors).
#[derive(Debug, Default)]
pub struct PluginRegistry {
    libraries: Mutex<HashMap<PathBuf, Arc<PluginLibrary>>>,
    calls: Mutex<HashMap<String, PluginCall>>,
}

impl PluginRegistry {
    /// Remembers how the function `call.sql_name` was made (replacing an earlier definition).
    pub fn record(&self, call: PluginCall) {
        self.calls
            .lock()
            .expect("plugin registry")
            .insert(call.sql_name.clone(), call);
    }

    /// How the plugin function called `sql_name` was made, if it is one.
    pub fn call(&self, sql_name: &str) -> Option<PluginCall> {
        self.calls
            .lock()
            .expect("plugin registry")
            .get(sql_name)
            .cloned()
    }

    /// The library at `path`, loaded on first use.
    pub fn load(&self, path: &Path) -> Result<Arc<PluginLibrary>, PluginError> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut libraries = self.libraries.lock().expect("plugin registry");
        if let Some(library) = libraries.get(&key) {
            return Ok(Arc::clone(library));
        }
        let library = PluginLibrary::load(path)?;
        libraries.insert(key, Arc::clone(&library));
        Ok(library)
    }
}

/// Shared libraries in the directories of a `DELT_PLUGIN_PATH`-style list (`dir:dir`), in
/// name order.
pub fn libraries_in(path_list: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in std::env::split_paths(path_list) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut libs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("so" | "dylib" | "dll")
                )
            })
            .collect();
        libs.sort();
        found.extend(libs);
    }
    found
}

/// The library a `CREATE FUNCTION` body names. A path (with a `/` or a library extension) is
/// taken as it is; a bare name such as `delt_lqs` is the library `libdelt_lqs.so` found in
/// `dirs` (the session's plugin directories), then the directories of `DELT_PLUGIN_PATH`,
/// then beside the `delt` executable (where `cargo build` puts delt's own plugins).
pub fn find_library(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, PluginError> {
    let path = Path::new(name);
    if name.contains(std::path::MAIN_SEPARATOR) || path.extension().is_some() {
        return Ok(path.to_path_buf());
    }
    let file = format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let mut dirs = dirs.to_vec();
    if let Some(list) = std::env::var_os("DELT_PLUGIN_PATH") {
        dirs.extend(std::env::split_paths(&list));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    dirs.iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            PluginError::NotFound(PathBuf::from(format!(
                "{file} (searched the session's plugin directories, DELT_PLUGIN_PATH and the \
                 delt executable's directory: {})",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        })
}
