//! [`Outputs`]: the model's named output tensors, as a postprocessor receives them.

use crate::error::PluginError;
use crate::tensor::Tensor;

/// The model's outputs for this request's rows only, by signature output name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outputs {
    tensors: Vec<(String, Tensor)>,
}

impl Outputs {
    /// Outputs from `(name, tensor)` pairs (for tests; the gateway builds them in a plugin).
    pub fn new(tensors: Vec<(String, Tensor)>) -> Outputs {
        Outputs { tensors }
    }

    /// The output called `name`. A missing output is a mismatch between plugin and model, so
    /// it is an internal error (500) whose message lists the outputs the model did return.
    pub fn get(&self, name: &str) -> Result<&Tensor, PluginError> {
        match self.tensors.iter().find(|(n, _)| n == name) {
            Some((_, tensor)) => Ok(tensor),
            None => Err(self.missing(name)),
        }
    }

    /// Removes and returns the output called `name`; errors like [`Outputs::get`].
    pub fn take(&mut self, name: &str) -> Result<Tensor, PluginError> {
        match self.tensors.iter().position(|(n, _)| n == name) {
            Some(i) => Ok(self.tensors.remove(i).1),
            None => Err(self.missing(name)),
        }
    }

    /// The output names, in the order the gateway gave them.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, tensor)` for every output.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// The number of outputs.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when there are no outputs.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    fn missing(&self, name: &str) -> PluginError {
        let present: Vec<String> = self.names().map(|n| format!("'{n}'")).collect();
        let present = if present.is_empty() {
            "none".to_string()
        } else {
            present.join(", ")
        };
        PluginError::internal(format!(
            "the model returned no output named '{name}' (it returned: {present})"
        ))
    }
}

impl IntoIterator for Outputs {
    type Item = (String, Tensor);
    type IntoIter = std::vec::IntoIter<(String, Tensor)>;

    fn into_iter(self) -> Self::IntoIter {
        self.tensors.into_iter()
    }
}

impl<S: Into<String>> FromIterator<(S, Tensor)> for Outputs {
    fn from_iter<I: IntoIterator<Item = (S, Tensor)>>(iter: I) -> Outputs {
        Outputs::new(iter.into_iter().map(|(n, t)| (n.into(), t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> Outputs {
        [
            (
                "probabilities",
                Tensor::f32([1, 2], vec![0.25, 0.75]).unwrap(),
            ),
            ("label", Tensor::i64([1], vec![1]).unwrap()),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn get_finds_outputs_by_name() {
        let outputs = outputs();
        assert_eq!(outputs.get("label").unwrap().as_i64().unwrap(), &[1]);
        assert_eq!(
            outputs.names().collect::<Vec<_>>(),
            ["probabilities", "label"]
        );
    }

    #[test]
    fn a_missing_output_names_itself_and_the_present_ones() {
        let err = outputs().get("logits").unwrap_err();
        assert_eq!(err.status(), 500);
        assert_eq!(
            err.message(),
            "the model returned no output named 'logits' (it returned: 'probabilities', 'label')"
        );
        let err = Outputs::default().get("x").unwrap_err();
        assert_eq!(
            err.message(),
            "the model returned no output named 'x' (it returned: none)"
        );
    }

    #[test]
    fn take_removes_the_output() {
        let mut outputs = outputs();
        assert_eq!(outputs.take("label").unwrap().dtype(), crate::DType::I64);
        assert_eq!(outputs.len(), 1);
        assert!(outputs.take("label").is_err());
    }
}
