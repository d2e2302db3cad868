//! The results table, the ratios against the baselines of the same run, and the targets.

use std::time::Duration;

use crate::Plan;
use crate::setups::PrePost;

/// Throughput ratio (setup 1 / setup 2) the c = 64 target asks for.
const TARGET_SPEEDUP: f64 = 10.0;
/// How far setup 1's c = 1 p50 may sit above setup 3's plus the plugins' own work.
const TARGET_OVERHEAD: Duration = Duration::from_micros(500);

/// One line of the results table.
pub struct Row {
    pub setup: String,
    pub concurrency: usize,
    pub throughput: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
    pub completed: u64,
    /// CPU time of the server's processes over the window; `None` for the direct client.
    pub server_cpu: Option<Duration>,
    pub backend_cpu: Duration,
    pub client_cpu: Option<Duration>,
    /// Peak RSS over the window, bytes.
    pub peak_rss: Option<u64>,
}

impl Row {
    fn per_request(&self, cpu: Option<Duration>) -> String {
        match cpu {
            Some(cpu) if self.completed > 0 => {
                format!("{:.0}", cpu.as_secs_f64() * 1e6 / self.completed as f64)
            }
            _ => "–".into(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn print(rows: &[Row], work: &PrePost, plan: &Plan) {
    println!(
        "| setup | c | req/s | p50 ms | p99 ms | errors | server CPU µs/req | backend CPU µs/req \
         | client CPU µs/req | server peak RSS MiB |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        let rss = r.peak_rss.map_or("–".to_string(), |b| {
            format!("{:.0}", b as f64 / f64::from(1 << 20))
        });
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {rss} |",
            r.setup,
            r.concurrency,
            r.throughput,
            ms(r.p50),
            ms(r.p99),
            r.errors,
            r.per_request(r.server_cpu),
            r.per_request(Some(r.backend_cpu)),
            r.per_request(r.client_cpu),
        );
    }
    println!();
    print_ratios(rows, plan);
    print_targets(rows, work);
}

fn find<'a>(rows: &'a [Row], setup: &str, c: usize) -> Option<&'a Row> {
    rows.iter().find(|r| r.setup == setup && r.concurrency == c)
}

/// The Tornado variant with the highest throughput at `c`.
fn best_tornado(rows: &[Row], c: usize) -> Option<&Row> {
    rows.iter()
        .filter(|r| r.setup.starts_with("2 tornado") && r.concurrency == c)
        .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
}

fn print_ratios(rows: &[Row], plan: &Plan) {
    println!(
        "| c | infergate / best tornado req/s | p99 infergate / tornado | infergate / direct req/s \
         | infergate rest / direct req/s |"
    );
    println!("|--:|--:|--:|--:|--:|");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "–".into(),
    };
    for &c in &plan.concurrencies {
        let gate = find(rows, "1 infergate", c);
        let tornado = best_tornado(rows, c);
        let direct = find(rows, "3 direct gRPC", c);
        let rest = find(rows, "4 infergate rest", c);
        println!(
            "| {c} | {} | {} | {} | {} |",
            ratio(gate.map(|r| r.throughput), tornado.map(|r| r.throughput)),
            ratio(gate.map(|r| ms(r.p99)), tornado.map(|r| ms(r.p99))),
            ratio(gate.map(|r| r.throughput), direct.map(|r| r.throughput)),
            ratio(rest.map(|r| r.throughput), direct.map(|r| r.throughput)),
        );
    }
    println!();
}

fn print_targets(rows: &[Row], work: &PrePost) {
    println!(
        "digits plugins' own work (in process, p50): pre {:.0} µs + post {:.0} µs",
        work.pre_p50.as_secs_f64() * 1e6,
        work.post_p50.as_secs_f64() * 1e6
    );
    if let (Some(gate), Some(tornado)) = (find(rows, "1 infergate", 64), best_tornado(rows, 64)) {
        let speedup = gate.throughput / tornado.throughput.max(f64::MIN_POSITIVE);
        let met = speedup >= TARGET_SPEEDUP && gate.p99 < tornado.p99;
        println!(
            "target 1: c=64 infergate / {} = {speedup:.1}x req/s (>= {TARGET_SPEEDUP}x), p99 {:.2} vs \
             {:.2} ms (lower): {}",
            tornado.setup,
            ms(gate.p99),
            ms(tornado.p99),
            verdict(met)
        );
    }
    if let (Some(gate), Some(direct)) =
        (find(rows, "1 infergate", 1), find(rows, "3 direct gRPC", 1))
    {
        let allowed = direct.p50 + work.pre_p50 + work.post_p50 + TARGET_OVERHEAD;
        let over =
            gate.p50.as_secs_f64() - (direct.p50 + work.pre_p50 + work.post_p50).as_secs_f64();
        println!(
            "target 2: c=1 p50 infergate {:.3} ms vs direct {:.3} ms + pre/post {:.3} ms: \
             {:+.3} ms over (<= +0.5 ms): {}",
            ms(gate.p50),
            ms(direct.p50),
            ms(work.pre_p50 + work.post_p50),
            over * 1e3,
            verdict(gate.p50 <= allowed)
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}
