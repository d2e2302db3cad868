//! Logging to the gateway's log through the contract's `host.log` import.
//!
//! Each line is tagged by the gateway with the model (and request id). Use the functions with a
//! plain message or the macros with `format!` arguments:
//!
//! ```
//! infergate_sdk::log::info("decoded the image");
//! infergate_sdk::log::warn!("k={} is large", 10);
//! ```
//!
//! Outside WebAssembly (a plugin's unit tests on the host) lines go to stderr instead.

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Step-by-step detail, off unless the operator asks for it.
    Trace,
    /// Detail useful while developing a plugin.
    Debug,
    /// Normal events worth a line.
    Info,
    /// Something odd that did not fail the call.
    Warn,
    /// A failure the operator should look at.
    Error,
}

/// Writes one line at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::shared::infergate::plugin::host;
        let level = match level {
            Level::Trace => host::Level::Trace,
            Level::Debug => host::Level::Debug,
            Level::Info => host::Level::Info,
            Level::Warn => host::Level::Warn,
            Level::Error => host::Level::Error,
        };
        host::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[plugin {level:?}] {message}");
}

/// Writes one line at trace level.
pub fn trace(message: &str) {
    log(Level::Trace, message)
}

/// Writes one line at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Writes one line at info level.
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Writes one line at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Writes one line at error level.
pub fn error(message: &str) {
    log(Level::Error, message)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_trace {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Trace, &::std::format!($($arg)+)) };
}
#[doc(hidden)]
#[macro_export]
macro_rules! __log_debug {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Debug, &::std::format!($($arg)+)) };
}
#[doc(hidden)]
#[macro_export]
macro_rules! __log_info {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Info, &::std::format!($($arg)+)) };
}
#[doc(hidden)]
#[macro_export]
macro_rules! __log_warn {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Warn, &::std::format!($($arg)+)) };
}
#[doc(hidden)]
#[macro_export]
macro_rules! __log_error {
    ($($arg:tt)+) => { $crate::log::log($crate::log::Level::Error, &::std::format!($($arg)+)) };
}

/// `debug!("fmt", args…)`: formats and writes one line at debug level.
#[doc(inline)]
pub use crate::__log_debug as debug;
/// `error!("fmt", args…)`: formats and writes one line at error level.
#[doc(inline)]
pub use crate::__log_error as error;
/// `info!("fmt", args…)`: formats and writes one line at info level.
#[doc(inline)]
pub use crate::__log_info as info;
/// `trace!("fmt", args…)`: formats and writes one line at trace level.
#[doc(inline)]
pub use crate::__log_trace as trace;
/// `warn!("fmt", args…)`: formats and writes one line at warn level.
#[doc(inline)]
pub use crate::__log_warn as warn;
