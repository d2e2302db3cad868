//! The results table, the ratios against the baselines of the same run, and issue 16's
//! targets.

use std::time::Duration;

use crate::Plan;
use crate::setups::PrePost;

/// Setup 1's server CPU per request at c = 64, at most.
const TARGET_DIGITS_CPU: Duration = Duration::from_micros(70);
/// Setup 1's p99 over its p50 at c = 64, at most.
const TARGET_TAIL: f64 = 2.5;
/// Setup 4's server CPU per request at c = 64, at most.
const TARGET_REST_CPU: Duration = Duration::from_micros(45);
/// How far setup 1's c = 1 p50 may sit above setup 3's plus the plugins' own work.
const TARGET_OVERHEAD: Duration = Duration::from_micros(300);

/// One line of the results table.
pub struct Row {
    pub setup: String,
    pub concurrency: usize,
    pub throughput: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
    pub error_detail: String,
    pub completed: u64,
    /// CPU time of the server's processes over the window; `None` for the direct client.
    pub server_cpu: Option<Duration>,
    pub backend_cpu: Duration,
    pub client_cpu: Option<Duration>,
    /// Peak RSS over the window, bytes.
    pub peak_rss: Option<u64>,
    /// Share of the machine other processes used during the window.
    pub others_cpu: Option<f64>,
    /// Share of the machine the hypervisor gave to other guests during the window.
    pub steal: Option<f64>,
    /// The load generator: `wrk`, `hyper` or `tonic`.
    pub load: &'static str,
}

impl Row {
    fn per_request(&self, cpu: Option<Duration>) -> Option<Duration> {
        cpu.filter(|_| self.completed > 0)
            .map(|cpu| cpu / u32::try_from(self.completed).unwrap_or(u32::MAX))
    }

    fn server_per_request(&self) -> Option<Duration> {
        self.per_request(self.server_cpu)
    }
}

fn us(d: Option<Duration>) -> String {
    d.map_or("–".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e6))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percent(share: Option<f64>) -> String {
    share.map_or("–".into(), |s| format!("{:.0}", s * 100.0))
}

pub fn print(rows: &[Row], c1_pairs: &[(Row, Row)], work: &PrePost, plan: &Plan) {
    println!(
        "| setup | c | req/s | p50 ms | p99 ms | errors | server CPU µs/req | backend CPU µs/req \
         | load gen CPU µs/req | server peak RSS MiB | others' CPU % | steal % |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        print_row(r);
    }
    println!();
    println!(
        "load generator: wrk for HTTP rows unless `--load hyper`; setup 3 is this process's \
         tonic client. others' CPU: the share of all cores used by processes outside the row \
         (compile jobs, other benches) while it ran."
    );
    println!();
    print_ratios(rows, plan);
    print_targets(rows, c1_pairs, work);
}

fn print_row(r: &Row) {
    let rss = r.peak_rss.map_or("–".to_string(), |b| {
        format!("{:.0}", b as f64 / f64::from(1 << 20))
    });
    println!(
        "| {} ({}) | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {rss} | {} | {} |",
        r.setup,
        r.load,
        r.concurrency,
        r.throughput,
        ms(r.p50),
        ms(r.p99),
        r.errors,
        us(r.server_per_request()),
        us(r.per_request(Some(r.backend_cpu))),
        us(r.per_request(r.client_cpu)),
        percent(r.others_cpu),
        percent(r.steal),
    );
}

fn find<'a>(rows: &'a [Row], setup: &str, c: usize) -> Option<&'a Row> {
    rows.iter().find(|r| r.setup == setup && r.concurrency == c)
}

/// The row of `prefix`'s variants with the highest throughput at `c`.
fn best<'a>(rows: &'a [Row], prefix: &str, c: usize) -> Option<&'a Row> {
    rows.iter()
        .filter(|r| r.setup.starts_with(prefix) && r.concurrency == c)
        .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "–".into(),
    }
}

