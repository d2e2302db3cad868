//! A fake TF Serving: an in-process `PredictionService` + `ModelService` (tonic) whose models
//! are closures. Hermetic tests and benchmarks run against it instead of real TensorFlow; it
//! validates inputs against each model's signature the way TF Serving does, records every
//! call, can answer in typed `*_val` fields or `tensor_content`, and can charge a cost per
//! call and per row to stand in for an accelerator. For fleet tests a running [`FakeServer`]
//! can be killed (every connection cut, as SIGKILL would) and restarted on its address, serve
//! TLS, and a [`Fault`] switch makes it fail the way real servers do.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::backend::tfserving::{MAX_MESSAGE_BYTES, convert};
use crate::backend::{
    Backend, BackendError, BackendFuture, ModelMetadata, ModelTarget, VersionChoice, VersionStatus,
};
use crate::proto::tensorflow::serving::{
    GetModelMetadataRequest, GetModelMetadataResponse, GetModelStatusRequest,
    GetModelStatusResponse, ModelSpec, ModelVersionStatus, PredictRequest, PredictResponse,
    SignatureDefMap, StatusProto, model_service_server, model_spec::VersionChoice as SpecVersion,
    model_version_status::State, prediction_service_server,
};
use crate::proto::tensorflow::{
    SignatureDef, TensorInfo, TensorProto, TensorShapeProto, tensor_shape_proto::Dim,
};
use crate::tensor::{DType, NamedTensors, Tensor};

/// What a fake model computes: inputs (validated against its signature) → outputs.
pub type Compute = Arc<dyn Fn(&NamedTensors) -> Result<NamedTensors, Status> + Send + Sync>;

/// One fake model.
#[derive(Clone)]
pub struct FakeModel {
    name: String,
    versions: Vec<i64>,
    labels: BTreeMap<String, i64>,
    inputs: Vec<(String, DType, Vec<i64>)>,
    outputs: Vec<(String, DType, Vec<i64>)>,
    compute: Compute,
}

impl FakeModel {
    /// A model with version 1 and no signature inputs yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            versions: vec![1],
            labels: BTreeMap::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            compute: Arc::new(|inputs| Ok(inputs.clone())),
        }
    }

    pub fn versions(mut self, versions: &[i64]) -> Self {
        self.versions = versions.to_vec();
        self
    }

    pub fn label(mut self, label: &str, version: i64) -> Self {
        self.labels.insert(label.to_string(), version);
        self
    }

    /// Declares a signature input; -1 dims accept any size.
    pub fn input(mut self, name: &str, dtype: DType, shape: &[i64]) -> Self {
        self.inputs.push((name.to_string(), dtype, shape.to_vec()));
        self
    }

    /// Declares a signature output (for metadata only).
    pub fn output(mut self, name: &str, dtype: DType, shape: &[i64]) -> Self {
        self.outputs.push((name.to_string(), dtype, shape.to_vec()));
        self
    }

    pub fn compute(
        mut self,
        f: impl Fn(&NamedTensors) -> Result<NamedTensors, Status> + Send + Sync + 'static,
    ) -> Self {
        self.compute = Arc::new(f);
        self
    }

    fn resolve(&self, spec: &ModelSpec) -> Result<i64, Status> {
        match &spec.version_choice {
            None => self
                .versions
                .iter()
                .max()
                .copied()
                .ok_or_else(|| Status::not_found("no versions")),
            Some(SpecVersion::Version(v)) if self.versions.contains(v) => Ok(*v),
            Some(SpecVersion::Version(v)) => Err(Status::not_found(format!(
                "Servable not found for request: Specific({}, {v})",
                self.name
            ))),
            Some(SpecVersion::VersionLabel(l)) => self.labels.get(l).copied().ok_or_else(|| {
                Status::invalid_argument(format!("Unrecognized servable version label: {l}"))
            }),
        }
    }

    /// TF Serving's input checks: every declared input present, no others, dtype and shape fit.
    fn validate(&self, inputs: &NamedTensors) -> Result<(), Status> {
        for (name, t) in inputs {
            let Some((_, dtype, shape)) = self.inputs.iter().find(|(n, ..)| n == name) else {
                return Err(Status::invalid_argument(format!(
                    "input tensor alias not found in signature: {name}"
                )));
            };
            if t.dtype() != *dtype {
                return Err(Status::invalid_argument(format!(
                    "Expects arg[0] to be {} but {} is provided",
                    dtype.name(),
                    t.dtype().name()
                )));
            }
            let fits = shape.len() == t.shape().len()
                && shape
                    .iter()
                    .zip(t.shape())
                    .all(|(&s, &d)| s == -1 || s == d);
            if !fits {
                return Err(Status::invalid_argument(format!(
                    "input `{name}` must have shape {shape:?}, got {:?}",
                    t.shape()
                )));
            }
        }
        if let Some((missing, ..)) = self
            .inputs
            .iter()
            .find(|(n, ..)| !inputs.iter().any(|(m, _)| m == n))
        {
            return Err(Status::invalid_argument(format!(
                "input `{missing}` is missing"
            )));
        }
        Ok(())
    }
}

