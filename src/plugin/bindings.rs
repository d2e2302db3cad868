//! Host bindings generated from the plugin contract (`plugin-sdk/wit/plugin.wit`, the newest
//! version), one module per world. Both share the `types`, `host` and `ops` interfaces of the
//! `pre` module, so a tensor or error type is the same Rust type whichever world it came
//! through. Older contract versions are linked by hand in `host.rs` (their interfaces are
//! a subset of these, with the same types).
//!
//! The `ops` imports are `trappable`: an op that runs past the call's deadline interrupts the
//! call as a guest running past it would, rather than answering.
//!
//! Each world also gets `instantiate_component` and `bind`: the generated `instantiate_async`
//! split in two, without its per-instance type-check of the export (a tenth of a small
//! plugin's call), so one instance of a component exporting both functions can serve a pre
//! and a post call (`[reuse]`). The check is not lost: the generated `*Pre::new` type-checks
//! the export against the component once, when the plugin loads, and every instance of that
//! component has the same types.

pub mod pre {
    wasmtime::component::bindgen!({
        world: "preprocessor",
        path: "plugin-sdk/wit",
        imports: { "infergate:plugin/ops": trappable },
        exports: { default: async },
    });

    impl<T: Send + 'static> PreprocessorPre<T> {
        /// A fresh instance of the component in `store`. Untyped: when the component also
        /// exports the other world's function, the same instance serves both.
        pub async fn instantiate_component(
            &self,
            store: impl wasmtime::AsContextMut<Data = T>,
        ) -> wasmtime::Result<wasmtime::component::Instance> {
            self.instance_pre.instantiate_async(store).await
        }

        /// This world's export of `instance` (an instance of this component), already
        /// type-checked by [`Self::new`].
        pub fn bind(
            &self,
            store: impl wasmtime::AsContextMut<Data = T>,
            instance: &wasmtime::component::Instance,
        ) -> wasmtime::Result<Preprocessor> {
            let preprocess = instance
                .get_func(store, self.indices.preprocess)
                .ok_or_else(|| wasmtime::format_err!("no export `preprocess`"))?;
            Ok(Preprocessor { preprocess })
        }
    }
}

pub mod post {
    wasmtime::component::bindgen!({
        world: "postprocessor",
        path: "plugin-sdk/wit",
        exports: { default: async },
        with: {
            "infergate:plugin/types": super::pre::infergate::plugin::types,
            "infergate:plugin/host": super::pre::infergate::plugin::host,
            "infergate:plugin/ops": super::pre::infergate::plugin::ops,
        },
    });

    impl<T: Send + 'static> PostprocessorPre<T> {
        /// A fresh instance of the component in `store`. Untyped: when the component also
        /// exports the other world's function, the same instance serves both.
        pub async fn instantiate_component(
            &self,
            store: impl wasmtime::AsContextMut<Data = T>,
        ) -> wasmtime::Result<wasmtime::component::Instance> {
            self.instance_pre.instantiate_async(store).await
        }

        /// This world's export of `instance` (an instance of this component), already
        /// type-checked by [`Self::new`].
        pub fn bind(
            &self,
            store: impl wasmtime::AsContextMut<Data = T>,
            instance: &wasmtime::component::Instance,
        ) -> wasmtime::Result<Postprocessor> {
            let postprocess = instance
                .get_func(store, self.indices.postprocess)
                .ok_or_else(|| wasmtime::format_err!("no export `postprocess`"))?;
            Ok(Postprocessor { postprocess })
        }
    }
}

pub use pre::infergate::plugin::host;
pub use pre::infergate::plugin::ops;
pub use pre::infergate::plugin::types;
