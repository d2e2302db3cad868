//! The on-disk cache of compiled plugins: `<cache_dir>/<key>.cwasm`, where the key hashes the
//! plugin's bytes together with the engine's compatibility hash (wasmtime version, target,
//! settings), so a restart or a reload of an unchanged file skips Cranelift, and an upgrade
//! never loads an incompatible artifact.
//!
//! Artifacts are native code that wasmtime maps without re-validating: the cache directory
//! must be writable only by the gateway's user. Only files this cache wrote are loaded.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Returns the compiled component for `bytes` (whose sha256 is `digest`), from the cache when
/// present, else compiled and stored. Cache trouble is logged and falls back to compiling.
///
/// The gateway's only unsafe code: wasmtime maps precompiled native code without validating
/// it, which is sound for artifacts this cache wrote itself (see the SAFETY notes).
#[allow(unsafe_code)]
pub fn component(
    engine: &Engine,
    dir: Option<&Path>,
    digest: &str,
    bytes: &[u8],
) -> wasmtime::Result<Component> {
    let Some(dir) = dir else {
        return Component::new(engine, bytes);
    };
    let path = dir.join(format!("{}.cwasm", key(engine, digest)));
    if path.is_file() {
        // SAFETY: the file was written by `store` below from `Engine::precompile_component`
        // for an engine with the same compatibility hash (it is in the file name), in a
        // directory the operator keeps private to the gateway.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                tracing::info!(
                    "plugin {digest} loaded from the compile cache ({})",
                    path.display()
                );
                return Ok(component);
            }
            Err(e) => tracing::warn!("ignoring unusable cached plugin {}: {e}", path.display()),
        }
    }
    let started = std::time::Instant::now();
    let compiled = engine.precompile_component(bytes)?;
    // One line per compile, so a slow start or reload says why (`infergate check` with the
    // deploy's `plugins.cache_dir` compiles ahead, and the gateway then loads from the cache).
    match store(dir, &path, &compiled) {
        Ok(()) => tracing::info!(
            "plugin {digest} compiled in {} ms; cached at {}",
            started.elapsed().as_millis(),
            path.display()
        ),
        Err(e) => tracing::warn!("cannot cache a compiled plugin in {}: {e}", dir.display()),
    }
    // SAFETY: `compiled` was produced just now by this engine.
    unsafe { Component::deserialize(engine, &compiled) }
}

fn key(engine: &Engine, digest: &str) -> String {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let mut key = Sha256::new();
    key.update(digest.as_bytes());
    key.update(engine_hash.finish().to_le_bytes());
    hex::encode(&key.finalize()[..16])
}

/// Writes atomically (temp file, then rename) so a concurrent reader never maps half a file.
fn store(dir: &Path, path: &PathBuf, compiled: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, compiled)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{Host, Needs, Plugin};

    fn fixture() -> Option<std::path::PathBuf> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/wasm/pre-only.wasm");
        path.is_file().then_some(path)
    }

    /// The first load writes one artifact; the next load of the same bytes uses it; a corrupt
    /// artifact is ignored and replaced, never trusted.
    #[test]
    fn compiled_plugins_are_cached_and_checked() {
        let Some(wasm) = fixture() else {
            panic!(
                "tests/plugins/wasm/pre-only.wasm is missing: run scripts/build-plugins.sh first"
            );
        };
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new()
            .unwrap()
            .with_cache_dir(Some(dir.path().to_path_buf()));
        let needs = Needs {
            pre: true,
            post: false,
        };
        Plugin::load(&host, &wasm, needs).unwrap();
        let artifacts: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(artifacts.len(), 1, "{artifacts:?}");
        let written = std::fs::metadata(&artifacts[0])
            .unwrap()
            .modified()
            .unwrap();
        Plugin::load(&host, &wasm, needs).unwrap();
        assert_eq!(
            std::fs::metadata(&artifacts[0])
                .unwrap()
                .modified()
                .unwrap(),
            written,
            "reused, not rewritten"
        );
        std::fs::write(&artifacts[0], b"garbage").unwrap();
        Plugin::load(&host, &wasm, needs).unwrap();
        assert_ne!(std::fs::read(&artifacts[0]).unwrap(), b"garbage");
    }
}
