//! Fixture `post-only` (world `postprocessor`): exports only `postprocess`, which answers 200
//! `application/json` with the list of output names in the order the gateway gave them,
//! e.g. `["y"]`.

use infergate_sdk::{Outputs, PluginError, Response};

fn postprocess(outputs: Outputs, _context: Vec<u8>) -> Result<Response, PluginError> {
    let names: Vec<&str> = outputs.names().collect();
    Response::json(&names)
}

infergate_sdk::postprocessor!(postprocess);
