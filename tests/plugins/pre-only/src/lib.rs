//! Fixture `pre-only` (world `preprocessor`): exports only `preprocess`, which ignores the
//! request and sends input `x` f32 [1,1] = [2.0] with empty context.

use infergate_sdk::{PluginError, Prepared, Request, Tensor};

fn preprocess(_req: Request) -> Result<Prepared, PluginError> {
    Ok(Prepared::new().input("x", Tensor::f32([1, 1], vec![2.0])?))
}

infergate_sdk::preprocessor!(preprocess);
