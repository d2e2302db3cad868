//! Write infergate plugins as plain Rust functions.
//!
//! A plugin is a WebAssembly component the gateway runs around a model call: `preprocess`
//! turns the client's HTTP request into named input tensors, `postprocess` turns the model's
//! output tensors into the HTTP response. Write one or both as ordinary functions and export
//! them with one macro line:
//!
//! ```
//! use infergate_sdk::{Outputs, PluginError, Prepared, Request, Response, Tensor};
//!
//! fn preprocess(req: Request) -> Result<Prepared, PluginError> {
//!     let text = req.body_str()?;
//!     let x: f32 = text.trim().parse().map_err(PluginError::bad_request)?;
//!     Ok(Prepared::new().input("x", Tensor::f32([1, 1], vec![x])?))
//! }
//!
//! fn postprocess(outputs: Outputs, _context: Vec<u8>) -> Result<Response, PluginError> {
//!     let y = outputs.get("y")?.as_f32()?;
//!     Ok(Response::text(format!("{y:?}")))
//! }
//!
//! infergate_sdk::plugin!(preprocess, postprocess);
//! ```
//!
//! [`preprocessor!`] exports only `preprocess` and [`postprocessor!`] only `postprocess`; the
//! gateway then uses its default REST JSON handling for the other side. Build with
//! `cargo build --release --target wasm32-wasip2` (crate type `cdylib`). The functions stay
//! plain Rust, so a plugin's unit tests call them directly with `cargo test` on the host.
//!
//! # Layout
//! - [`tensor`]: [`Tensor`], [`DType`], [`Values`], [`TensorError`] — checked, typed tensors.
//! - [`request`]: [`Request`] — the client's request, header and query lookups.
//! - [`prepared`]: [`Prepared`] — what preprocess returns.
//! - [`outputs`]: [`Outputs`] — what postprocess receives.
//! - [`response`]: [`Response`] — what postprocess returns.
//! - [`error`]: [`PluginError`] — refusals and their HTTP status (400, 422, 500).
//! - [`log`]: logging to the gateway's log.
//! - [`ops`]: native image and tensor ops run by the gateway (decode, resize, crop, normalize,
//!   cast, softmax, argmax, top-k), matching Pillow/numpy (contract 0.2.0).
//! - [`image`] (feature `image`): PNG/JPEG decode, grayscale/RGB, resize, to tensor.
//! - `bindings` and `glue` (hidden): the code generated from `wit/plugin.wit` and the
//!   conversions the export macros use.
//!
//! # Features
//! - `json` (default): [`Request::json`], [`Response::json`], and `serde_json` re-exported.
//! - `image`: the [`image`] module.

mod bindings;
pub mod error;
mod glue;
#[cfg(feature = "image")]
pub mod image;
pub mod log;
pub mod ops;
pub mod outputs;
pub mod prepared;
pub mod request;
pub mod response;
pub mod tensor;

pub use error::PluginError;
pub use outputs::Outputs;
pub use prepared::Prepared;
pub use request::Request;
pub use response::Response;
pub use tensor::{DType, Tensor, TensorError, Values};

/// The `serde_json` the SDK uses, so a plugin's JSON values match [`Response::json`].
#[cfg(feature = "json")]
pub use serde_json;

/// Compiles the README's complete plugin as a doctest, so the README cannot go stale.
#[cfg(all(doctest, feature = "image", feature = "json"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// What the export macros expand to. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::shared::infergate::plugin::types as wit;
    pub use crate::bindings::{plugin, postprocessor, preprocessor};
    pub use crate::glue::{postprocess, preprocess};
}

/// Exports `preprocess` (world `preprocessor`): the plugin turns requests into model inputs
/// and the gateway answers with the model's outputs as TF Serving REST JSON.
///
/// The function is `fn(Request) -> Result<Prepared, E>` for any `E: Into<PluginError>`.
///
/// ```
/// use infergate_sdk::{PluginError, Prepared, Request, Tensor};
///
/// fn preprocess(req: Request) -> Result<Prepared, PluginError> {
///     let n = req.body.len() as i64;
///     Ok(Prepared::new().input("length", Tensor::i64([1], vec![n])?))
/// }
///
/// infergate_sdk::preprocessor!(preprocess);
/// ```
#[macro_export]
macro_rules! preprocessor {
    ($preprocess:path $(,)?) => {
        const _: () = {
            use ::core::result::Result;
            use $crate::__private::wit;

            struct InfergatePreprocessor;

            impl $crate::__private::preprocessor::Guest for InfergatePreprocessor {
                fn preprocess(req: wit::Request) -> Result<wit::Prepared, wit::PluginError> {
                    $crate::__private::preprocess(req, $preprocess)
                }
            }

            $crate::__private::preprocessor::__export_preprocessor!(
                InfergatePreprocessor with_types_in $crate::__private::preprocessor
            );
        };
    };
}

/// Exports `postprocess` (world `postprocessor`): the gateway takes TF Serving REST JSON in
/// and the plugin turns the model's outputs into the response.
///
/// The function is `fn(Outputs, Vec<u8>) -> Result<Response, E>` for any
/// `E: Into<PluginError>`; the bytes are the context preprocess set (empty without one).
///
/// ```
/// use infergate_sdk::{Outputs, PluginError, Response};
///
/// fn postprocess(outputs: Outputs, _context: Vec<u8>) -> Result<Response, PluginError> {
///     let names: Vec<&str> = outputs.names().collect();
///     Ok(Response::text(names.join(",")))
/// }
///
/// infergate_sdk::postprocessor!(postprocess);
/// ```
#[macro_export]
macro_rules! postprocessor {
    ($postprocess:path $(,)?) => {
        const _: () = {
            use ::core::result::Result;
            use ::std::{string::String, vec::Vec};
            use $crate::__private::wit;

            struct InfergatePostprocessor;

            impl $crate::__private::postprocessor::Guest for InfergatePostprocessor {
                fn postprocess(
                    outputs: Vec<(String, wit::Tensor)>,
                    context: Vec<u8>,
                ) -> Result<wit::Response, wit::PluginError> {
                    $crate::__private::postprocess(outputs, context, $postprocess)
                }
            }

            $crate::__private::postprocessor::__export_postprocessor!(
                InfergatePostprocessor with_types_in $crate::__private::postprocessor
            );
        };
    };
}

/// Exports both `preprocess` and `postprocess` (world `plugin`): one `.wasm` serves as the
/// model's pre and post plugin. See the [crate docs](crate) for an example.
#[macro_export]
macro_rules! plugin {
    ($preprocess:path, $postprocess:path $(,)?) => {
        const _: () = {
            use ::core::result::Result;
            use ::std::{string::String, vec::Vec};
            use $crate::__private::wit;

            struct InfergatePlugin;

            impl $crate::__private::plugin::Guest for InfergatePlugin {
                fn preprocess(req: wit::Request) -> Result<wit::Prepared, wit::PluginError> {
                    $crate::__private::preprocess(req, $preprocess)
                }

                fn postprocess(
                    outputs: Vec<(String, wit::Tensor)>,
                    context: Vec<u8>,
                ) -> Result<wit::Response, wit::PluginError> {
                    $crate::__private::postprocess(outputs, context, $postprocess)
                }
            }

            $crate::__private::plugin::__export_plugin!(
                InfergatePlugin with_types_in $crate::__private::plugin
            );
        };
    };
}