/// One recorded `Predict` call.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeCall {
    pub model: String,
    pub version: i64,
    pub signature: String,
    /// Dim 0 of the first input.
    pub rows: usize,
}

/// The fake server's shared state; clone it to inspect calls while the server runs.
#[derive(Clone, Default)]
pub struct FakeBackend {
    models: Arc<BTreeMap<String, FakeModel>>,
    calls: Arc<Mutex<Vec<FakeCall>>>,
    typed_outputs: bool,
    call_cost: Duration,
    row_cost: Duration,
    /// Charge the cost on a blocking thread's `sleep` instead of tokio's timer (see
    /// [`FakeBackend::precise_cost`]).
    precise: bool,
    /// What to fail with instead of answering, switched while the server runs.
    fault: Arc<Mutex<Option<Fault>>>,
}

/// A way the fake fails instead of answering (see [`FakeBackend::set_fault`]).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Every RPC (Predict, metadata, status) answers this code: a server that is up but
    /// unwell, e.g. `Unavailable` while TF Serving shuts down.
    Status(tonic::Code, String),
    /// Only Predict answers this code; metadata and status work (a failing model).
    Predict(tonic::Code, String),
    /// Predict answers this reply as it is: broken or hostile replies.
    Reply(PredictResponse),
    /// Every version reports LOADING and Predict says the servable isn't found, as TF
    /// Serving does while a model loads.
    Loading,
}

impl FakeBackend {
    pub fn new(models: impl IntoIterator<Item = FakeModel>) -> Self {
        let models = models.into_iter().map(|m| (m.name.clone(), m)).collect();
        Self {
            models: Arc::new(models),
            typed_outputs: true,
            ..Default::default()
        }
    }

    /// Answer with `tensor_content` instead of TF Serving's default typed fields.
    pub fn tensor_content(mut self) -> Self {
        self.typed_outputs = false;
        self
    }

    /// Each call sleeps `per_call + rows × per_row`, like an accelerator's fixed launch cost
    /// plus a small cost per row.
    pub fn cost(mut self, per_call: Duration, per_row: Duration) -> Self {
        self.call_cost = per_call;
        self.row_cost = per_row;
        self
    }

    /// Charge the cost with the OS's sleep on a blocking thread (tens of µs late) instead of
    /// tokio's timer, which rounds every sleep up to its next millisecond tick: with it a
    /// 1 ms cost takes 1–2 ms depending on when the call arrives, so a client's latency moves
    /// by whole ticks with its own overhead. For benchmarks on the real clock; tests on a
    /// paused clock keep the default.
    pub fn precise_cost(mut self) -> Self {
        self.precise = true;
        self
    }

    /// Fails every call from now on as `fault` says (`None`: answer normally again).
    pub fn set_fault(&self, fault: Option<Fault>) {
        *self
            .fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fault;
    }

    fn fault(&self) -> Option<Fault> {
        self.fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Calls so far, oldest first.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        self.serve_on(listener, shutdown, None, Connections::default())
            .await;
    }

