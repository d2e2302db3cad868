//! The sandbox: the state each plugin call's `Store` owns — the WASI context (no preopens, no
//! environment, no network; stdout/stderr captured into bounded buffers; made on the call's
//! first WASI import, so a call that makes none never pays for one), the memory limiter,
//! the call's deadline, and the `host` interface plugins import (logging, tagged with model and
//! request id). The `ops` interface is implemented on it in `ops.rs`.

use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::host::{self as imports, Level};

/// Bytes of guest stdout/stderr kept per call; writes past it fail inside the guest.
const CAPTURE_BYTES: usize = 64 << 10;

/// Longest plugin log message kept; a plugin must not be able to flood the log pipeline.
const MAX_LOG_LINE: usize = 4096;

/// Who a call is for, so plugin log lines can say so (and where its timings go).
#[derive(Clone, Debug, Default)]
pub struct CallTag {
    pub model: String,
    pub request_id: String,
    /// The model's series, for the instantiation time; `None` outside a gateway.
    pub metrics: Option<crate::metrics::ModelMetrics>,
}

/// One call's state, dropped with its `Store` when the call ends (or, for a model with
/// `[reuse]`, kept with its warm instance and re-armed by [`Sandbox::begin_call`]).
pub struct Sandbox {
    /// `None` until the guest first calls a WASI import: building a context seeds three
    /// random generators (twice over, inside wasmtime-wasi's builder), about 4 % of a small
    /// plugin's instantiate + call (BENCHMARKS.md), and a plugin that prints nothing, reads
    /// no clock and hashes nothing never needs one. Each call still gets its own, never
    /// another's.
    wasi: Option<Wasi>,
    table: ResourceTable,
    pub(super) limits: MemoryCap,
    tag: CallTag,
    /// The last error-level line the plugin logged (the SDK logs its panic message there).
    last_error: Option<String>,
    /// Where this call's stdout and stderr begin in the pipes (a reused instance's earlier
    /// calls wrote before it).
    output_from: (usize, usize),
    /// When the call must be done: the epoch callback interrupts guest code then, and the
    /// native ops (host code, which epochs cannot interrupt) check it themselves.
    pub(super) deadline: Instant,
}

/// A call's WASI context and the pipes its stdout and stderr write to.
struct Wasi {
    ctx: WasiCtx,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl Wasi {
    fn new() -> Self {
        let stdout = MemoryOutputPipe::new(CAPTURE_BYTES);
        let stderr = MemoryOutputPipe::new(CAPTURE_BYTES);
        // The builder's defaults grant nothing: no preopened directories, no environment or
        // arguments, sockets denied, stdin closed.
        let ctx = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        Self {
            ctx,
            stdout,
            stderr,
        }
    }

    /// What the guest has written to stdout and stderr, in bytes.
    fn written(&self) -> (usize, usize) {
        (self.stdout.contents().len(), self.stderr.contents().len())
    }
}

impl Sandbox {
    /// A sandbox capping memory at `memory_bytes`, for calls that [`Sandbox::begin_call`]
    /// then starts.
    pub fn new(memory_bytes: usize) -> Self {
        let limits = MemoryCap {
            max_bytes: memory_bytes,
            denied: None,
            guest_bytes: 0,
        };
        Self {
            wasi: None,
            table: ResourceTable::new(),
            limits,
            tag: CallTag::default(),
            last_error: None,
            output_from: (0, 0),
            deadline: Instant::now(),
        }
    }

    /// Starts a call in this sandbox: who it is for; what earlier calls of a reused instance
    /// logged and printed is not this call's.
    pub fn begin_call(&mut self, tag: CallTag, deadline: Instant) {
        self.tag = tag;
        self.deadline = deadline;
        self.last_error = None;
        self.output_from = self.wasi.as_ref().map_or((0, 0), Wasi::written);
    }

    /// Whether the instance may serve another call: it never hit the memory cap, and its
    /// output pipes keep room for the next call (they are bounded per instance).
    pub fn reusable(&self) -> bool {
        let (stdout, stderr) = self.wasi.as_ref().map_or((0, 0), Wasi::written);
        self.limits.denied.is_none() && stdout + stderr < CAPTURE_BYTES / 2
    }

    /// Writes whatever the guest printed to the log, one line per line, tagged with the call.
    pub fn flush_output(&self) {
        let Some(wasi) = &self.wasi else { return };
        for (stream, pipe, from) in [
            ("stdout", &wasi.stdout, self.output_from.0),
            ("stderr", &wasi.stderr, self.output_from.1),
        ] {
            let bytes = pipe.contents();
            for line in String::from_utf8_lossy(&bytes[from.min(bytes.len())..])
                .lines()
                .filter(|l| !l.is_empty())
            {
                tracing::info!(model = %self.tag.model, request_id = %self.tag.request_id, stream, "plugin: {line}");
            }
        }
    }
}

impl Sandbox {
    /// What the plugin last said went wrong — for a Rust guest that traps, its panic message:
    /// the last error it logged (the SDK logs panics), else the last line of its stderr (where
    /// Rust's default panic hook writes).
    pub fn last_complaint(&self) -> Option<String> {
        if let Some(line) = &self.last_error {
            return Some(line.chars().take(512).collect());
        }
        let bytes = self.wasi.as_ref()?.stderr.contents();
        let text = String::from_utf8_lossy(&bytes[self.output_from.1.min(bytes.len())..]);
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.chars().take(512).collect())
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.get_or_insert_with(Wasi::new).ctx,
            table: &mut self.table,
        }
    }
}

impl imports::Host for Sandbox {
    fn log(&mut self, level: Level, mut message: String) {
        if message.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let (model, request_id) = (&self.tag.model, &self.tag.request_id);
        match level {
            Level::Trace => {
                tracing::trace!(model = %model, request_id = %request_id, "plugin: {message}");
            }
            Level::Debug => {
                tracing::debug!(model = %model, request_id = %request_id, "plugin: {message}");
            }
            Level::Info => {
                tracing::info!(model = %model, request_id = %request_id, "plugin: {message}");
            }
            Level::Warn => {
                tracing::warn!(model = %model, request_id = %request_id, "plugin: {message}");
            }
            Level::Error => {
                tracing::error!(model = %model, request_id = %request_id, "plugin: {message}");
            }
        }
        if matches!(level, Level::Error) {
            self.last_error = Some(message);
        }
    }
}

/// Caps each linear memory of a call at the model's `limits.memory_mb`. A denied growth traps
/// at once (rather than letting the guest see a failed `memory.grow`, which Rust turns into an
/// abort far from the cause) and is remembered so the error can say it was the memory cap.
pub struct MemoryCap {
    max_bytes: usize,
    /// The size a denied growth asked for.
    pub denied: Option<usize>,
    /// The bytes of every linear memory of the instance together, as grown so far: what the
    /// native ops subtract from the cap before allocating on the guest's behalf.
    guest_bytes: usize,
}

impl MemoryCap {
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// What the cap leaves for a native op's result (and its scratch buffers): the cap less
    /// the guest's memories. The result is then copied into a guest memory, whose growth the
    /// cap checks again.
    pub fn remaining(&self) -> usize {
        self.max_bytes.saturating_sub(self.guest_bytes)
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = Some(desired);
            wasmtime::bail!("plugin memory limit reached: growing to {desired} bytes");
        }
        // `current` is 0 when a memory is created, so this sums every memory's size.
        self.guest_bytes = self
            .guest_bytes
            .saturating_add(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far past any real plugin.
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}
