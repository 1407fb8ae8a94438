//! The SDK for delt scorer plugins.
//!
//! A plugin is a shared library (`crate-type = ["cdylib"]`) that delt loads at run time and
//! calls from SQL. Between the two sits a small, versioned C ABI whose data crosses as the
//! Arrow C Data Interface; its C declaration is `include/delt_plugin.h`. A plugin needs arrow
//! only, never DataFusion, and can also be written in C against the header.
//!
//! In Rust, implement [`Plugin`] (what the library provides) and [`Scorer`] (one configured
//! function), then export them with [`export_plugin!`]:
//!
//! ```
//! use std::sync::Arc;
//! use delt_plugin::arrow::array::{ArrayRef, AsArray, Float64Array};
//! use delt_plugin::{ArgType, FunctionSpec, Manifest, Options, Plugin, Scorer};
//!
//! struct Length;
//!
//! impl Scorer for Length {
//!     fn score(&mut self, args: &[ArrayRef]) -> Result<ArrayRef, String> {
//!         let text = args[0].as_string::<i32>();
//!         Ok(Arc::new(text.iter().map(|t| t.map(|t| t.len() as f64)).collect::<Float64Array>()))
//!     }
//! }
//!
//! struct LengthPlugin;
//!
//! impl Plugin for LengthPlugin {
//!     fn manifest() -> Manifest {
//!         Manifest::new("length", "0.1.0").function(
//!             FunctionSpec::new("text_length", [ArgType::Utf8], ArgType::Float64, "Bytes of text."),
//!         )
//!     }
//!     fn create(_function: &str, _options: &Options) -> Result<Box<dyn Scorer>, String> {
//!         Ok(Box::new(Length))
//!     }
//! }
//!
//! delt_plugin::export_plugin!(LengthPlugin);
//! ```
//!
//! The exported functions catch panics and turn them, like errors, into messages that delt
//! reports as SQL errors. Options given in SQL that the manifest does not declare are refused
//! before [`Plugin::create`] runs.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void};

use arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};

pub use arrow;

pub mod export;

/// The ABI version this SDK implements; `DELT_PLUGIN_ABI_VERSION` in the C header.
pub const ABI_VERSION: u32 = 1;

/// Names of the exported symbols, NUL-terminated for `dlsym`.
pub mod symbols {
    /// `uint32_t delt_plugin_abi_version(void)`
    pub const ABI_VERSION: &[u8] = b"delt_plugin_abi_version\0";
    /// `const char* delt_plugin_manifest(void)`
    pub const MANIFEST: &[u8] = b"delt_plugin_manifest\0";
    /// `void* delt_plugin_create(const char*, const char*, char**)`
    pub const CREATE: &[u8] = b"delt_plugin_create\0";
    /// `int32_t delt_plugin_score(void*, ArrowArray*, ArrowSchema*, ArrowArray*, ArrowSchema*, char**)`
    pub const SCORE: &[u8] = b"delt_plugin_score\0";
    /// `void delt_plugin_destroy(void*)`
    pub const DESTROY: &[u8] = b"delt_plugin_destroy\0";
    /// `void delt_plugin_free_error(char*)`
    pub const FREE_ERROR: &[u8] = b"delt_plugin_free_error\0";
}

/// `delt_plugin_abi_version`.
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;
/// `delt_plugin_manifest`.
pub type ManifestFn = unsafe extern "C" fn() -> *const c_char;
/// `delt_plugin_create`.
pub type CreateFn = unsafe extern "C" fn(
    function: *const c_char,
    options_json: *const c_char,
    error: *mut *mut c_char,
) -> *mut c_void;
/// `delt_plugin_score`.
pub type ScoreFn = unsafe extern "C" fn(
    instance: *mut c_void,
    input: *mut arrow::ffi::FFI_ArrowArray,
    input_schema: *mut arrow::ffi::FFI_ArrowSchema,
    output: *mut arrow::ffi::FFI_ArrowArray,
    output_schema: *mut arrow::ffi::FFI_ArrowSchema,
    error: *mut *mut c_char,
) -> i32;
/// `delt_plugin_destroy`.
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);
/// `delt_plugin_free_error`.
pub type FreeErrorFn = unsafe extern "C" fn(error: *mut c_char);

/// Argument and return types a plugin function can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgType {
    /// UTF-8 strings with 32-bit offsets.
    Utf8,
    /// UTF-8 strings with 64-bit offsets.
    LargeUtf8,
    /// UTF-8 string views (Arrow format `vu`): what DataFusion reads from Parquet, handed to
    /// the plugin without copying the strings.
    Utf8View,
    /// Text from any string or binary column, handed to the plugin as UTF-8 string views
    /// (`vu`). Binary values must be UTF-8; delt refuses a batch that holds other bytes,
    /// naming the argument and row.
    Text,
    /// Bytes.
    Binary,
    /// Booleans.
    Bool,
    /// 32-bit integers.
    Int32,
    /// 64-bit integers.
    Int64,
    /// 32-bit floats.
    Float32,
    /// 64-bit floats.
    Float64,
}

impl ArgType {
    /// The Arrow type of the values.
    pub fn data_type(self) -> DataType {
        match self {
            Self::Utf8 => DataType::Utf8,
            Self::LargeUtf8 => DataType::LargeUtf8,
            Self::Utf8View | Self::Text => DataType::Utf8View,
            Self::Binary => DataType::Binary,
            Self::Bool => DataType::Boolean,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
        }
    }
}