    async fn serve_on(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        tls: Option<FakeTls>,
        connections: Connections,
    ) {
        let incoming = tokio_stream_from(listener, connections);
        let prediction = prediction_service_server::PredictionServiceServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let models = model_service_server::ModelServiceServer::new(self);
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            let mut config = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(tls.cert, tls.key));
            if let Some(ca) = tls.client_ca {
                config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            builder = match builder.tls_config(config) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("fake backend TLS: {e}");
                    return;
                }
            };
        }
        let result = builder
            .add_service(prediction)
            .add_service(models)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        if let Err(e) = result {
            tracing::warn!("fake backend stopped: {e}");
        }
    }

    /// Starts on a free loopback port; the server stops when the returned guard drops.
    pub async fn start(self) -> std::io::Result<FakeServer> {
        FakeServer::start(self, "127.0.0.1:0".parse().expect("address"), None).await
    }

    /// Starts on a free loopback port serving TLS with `tls` (a certificate for `localhost` /
    /// `127.0.0.1`, and a CA when clients must present certificates).
    pub async fn start_tls(self, tls: FakeTls) -> std::io::Result<FakeServer> {
        FakeServer::start(self, "127.0.0.1:0".parse().expect("address"), Some(tls)).await
    }

    /// The model's work behind `Predict`: resolve, validate, record, charge the cost, compute.
    async fn run(
        &self,
        spec: ModelSpec,
        mut inputs: NamedTensors,
    ) -> Result<(String, i64, String, NamedTensors), Status> {
        let (model, spec) = self.model(&Some(spec))?;
        let version = model.resolve(&spec)?;
        let signature = if spec.signature_name.is_empty() {
            "serving_default".into()
        } else {
            spec.signature_name.clone()
        };
        if signature != "serving_default" {
            return Err(Status::invalid_argument(format!(
                "Serving signature name: \"{signature}\" not found in signature def"
            )));
        }
        inputs.sort_by(|a, b| a.0.cmp(&b.0));
        model.validate(&inputs)?;
        let rows = inputs.first().and_then(|(_, t)| t.rows()).unwrap_or(0);
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(FakeCall {
                model: model.name.clone(),
                version,
                signature: signature.clone(),
                rows,
            });
        let cost = self.call_cost + self.row_cost * rows as u32;
        if !cost.is_zero() {
            if self.precise {
                let slept = tokio::task::spawn_blocking(move || std::thread::sleep(cost)).await;
                slept.map_err(|e| Status::internal(format!("cost thread: {e}")))?;
            } else {
                tokio::time::sleep(cost).await;
            }
        }
        let outputs = (model.compute)(&inputs)?;
        Ok((model.name.clone(), version, signature, outputs))
    }

    /// This fake called in process, without gRPC, through the [`Backend`] seam: for tests on a
    /// paused clock and benchmarks of the gateway alone. Calls end after `timeout`.
    pub fn in_process(&self, timeout: Duration) -> InProcess {
        InProcess {
            fake: self.clone(),
            timeout,
        }
    }

    /// `Predict` without gRPC (see [`FakeBackend::in_process`]).
    pub async fn predict_local(
        &self,
        target: &ModelTarget,
        inputs: &NamedTensors,
    ) -> Result<NamedTensors, BackendError> {
        let spec = ModelSpec {
            name: target.name.clone(),
            version_choice: match &target.version {
                VersionChoice::Latest => None,
                VersionChoice::Number(v) => Some(SpecVersion::Version(*v)),
                VersionChoice::Label(l) => Some(SpecVersion::VersionLabel(l.clone())),
            },
            signature_name: target.signature.clone(),
        };
        let (_, _, _, mut outputs) = self
            .run(spec, inputs.clone())
            .await
            .map_err(|s| BackendError::new(s.code(), s.message()))?;
        outputs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(outputs)
    }

    fn model(&self, spec: &Option<ModelSpec>) -> Result<(&FakeModel, ModelSpec), Status> {
        let spec = spec
            .clone()
            .ok_or_else(|| Status::invalid_argument("Missing ModelSpec"))?;
        let model = self.models.get(&spec.name).ok_or_else(|| {
            Status::not_found(format!(
                "Servable not found for request: Latest({})",
                spec.name
            ))
        })?;
        Ok((model, spec))
    }
}

/// The fake as a [`Backend`] called in process (see [`FakeBackend::in_process`]).
pub struct InProcess {
    fake: FakeBackend,
    timeout: Duration,
}

