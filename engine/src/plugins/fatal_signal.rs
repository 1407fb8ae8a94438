//! One line on stderr when a plugin call dies of a fatal signal.
//!
//! A plugin runs inside delt's process, so a segfault or an abort in its code ends delt, and
//! the default action leaves the user an exit code (139, 134) and no word. While a thread is
//! inside a plugin call it points a thread-local at a message naming the library and the
//! function ([`enter`]). A handler for SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT writes that
//! message with `write(2)` (nothing else is safe in a signal handler), puts back the handler
//! that was there before and returns: the signal then takes its usual course (the faulting
//! instruction runs again, `abort` raises again) and delt still dies of it. Outside a plugin
//! call the handler only puts the previous one back.

use std::cell::Cell;
use std::ffi::c_int;
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The signals that end a process on the spot, with their names.
const FATAL: [(c_int, &str); 5] = [
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGABRT, "SIGABRT"),
];

thread_local! {
    /// The message of the plugin call this thread is in (pointer and length), if any.
    static CURRENT: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// The handlers that were installed before ours, in the order of [`FATAL`].
struct Previous([libc::sigaction; FATAL.len()]);

// SAFETY: plain C data (handler addresses, masks, flags), only read after it is written once.
unsafe impl Send for Previous {}
unsafe impl Sync for Previous {}

static PREVIOUS: OnceLock<Previous> = OnceLock::new();

/// Set in a process whose crashes another process reports (an isolated plugin's).
static SILENT: AtomicBool = AtomicBool::new(false);

/// Leaves fatal signals alone in this process: its parent names the plugin instead.
pub fn stay_silent() {
    SILENT.store(true, Ordering::Relaxed);
}

/// While alive, a fatal signal on this thread prints the message given to [`enter`].
pub struct CallGuard<'a> {
    outer: (*const u8, usize),
    _message: PhantomData<&'a [u8]>,
}

/// Marks this thread as inside a plugin call. `message` is printed, followed by the signal's
/// name and a newline, if the call dies of a fatal signal.
pub fn enter(message: &[u8]) -> CallGuard<'_> {
    if !SILENT.load(Ordering::Relaxed) {
        PREVIOUS.get_or_init(install);
    }
    let outer = CURRENT.replace((message.as_ptr(), message.len()));
    CallGuard {
        outer,
        _message: PhantomData,
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        CURRENT.set(self.outer);
    }
}

fn install() -> Previous {
    // SAFETY: sigaction with a zeroed (empty) mask and our handler; the previous actions are
    // kept to be restored.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_fatal_signal as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: [libc::sigaction; FATAL.len()] = std::mem::zeroed();
        for ((signal, _), old) in FATAL.iter().zip(previous.iter_mut()) {
            libc::sigaction(*signal, &action, old);
        }
        Previous(previous)
    }
}

extern "C" fn on_fatal_signal(
    signal: c_int,
    _info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    let (message, len) = CURRENT.try_with(Cell::get).unwrap_or((std::ptr::null(), 0));
    let index = FATAL.iter().position(|(s, _)| *s == signal);
    if !message.is_null()
        && let Some(index) = index
    {
        let name = FATAL[index].1;
        // SAFETY: write(2) of memory that lives as long as the call's guard.
        unsafe {
            libc::write(2, message.cast(), len);
            libc::write(2, name.as_ptr().cast(), name.len());
            libc::write(2, b"\n".as_ptr().cast(), 1);
        }
    }
    if let (Some(previous), Some(index)) = (PREVIOUS.get(), index) {
        // SAFETY: reinstates the action that was there before ours.
        unsafe { libc::sigaction(signal, &previous.0[index], std::ptr::null_mut()) };
    }
}
