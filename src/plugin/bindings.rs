//! Host bindings generated from the plugin contract (`plugin-sdk/wit/plugin.wit`), one module
//! per world. Both share the `types` and `host` interfaces of the `pre` module, so a tensor
//! or error type is the same Rust type whichever world it came through.

pub mod pre {
    wasmtime::component::bindgen!({
        world: "preprocessor",
        path: "plugin-sdk/wit",
        exports: { default: async },
    });
}

pub mod post {
    wasmtime::component::bindgen!({
        world: "postprocessor",
        path: "plugin-sdk/wit",
        exports: { default: async },
        with: {
            "infergate:plugin/types": super::pre::infergate::plugin::types,
            "infergate:plugin/host": super::pre::infergate::plugin::host,
        },
    });
}

pub use pre::infergate::plugin::host;
pub use pre::infergate::plugin::types;
