//! The plugin side of the ABI, generic over a [`Plugin`]; [`export_plugin!`](crate::export_plugin)
//! wraps these in `extern "C"` functions. Not meant to be called directly.

use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use arrow::array::{Array, StructArray};
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema, from_ffi, to_ffi};

use crate::{Options, Plugin, Scorer};

/// The manifest as a C string.
pub fn manifest_json<P: Plugin>() -> CString {
    let json = serde_json::to_string(&P::manifest()).expect("a manifest serialises");
    CString::new(json).expect("JSON has no NUL bytes")
}

/// Writes `message` to `*error` (if the host gave a place for it).
unsafe fn set_error(error: *mut *mut c_char, message: String) {
    if !error.is_null() {
        let message = CString::new(message.replace('\0', " ")).expect("NULs removed");
        unsafe { *error = message.into_raw() };
    }
}

/// Runs `f`, turning a panic into an error message. The plugin has its own copy of the
/// standard library and so its own panic hook: silence it, the message reaches the host.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| Err(panic_message(panic)))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    format!("plugin panicked: {text}")
}

/// `delt_plugin_create`.
///
/// # Safety
/// `function` and `options_json` are NUL-terminated strings; `error` is null or writable.
pub unsafe fn create<P: Plugin>(
    function: *const c_char,
    options_json: *const c_char,
    error: *mut *mut c_char,
) -> *mut c_void {
    let outcome = guarded(|| -> Result<Box<dyn Scorer>, String> {
        let function = unsafe { CStr::from_ptr(function) }
            .to_str()
            .map_err(|e| e.to_string())?;
        let options = unsafe { CStr::from_ptr(options_json) }
            .to_str()
            .map_err(|e| e.to_string())?;
        let options: Options = serde_json::from_str(options)
            .map_err(|e| format!("options are not a JSON object: {e}"))?;
        let manifest = P::manifest();
        let spec = manifest
            .find(function)
            .ok_or_else(|| format!("plugin '{}' has no function '{function}'", manifest.name))?;
        if let Some(unknown) = options.keys().find(|k| !spec.options.contains_key(*k)) {
            let known: Vec<&str> = spec.options.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown option '{unknown}' for {function} (accepted: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        P::create(function, &options)
    });
    match outcome {
        Ok(scorer) => Box::into_raw(Box::new(scorer)).cast(),
        Err(message) => {
            unsafe { set_error(error, message) };
            std::ptr::null_mut()
        }
    }
}

/// `delt_plugin_score`.
///
/// # Safety
/// As documented in `delt_plugin.h`: `instance` comes from [`create`], `input`/`input_schema`
/// are valid exported Arrow structs (moved in), `output`/`output_schema` are writable.
pub unsafe fn score(
    instance: *mut c_void,
    input: *mut FFI_ArrowArray,
    input_schema: *mut FFI_ArrowSchema,
    output: *mut FFI_ArrowArray,
    output_schema: *mut FFI_ArrowSchema,
    error: *mut *mut c_char,
) -> i32 {
    // Take ownership first, so the input is released whatever happens next.
    let (array, schema) = unsafe {
        (
            FFI_ArrowArray::from_raw(input),
            FFI_ArrowSchema::from_raw(input_schema),
        )
    };
    if instance.is_null() {
        unsafe { set_error(error, "no instance (create failed?)".into()) };
        return 1;
    }
    let scorer = unsafe { &mut *instance.cast::<Box<dyn Scorer>>() };
    let outcome = guarded(|| -> Result<(FFI_ArrowArray, FFI_ArrowSchema), String> {
        let data =
            unsafe { from_ffi(array, &schema) }.map_err(|e| format!("bad input from host: {e}"))?;
        let args = StructArray::from(data).columns().to_vec();
        let scores = scorer.score(&args)?;
        to_ffi(&scores.to_data()).map_err(|e| format!("cannot export scores: {e}"))
    });
    match outcome {
        Ok((array, schema)) => {
            unsafe {
                std::ptr::write(output, array);
                std::ptr::write(output_schema, schema);
            }
            0
        }
        Err(message) => {
            unsafe { set_error(error, message) };
            1
        }
    }
}

/// `delt_plugin_destroy`.
///
/// # Safety
/// `instance` comes from [`create`] and is not used afterwards.
pub unsafe fn destroy(instance: *mut c_void) {
    if !instance.is_null() {
        drop(unsafe { Box::from_raw(instance.cast::<Box<dyn Scorer>>()) });
    }
}

/// `delt_plugin_free_error`.
///
/// # Safety
/// `error` was set by [`create`] or [`score`] and is not used afterwards.
pub unsafe fn free_error(error: *mut c_char) {
    if !error.is_null() {
        drop(unsafe { CString::from_raw(error) });
    }
}
