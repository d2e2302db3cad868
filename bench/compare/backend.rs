//! The shared backend: the fake TF Serving (`infergate::fake`) serving a stand-in for the
//! digits model, run as a child process of its own (this same binary with `--serve-fake`) so
//! its CPU time is its own and every setup talks to it over loopback gRPC.

use std::time::Duration;

use infergate::fake::{FakeBackend, FakeModel};
use infergate::tensor::{DType, Tensor};

/// Classes of the digits model's `probabilities` output.
const CLASSES: usize = 10;

/// The digits model's signature: `image: f32 [-1, 28, 28, 1]` → `probabilities: f32 [-1, 10]`.
/// Each row's answer depends on its pixels (the class is the mean pixel's tenth), so a
/// mixed-up batch split would show; the arithmetic is trivial so the cost model dominates.
fn digits() -> FakeModel {
    FakeModel::new("digits")
        .input("image", DType::F32, &[-1, 28, 28, 1])
        .output("probabilities", DType::F32, &[-1, CLASSES as i64])
        .compute(|inputs| {
            let image = &inputs[0].1;
            let pixels = image
                .to_f32()
                .ok_or_else(|| tonic::Status::invalid_argument("image must be f32"))?;
            let rows = image.shape()[0].max(0) as usize;
            let per_row = pixels.len() / rows.max(1);
            let mut out = Vec::with_capacity(rows * CLASSES);
            for row in pixels.chunks(per_row.max(1)).take(rows) {
                let mean = row.iter().sum::<f32>() / row.len().max(1) as f32;
                let class = ((mean * 10.0) as usize).min(CLASSES - 1);
                out.extend((0..CLASSES).map(|c| if c == class { 0.91 } else { 0.01 }));
            }
            let probabilities = Tensor::from_f32(vec![rows as i64, CLASSES as i64], &out)
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
            Ok(vec![("probabilities".into(), probabilities)])
        })
}

/// `--serve-fake`: serves the fake on a loopback port, prints `fake listening on ADDR`, and
/// exits when stdin closes (the parent's exit closes it), so it never outlives the bench.
pub fn serve(call_cost: Duration, row_cost: Duration) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
        // Deep enough for every client of every setup to connect at once.
        let listener = socket.listen(1024)?;
        let addr = listener.local_addr()?;
        let fake = FakeBackend::new([digits()])
            .cost(call_cost, row_cost)
            .precise_cost();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            let _ = closed_tx.send(());
        });
        let stdin_closed = async move {
            let _ = closed_rx.await;
        };
        println!("fake listening on {addr}");
        fake.serve(listener, stdin_closed).await;
        Ok(())
    })
}
