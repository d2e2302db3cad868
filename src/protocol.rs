//! The tensor protocols: APIs whose clients send tensors rather than a body for a plugin.
//! TF Serving's gRPC API and the Open Inference Protocol (KServe v2) over REST and gRPC, all
//! answered through the same route table, batch queues, limits and metrics as REST
//! ([`crate::pipeline::serve_tensors`]). A route's plugins don't run for them: plugins turn
//! HTTP bodies into tensors and back, and these clients already speak tensors.
//!
//! - `grpc`: gRPC calls on the public port: which service answers, the message size limit,
//!   the client's deadline (`grpc-timeout`).
//! - `tfserving`: `tensorflow.serving.PredictionService` and `ModelService`.
//! - `v2`: the Open Inference Protocol: its tensors and metadata, its REST endpoints
//!   (`/v2/…`) and its gRPC service (`inference.GRPCInferenceService`).

pub mod grpc;
pub mod tfserving;
pub mod v2;