impl Backend for InProcess {
    fn predict<'a>(
        &'a self,
        target: &'a ModelTarget,
        inputs: &'a NamedTensors,
        deadline: Option<Duration>,
    ) -> BackendFuture<'a, NamedTensors> {
        let timeout = deadline.map_or(self.timeout, |d| d.min(self.timeout));
        Box::pin(async move {
            match tokio::time::timeout(timeout, self.fake.predict_local(target, inputs)).await {
                Ok(result) => result,
                Err(_) => Err(BackendError::new(
                    tonic::Code::DeadlineExceeded,
                    "fake backend timed out",
                )),
            }
        })
    }

    fn status<'a>(&'a self, _target: &'a ModelTarget) -> BackendFuture<'a, Vec<VersionStatus>> {
        Box::pin(std::future::ready(Err(BackendError::new(
            tonic::Code::Unimplemented,
            "the in-process fake has no status",
        ))))
    }

    fn metadata<'a>(&'a self, _target: &'a ModelTarget) -> BackendFuture<'a, ModelMetadata> {
        Box::pin(std::future::ready(Err(BackendError::new(
            tonic::Code::Unimplemented,
            "the in-process fake has no metadata",
        ))))
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// PEM certificate and key a [`FakeServer`] serves TLS with, and the CA whose certificates
/// it requires from clients (mutual TLS), if any.
#[derive(Clone)]
pub struct FakeTls {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

/// Duplicates of the accepted sockets, so [`FakeServer::kill`] can cut them: tonic runs each
/// connection on a task of its own, out of reach of the server task.
#[derive(Clone, Default)]
struct Connections(Arc<Mutex<Vec<std::net::TcpStream>>>);

impl Connections {
    /// Keeps a duplicate of `stream`'s socket and gives the stream back.
    fn track(&self, stream: tokio::net::TcpStream) -> std::io::Result<tokio::net::TcpStream> {
        let stream = stream.into_std()?;
        let dup = stream.try_clone()?;
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(dup);
        tokio::net::TcpStream::from_std(stream)
    }

    /// Shuts every tracked socket both ways: each connection task reads EOF and ends, the
    /// client sees its connection drop with calls in flight unanswered.
    fn cut(&self) {
        let streams = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for stream in streams {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A running fake server; dropping it stops the server.
pub struct FakeServer {
    pub addr: SocketAddr,
    fake: FakeBackend,
    tls: Option<FakeTls>,
    running: Option<Running>,
}

struct Running {
    _stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    connections: Connections,
}

impl FakeServer {
    async fn start(
        fake: FakeBackend,
        addr: SocketAddr,
        tls: Option<FakeTls>,
    ) -> std::io::Result<FakeServer> {
        let mut server = FakeServer {
            addr,
            fake,
            tls,
            running: None,
        };
        server.listen().await?;
        Ok(server)
    }

    async fn listen(&mut self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let connections = Connections::default();
        let task = tokio::spawn(self.fake.clone().serve_on(
            listener,
            async move {
                let _ = rx.await;
            },
            self.tls.clone(),
            connections.clone(),
        ));
        self.running = Some(Running {
            _stop: tx,
            task,
            connections,
        });
        Ok(())
    }

    /// `http://127.0.0.1:<port>` (`https://localhost:<port>` when serving TLS).
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// The fake's state (calls, fault switch), shared with the running server.
    pub fn backend(&self) -> &FakeBackend {
        &self.fake
    }

    /// Stops at once, as SIGKILL would: the port closes and every connection is cut, calls
    /// in flight get no answer.
    pub fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            running.task.abort();
            running.connections.cut();
        }
    }

    /// Serves again on the same address after [`FakeServer::kill`].
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.listen().await
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tokio_stream_from(
    listener: TcpListener,
    connections: Connections,
) -> impl futures::Stream<Item = Result<tokio::net::TcpStream, std::io::Error>> + Send + 'static {
    futures::stream::unfold(listener, move |listener| {
        let connections = connections.clone();
        async move {
            // Nagle off, as TF Serving does: otherwise a batch's larger reply waits out the
            // client's delayed ACK (~40 ms) and the fake, not the gateway, sets the pace.
            let accepted = listener.accept().await.and_then(|(stream, _)| {
                let _ = stream.set_nodelay(true);
                connections.track(stream)
            });
            Some((accepted, listener))
        }
    })
}

#[tonic::async_trait]
impl prediction_service_server::PredictionService for FakeBackend {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        match self.fault() {
            Some(Fault::Status(code, message) | Fault::Predict(code, message)) => {
                return Err(Status::new(code, message));
            }
            Some(Fault::Reply(reply)) => return Ok(Response::new(reply)),
            Some(Fault::Loading) => {
                return Err(Status::not_found(
                    "Servable not found for request: the model is still loading",
                ));
            }
            None => {}
        }
        let request = request.into_inner();
        let spec = request
            .model_spec
            .ok_or_else(|| Status::invalid_argument("Missing ModelSpec"))?;
        let inputs: NamedTensors = request
            .inputs
            .into_iter()
            .map(|(n, p)| {
                convert::from_proto(p)
                    .map(|t| (n, t))
                    .map_err(Status::invalid_argument)
            })
            .collect::<Result<_, _>>()?;
        let (name, version, signature, outputs) = self.run(spec, inputs).await?;
        let outputs = outputs
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    if self.typed_outputs {
                        typed_proto(t)
                    } else {
                        convert::to_proto(t)
                    },
                )
            })
            .collect();
        let model_spec = Some(ModelSpec {
            name,
            version_choice: Some(SpecVersion::Version(version)),
            signature_name: signature,
        });
        Ok(Response::new(PredictResponse {
            model_spec,
            outputs,
        }))
    }

    async fn get_model_metadata(
        &self,
        request: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        if let Some(Fault::Status(code, message)) = self.fault() {
            return Err(Status::new(code, message));
        }
        let request = request.into_inner();
        let (model, spec) = self.model(&request.model_spec)?;
        let version = model.resolve(&spec)?;
        let info = |specs: &[(String, DType, Vec<i64>)]| {
            specs
                .iter()
                .map(|(name, dtype, shape)| {
                    let info = TensorInfo {
                        encoding: Some(crate::proto::tensorflow::tensor_info::Encoding::Name(
                            format!("{name}:0"),
                        )),
                        dtype: convert::dtype_to_proto(*dtype) as i32,
                        tensor_shape: Some(shape_proto(shape)),
                    };
                    (name.clone(), info)
                })
                .collect()
        };
        let def = SignatureDef {
            inputs: info(&model.inputs),
            outputs: info(&model.outputs),
            method_name: "tensorflow/serving/predict".into(),
        };
        let map = SignatureDefMap {
            signature_def: [("serving_default".to_string(), def)].into_iter().collect(),
        };
        let any = prost_types::Any {
            type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
            value: map.encode_to_vec(),
        };
        Ok(Response::new(GetModelMetadataResponse {
            model_spec: Some(ModelSpec {
                name: model.name.clone(),
                version_choice: Some(SpecVersion::Version(version)),
                signature_name: String::new(),
            }),
            metadata: [("signature_def".to_string(), any)].into_iter().collect(),
        }))
    }
}

