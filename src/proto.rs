//! Generated protobuf and gRPC code (from `proto/` by `build.rs`), kept apart from
//! hand-written code: TF Serving's API (`tensorflow.serving`) and the Open Inference
//! Protocol's (`inference`, KServe v2). Module paths follow the protobuf packages.

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

pub mod inference {
    tonic::include_proto!("inference");
}
