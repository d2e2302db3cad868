//! Fixture `misbehave` (world `plugin`): does whatever the request asks, good or bad, so the
//! gateway's tests can check each bound and each error path both ways.
//!
//! preprocess reads the body as one word (surrounding whitespace ignored):
//!
//! | body | preprocess |
//! |---|---|
//! | `ok` or empty | input `x` f32 [1,1] = [1.0], context `ok` |
//! | `bad-request` | `bad_request("misbehave: the body asked for bad-request")` |
//! | `unprocessable` | `unprocessable("misbehave: the body asked for unprocessable")` |
//! | `internal` | `internal("misbehave: the body asked for internal")` |
//! | `trap` | `panic!("misbehave: trap requested")`, a wasm trap |
//! | `loop` | spins forever (until the gateway's deadline) |
//! | `grow` | allocates 1 MiB blocks, writing every byte, until allocation fails (a trap) |
//! | `huge-tensor` | input `x` u8 [1, 268435456] (256 MiB of zeros), context `ok` |
//! | `log` | logs `misbehave: log at <level>` once per level, trace to error; then as `ok` |
//! | `post-trap`, `post-bad-status`, `post-huge-body`, `post-internal` | as `ok`, but the context is the word |
//! | `post-header:NAME:VALUE[,NAME:VALUE…]` | as `ok`, but the context is the word |
//! | `stash:WORD` | keeps WORD in a global of the instance; then as `ok` |
//! | `recall` | as `ok`, but the context is `recalled:` and what the instance's global holds |
//! | PNG or JPEG bytes | the native `decode-image` op (gray): input `x` u8 `[1, h, w, 1]`, context `ok`; its refusal a 400 with the op's message |
//! | `op-huge` | the native `resize` of a 64x64 image to 16384x16384 (256 MiB); its refusal a 500 with the op's message |
//! | `op-loop` | native `resize` (512x512 to 2048x2048, lanczos) over and over, until the deadline |
//! | `op-invalid` | the native `crop` with a window outside the image; its refusal a 500 with the op's message |
//! | anything else | `bad_request("misbehave: unknown behaviour '<word>'; …")` |
//!
//! postprocess reads the context: `post-trap` panics (`misbehave: post-trap requested`),
//! `post-bad-status` returns status 1000, `post-huge-body` returns 200 with a 64 MiB body of
//! `x`, `post-internal` returns `internal("misbehave: the context asked for post-internal")`;
//! `post-header:…` returns 200 `text/plain` `ok` with each `NAME: VALUE` added as a header (in
//! order, repeats kept); `recalled:…` returns 200 `text/plain` with the context as the body;
//! any other context returns 200 `text/plain` `ok`.

use std::hint::black_box;

use infergate_sdk::ops::{self, Color, Filter, Layout};
use infergate_sdk::{Outputs, PluginError, Prepared, Request, Response, Tensor, log};

const BEHAVIOURS: &str = "ok, bad-request, unprocessable, internal, trap, loop, grow, \
    huge-tensor, log, post-trap, post-bad-status, post-huge-body, post-internal, \
    post-header:NAME:VALUE[,NAME:VALUE…], stash:WORD, recall, op-huge, op-loop, op-invalid, \
    or PNG/JPEG bytes";