#[tonic::async_trait]
impl model_service_server::ModelService for FakeBackend {
    async fn get_model_status(
        &self,
        request: Request<GetModelStatusRequest>,
    ) -> Result<Response<GetModelStatusResponse>, Status> {
        let fault = self.fault();
        if let Some(Fault::Status(code, message)) = fault {
            return Err(Status::new(code, message));
        }
        let request = request.into_inner();
        let (model, spec) = self.model(&request.model_spec)?;
        let versions = match spec.version_choice {
            None => model.versions.clone(),
            Some(_) => vec![model.resolve(&spec)?],
        };
        let model_version_status = versions
            .into_iter()
            .map(|version| ModelVersionStatus {
                version,
                state: if matches!(fault, Some(Fault::Loading)) {
                    State::Loading as i32
                } else {
                    State::Available as i32
                },
                status: Some(StatusProto {
                    error_code: 0,
                    error_message: String::new(),
                }),
            })
            .collect();
        Ok(Response::new(GetModelStatusResponse {
            model_version_status,
        }))
    }
}

fn shape_proto(shape: &[i64]) -> TensorShapeProto {
    TensorShapeProto {
        dim: shape
            .iter()
            .map(|&size| Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    }
}

/// Encodes a tensor in the typed `*_val` field, as TF Serving answers by default.
fn typed_proto(tensor: &Tensor) -> TensorProto {
    let mut proto = convert::to_proto(tensor);
    let data = std::mem::take(&mut proto.tensor_content);
    match tensor.dtype() {
        DType::F32 => {
            proto.float_val = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
        }
        DType::I64 => {
            proto.int64_val = data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
        }
        DType::I32 => {
            proto.int_val = data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
        }
        // Other dtypes keep tensor_content; the gateway reads both forms.
        _ => proto.tensor_content = data,
    }
    proto
}
