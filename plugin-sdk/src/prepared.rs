//! [`Prepared`]: what a preprocessor hands to the model — named inputs plus context bytes.

use crate::tensor::Tensor;

/// Named input tensors for the model, and opaque bytes passed unchanged to postprocess.
///
/// Every input must share the same dim 0 (the request's row count): the gateway batches
/// requests by concatenating inputs along dim 0 and splits the outputs the same way.
///
/// ```
/// use infergate_sdk::{Prepared, Tensor};
///
/// let prepared = Prepared::new()
///     .input("x", Tensor::f32([1, 2], vec![0.5, 1.5])?)
///     .context("k=3");
/// assert_eq!(prepared.get("x").map(|t| t.shape()), Some(&[1i64, 2][..]));
/// assert_eq!(prepared.context, b"k=3");
/// # Ok::<(), infergate_sdk::TensorError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prepared {
    /// The model inputs, by signature input name.
    pub inputs: Vec<(String, Tensor)>,
    /// Handed to postprocess as-is (the gateway never reads it).
    pub context: Vec<u8>,
}

impl Prepared {
    /// No inputs and empty context.
    pub fn new() -> Prepared {
        Prepared::default()
    }

    /// Adds the input `name`.
    pub fn input(mut self, name: impl Into<String>, tensor: Tensor) -> Prepared {
        self.inputs.push((name.into(), tensor));
        self
    }

    /// Sets the context bytes (`&str`, `String`, `Vec<u8>` and `&[u8]` all work).
    pub fn context(mut self, context: impl Into<Vec<u8>>) -> Prepared {
        self.context = context.into();
        self
    }

    /// The input called `name`, if any (for tests).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}
