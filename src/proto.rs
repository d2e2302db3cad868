//! Generated TF Serving protobuf and gRPC code (from `proto/` by `build.rs`), kept apart from
//! hand-written code. Module paths follow the protobuf packages.

#![allow(clippy::all, missing_docs)]

pub mod tensorflow {
    tonic::include_proto!("tensorflow");

    pub mod error {
        tonic::include_proto!("tensorflow.error");
    }

    pub mod serving {
        tonic::include_proto!("tensorflow.serving");
    }
}