/// What `stash:WORD` kept: lives as long as the instance (a fresh instance per call empties it).
static STASH: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn preprocess(req: Request) -> Result<Prepared, PluginError> {
    if req.body.starts_with(b"\x89PNG") || req.body.starts_with(b"\xff\xd8\xff") {
        let img = ops::decode_image(&req.body, Color::Gray, Layout::Hwc, None)
            .map_err(PluginError::bad_request)?;
        let shape = [1, img.shape()[0], img.shape()[1], 1];
        return Ok(Prepared::new()
            .input("x", img.reshape(shape)?)
            .context("ok"));
    }
    let body = String::from_utf8_lossy(&req.body);
    match body.trim() {
        "" | "ok" => ok("ok"),
        word @ ("bad-request" | "unprocessable" | "internal") => {
            let msg = format!("misbehave: the body asked for {word}");
            Err(match word {
                "bad-request" => PluginError::bad_request(msg),
                "unprocessable" => PluginError::unprocessable(msg),
                _ => PluginError::internal(msg),
            })
        }
        "trap" => panic!("misbehave: trap requested"),
        "loop" => spin_forever(),
        "grow" => grow_forever(),
        "huge-tensor" => {
            let size = 256 << 20;
            let x = Tensor::u8([1, size as i64], vec![0u8; size])?;
            Ok(Prepared::new().input("x", x).context("ok"))
        }
        "log" => {
            log::trace("misbehave: log at trace");
            log::debug("misbehave: log at debug");
            log::info("misbehave: log at info");
            log::warn("misbehave: log at warn");
            log::error("misbehave: log at error");
            ok("ok")
        }
        word @ ("post-trap" | "post-bad-status" | "post-huge-body" | "post-internal") => ok(word),
        word if word.starts_with("post-header:") => ok(word),
        word if word.starts_with("stash:") => {
            *STASH.lock().unwrap() = word["stash:".len()..].to_string();
            ok("ok")
        }
        "recall" => ok(&format!("recalled:{}", STASH.lock().unwrap())),
        "op-huge" => {
            let small = Tensor::u8([64, 64, 1], vec![7u8; 64 * 64])?;
            ops::resize(&small, Layout::Hwc, 16384, 16384, Filter::Nearest)?;
            ok("ok")
        }
        "op-loop" => {
            let big = Tensor::u8([512, 512, 1], vec![7u8; 512 * 512])?;
            loop {
                black_box(ops::resize(&big, Layout::Hwc, 2048, 2048, Filter::Lanczos)?);
            }
        }
        "op-invalid" => {
            let small = Tensor::u8([4, 4, 1], vec![0u8; 16])?;
            ops::crop(&small, Layout::Hwc, 2, 2, 3, 3)?;
            ok("ok")
        }
        other => Err(PluginError::bad_request(format!(
            "misbehave: unknown behaviour '{other}'; send one of: {BEHAVIOURS}"
        ))),
    }
}

fn postprocess(_outputs: Outputs, context: Vec<u8>) -> Result<Response, PluginError> {
    match context.as_slice() {
        b"post-trap" => panic!("misbehave: post-trap requested"),
        b"post-bad-status" => Ok(Response::new(1000, "status 1000")),
        b"post-huge-body" => Ok(Response::new(200, vec![b'x'; 64 << 20])),
        b"post-internal" => Err(PluginError::internal(
            "misbehave: the context asked for post-internal",
        )),
        context => match context.strip_prefix(b"post-header:") {
            Some(pairs) => {
                let mut response = Response::text("ok");
                for pair in String::from_utf8_lossy(pairs).split(',') {
                    let (name, value) = pair.split_once(':').unwrap_or((pair, ""));
                    response = response.header(name, value);
                }
                Ok(response)
            }
            None if context.starts_with(b"recalled:") => {
                Ok(Response::text(String::from_utf8_lossy(context)))
            }
            None => Ok(Response::text("ok")),
        },
    }
}

infergate_sdk::plugin!(preprocess, postprocess);

/// The well-behaved answer: one f32 input `x` = [[1.0]].
fn ok(context: &str) -> Result<Prepared, PluginError> {
    Ok(Prepared::new()
        .input("x", Tensor::f32([1, 1], vec![1.0])?)
        .context(context))
}

/// Never returns; `black_box` keeps the optimizer from proving the loop has no effect.
fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Never returns: holds on to 1 MiB blocks, each fully written, until the allocator fails,
/// which aborts (a trap).
fn grow_forever() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(vec![0xa5u8; 1 << 20]));
        black_box(&hoard);
    }
}
