//! Bindings generated from the plugin contract (`wit/plugin.wit`); nothing hand-written lives
//! here.
//!
//! `shared` owns the contract's types and the `host` and `ops` imports; each world module reuses them
//! through `with`, so a generated `Tensor` is one Rust type whichever world it came through.
//! Each world module also defines a public export macro, which the SDK's `preprocessor!`,
//! `postprocessor!` and `plugin!` expand to. The component-type section describing a world's
//! exports is emitted by that export macro, in the plugin crate, so a plugin that exports only
//! `preprocess` does not claim `postprocess` too.

#![allow(missing_docs, clippy::all)]

/// The contract's `types`, `host` and `ops` interfaces, generated once for all three worlds.
/// (A component imports only the functions its code calls, so a plugin that never uses an op
/// imports no `ops` function.)
pub mod shared {
    wit_bindgen::generate!({
        path: "wit",
        inline: "
            package infergate:sdk;
            world imports {
                import infergate:plugin/types@0.2.0;
                import infergate:plugin/host@0.2.0;
                import infergate:plugin/ops@0.2.0;
            }
        ",
        world: "infergate:sdk/imports",
        generate_all,
    });
}

/// World `preprocessor`: exports `preprocess` only.
pub mod preprocessor {
    wit_bindgen::generate!({
        path: "wit",
        world: "infergate:plugin/preprocessor@0.2.0",
        with: {
            "infergate:plugin/types@0.2.0": crate::bindings::shared::infergate::plugin::types,
            "infergate:plugin/host@0.2.0": crate::bindings::shared::infergate::plugin::host,
            "infergate:plugin/ops@0.2.0": crate::bindings::shared::infergate::plugin::ops,
        },
        export_macro_name: "__export_preprocessor",
        pub_export_macro: true,
    });
}

/// World `postprocessor`: exports `postprocess` only.
pub mod postprocessor {
    wit_bindgen::generate!({
        path: "wit",
        world: "infergate:plugin/postprocessor@0.2.0",
        with: {
            "infergate:plugin/types@0.2.0": crate::bindings::shared::infergate::plugin::types,
            "infergate:plugin/host@0.2.0": crate::bindings::shared::infergate::plugin::host,
            "infergate:plugin/ops@0.2.0": crate::bindings::shared::infergate::plugin::ops,
        },
        export_macro_name: "__export_postprocessor",
        pub_export_macro: true,
    });
}

/// World `plugin`: exports both.
pub mod plugin {
    wit_bindgen::generate!({
        path: "wit",
        world: "infergate:plugin/plugin@0.2.0",
        with: {
            "infergate:plugin/types@0.2.0": crate::bindings::shared::infergate::plugin::types,
            "infergate:plugin/host@0.2.0": crate::bindings::shared::infergate::plugin::host,
            "infergate:plugin/ops@0.2.0": crate::bindings::shared::infergate::plugin::ops,
        },
        export_macro_name: "__export_plugin",
        pub_export_macro: true,
    });
}