/// One function a plugin provides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionSpec {
    /// The SQL name (may be renamed by `CREATE FUNCTION`).
    pub name: String,
    /// Argument types, in order.
    pub args: Vec<ArgType>,
    /// Type of the result, one value per input row.
    pub returns: ArgType,
    /// Accepted options and a one-line doc of each.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// One line saying what the function computes.
    pub doc: String,
}

impl FunctionSpec {
    /// A function without options.
    pub fn new(
        name: impl Into<String>,
        args: impl IntoIterator<Item = ArgType>,
        returns: ArgType,
        doc: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            args: args.into_iter().collect(),
            returns,
            options: BTreeMap::new(),
            doc: doc.into(),
        }
    }

    /// Declares an option.
    pub fn option(mut self, name: impl Into<String>, doc: impl Into<String>) -> Self {
        self.options.insert(name.into(), doc.into());
        self
    }
}

/// What a plugin library provides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Its functions.
    pub functions: Vec<FunctionSpec>,
}

impl Manifest {
    /// A manifest without functions yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            functions: Vec::new(),
        }
    }

    /// Adds a function.
    pub fn function(mut self, spec: FunctionSpec) -> Self {
        self.functions.push(spec);
        self
    }

    /// The function called `name`.
    pub fn find(&self, name: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.name == name)
    }
}

/// Options of one function instance, as given in SQL (a JSON object).
pub type Options = serde_json::Map<String, serde_json::Value>;

/// One configured scoring function. The host calls an instance from one thread at a time.
pub trait Scorer: Send {
    /// Scores a batch: `args` holds one array per declared argument, all of the same length
    /// and of the declared types. Returns one value per row, of the declared return type.
    fn score(&mut self, args: &[arrow::array::ArrayRef]) -> Result<arrow::array::ArrayRef, String>;
}

/// A plugin library: its manifest and how to make instances.
pub trait Plugin {
    /// What the library provides.
    fn manifest() -> Manifest;

    /// An instance of `function` configured by `options` (already checked against the
    /// manifest's declared options).
    fn create(function: &str, options: &Options) -> Result<Box<dyn Scorer>, String>;
}

/// Scores the texts of a string column (`utf8`, `large_utf8`, `utf8_view` or `text`
/// argument): `score` gets the non-NULL texts in row order and returns one value each; NULL
/// rows stay NULL. Saves a model scorer from computing anything for NULLs.
pub fn score_texts(
    column: &arrow::array::ArrayRef,
    score: impl FnOnce(&[&str]) -> Result<Vec<Option<f64>>, String>,
) -> Result<arrow::array::ArrayRef, String> {
    use arrow::array::{Array, AsArray, Float64Array};
    let values: Vec<Option<&str>> = match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().iter().collect(),
        DataType::LargeUtf8 => column.as_string::<i64>().iter().collect(),
        DataType::Utf8View => column.as_string_view().iter().collect(),
        other => return Err(format!("expected a string column, got {other}")),
    };
    let texts: Vec<&str> = values.iter().flatten().copied().collect();
    let mut scores = score(&texts)?.into_iter();
    if scores.len() != texts.len() {
        return Err(format!("{} scores for {} texts", scores.len(), texts.len()));
    }
    let out: Float64Array = values
        .iter()
        .map(|v| v.and_then(|_| scores.next().flatten()))
        .collect();
    debug_assert_eq!(out.len(), column.len());
    Ok(std::sync::Arc::new(out))
}

/// Exports a [`Plugin`] implementation as the delt plugin C ABI.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn delt_plugin_abi_version() -> u32 {
            $crate::ABI_VERSION
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn delt_plugin_manifest() -> *const ::std::ffi::c_char {
            static MANIFEST: ::std::sync::OnceLock<::std::ffi::CString> =
                ::std::sync::OnceLock::new();
            MANIFEST
                .get_or_init(|| $crate::export::manifest_json::<$plugin>())
                .as_ptr()
        }

        /// # Safety
        /// As documented in `delt_plugin.h`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn delt_plugin_create(
            function: *const ::std::ffi::c_char,
            options_json: *const ::std::ffi::c_char,
            error: *mut *mut ::std::ffi::c_char,
        ) -> *mut ::std::ffi::c_void {
            unsafe { $crate::export::create::<$plugin>(function, options_json, error) }
        }

        /// # Safety
        /// As documented in `delt_plugin.h`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn delt_plugin_score(
            instance: *mut ::std::ffi::c_void,
            input: *mut $crate::arrow::ffi::FFI_ArrowArray,
            input_schema: *mut $crate::arrow::ffi::FFI_ArrowSchema,
            output: *mut $crate::arrow::ffi::FFI_ArrowArray,
            output_schema: *mut $crate::arrow::ffi::FFI_ArrowSchema,
            error: *mut *mut ::std::ffi::c_char,
        ) -> i32 {
            unsafe {
                $crate::export::score(instance, input, input_schema, output, output_schema, error)
            }
        }

        /// # Safety
        /// As documented in `delt_plugin.h`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn delt_plugin_destroy(instance: *mut ::std::ffi::c_void) {
            unsafe { $crate::export::destroy(instance) }
        }

        /// # Safety
        /// As documented in `delt_plugin.h`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn delt_plugin_free_error(error: *mut ::std::ffi::c_char) {
            unsafe { $crate::export::free_error(error) }
        }
    };
}