/// Setup 1 against each peer at every concurrency: how many more requests it serves, how much
/// lower its p99 is, how much less CPU and memory it takes.
fn print_ratios(rows: &[Row], plan: &Plan) {
    println!(
        "| c | peer | req/s, infergate / peer | p99, peer / infergate | server CPU per request, \
         peer / infergate | peak RSS, peer / infergate |"
    );
    println!("|--:|---|--:|--:|--:|--:|");
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    for &c in &plan.concurrencies {
        let Some(gate) = find(rows, "1 infergate", c) else {
            continue;
        };
        let peers = [
            best(rows, "2 tornado", c),
            find(rows, "7 mosec", c),
            find(rows, "8 triton", c),
            find(rows, "3 direct gRPC", c),
            find(rows, "4 infergate rest", c),
        ];
        for peer in peers.into_iter().flatten() {
            println!(
                "| {c} | {} | {} | {} | {} | {} |",
                peer.setup,
                ratio(Some(gate.throughput), Some(peer.throughput)),
                ratio(Some(ms(peer.p99)), Some(ms(gate.p99))),
                ratio(
                    secs(peer.server_per_request()),
                    secs(gate.server_per_request())
                ),
                ratio(
                    peer.peak_rss.map(|b| b as f64),
                    gate.peak_rss.map(|b| b as f64)
                ),
            );
        }
    }
    println!();
}

fn print_targets(rows: &[Row], c1_pairs: &[(Row, Row)], work: &PrePost) {
    println!(
        "digits plugins' own work (in process, p50): pre {:.0} µs + post {:.0} µs",
        work.pre_p50.as_secs_f64() * 1e6,
        work.post_p50.as_secs_f64() * 1e6
    );
    if let Some(gate) = find(rows, "1 infergate", 64) {
        let cpu = gate.server_per_request();
        let tail = ms(gate.p99) / ms(gate.p50).max(f64::MIN_POSITIVE);
        let met = cpu.is_some_and(|cpu| cpu <= TARGET_DIGITS_CPU)
            && tail <= TARGET_TAIL
            && gate.errors == 0;
        println!(
            "target 1: digits c=64 server CPU {} µs/req (<= {} µs), p99/p50 {tail:.2} (<= \
             {TARGET_TAIL}), {} errors (0): {}",
            us(cpu),
            TARGET_DIGITS_CPU.as_micros(),
            gate.errors,
            verdict(met)
        );
    }
    if let Some(rest) = find(rows, "4 infergate rest", 64) {
        let cpu = rest.server_per_request();
        println!(
            "target 2: REST pass-through c=64 server CPU {} µs/req (<= {} µs): {}",
            us(cpu),
            TARGET_REST_CPU.as_micros(),
            verdict(cpu.is_some_and(|cpu| cpu <= TARGET_REST_CPU))
        );
    }
    let single;
    let pairs: Vec<(&Row, &Row)> = if c1_pairs.is_empty() {
        single = find(rows, "1 infergate", 1).zip(find(rows, "3 direct gRPC", 1));
        single.into_iter().collect()
    } else {
        c1_pairs.iter().map(|(g, d)| (g, d)).collect()
    };
    if !pairs.is_empty() {
        let work_ms = ms(work.pre_p50 + work.post_p50);
        let overs: Vec<f64> = pairs
            .iter()
            .map(|(gate, direct)| ms(gate.p50) - ms(direct.p50) - work_ms)
            .collect();
        let within = overs
            .iter()
            .filter(|&&over| over <= ms(TARGET_OVERHEAD))
            .count();
        let list: Vec<String> = pairs
            .iter()
            .zip(&overs)
            .map(|((gate, direct), over)| {
                format!(
                    "{:.3} vs {:.3} ms: {over:+.3}",
                    ms(gate.p50),
                    ms(direct.p50)
                )
            })
            .collect();
        println!(
            "target 3: c=1 p50 infergate vs direct + pre/post {work_ms:.3} ms, per run: {} \
             (<= +{:.1} ms in every run): {within} of {}: {}",
            list.join("; "),
            ms(TARGET_OVERHEAD),
            pairs.len(),
            verdict(within == pairs.len() && pairs.len() >= 5)
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}
