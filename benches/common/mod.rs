//! What every benchmark shares: percentiles of latency samples, the machine-readable report, the apiserver's audit
//! log, and helper processes (this benchmark's binary started again in another role, placed as regcred is).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// The logging every process of a benchmark runs with, regcred's and its helpers' alike: the chart's defaults
/// (`logging.level: info`, `logging.format: json`), as regcred reads them.
pub const LOG_ENV: [(&str, &str); 2] = [("REGCRED_LOG", "info"), ("REGCRED_LOG_FORMAT", "json")];

/// The `p` percentile (0..=1) of sorted samples, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Writes the figures to `.local/bench/<name>.json` and says so.
pub fn write_report(name: &str, report: &serde_json::Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(report).unwrap()).unwrap();
    println!("figures written to .local/bench/{name}.json");
}

/// One row of a figures table: the figure, what was measured (already formatted, with its unit), and the target.
pub fn row(figure: &str, measured: &str, target: &str) {
    println!("{figure:<58} {measured:>14} {target:>14}");
}

/// The rows the admission benchmarks share: where an admission's time goes, regcred's beside the floor webhook's,
/// from the apiserver's own per-webhook metric, regcred's handler metrics and the processes' CPU.
pub fn webhook_cost_rows(report: &serde_json::Value) {
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    let ms = |k: &str| format!("{:.3}ms", f(k));
    row("apiserver's time per webhook call (mean): floor", &ms("apiserver_webhook_mean_ms_floor"), "");
    row("apiserver's time per webhook call (mean): regcred", &ms("apiserver_webhook_mean_ms_regcred"), "");
    row("  of which regcred's handler (mean, its own metrics)", &ms("regcred_handler_mean_ms"), "");
    row("  of which regcred's handler (p50, its own histogram)", &ms("regcred_handler_p50_ms"), "");
    row("CPU per admission (idle CPU taken out): floor", &ms("cpu_per_admission_ms_floor"), "");
    row("CPU per admission (idle CPU taken out): regcred", &ms("cpu_per_admission_ms_regcred"), "");
    let calls = |k: &str| format!("{:.2}", f(k));
    row("webhook calls per Pod (apiserver): floor", &calls("apiserver_webhook_calls_per_pod_floor"), "");
    row("webhook calls per Pod (apiserver): regcred", &calls("apiserver_webhook_calls_per_pod_regcred"), "1");
}

/// Requests by `user` in the apiserver's audit log (`.local/logs/audit*.log`, rotated files included) received
/// within [from, to], as "VERB URI" (a request received before the window can complete inside it: it is not counted).
/// The local cluster's audit policy logs ServiceAccounts' writes and the kubelet's requests for a pull's
/// credentials (tools/cluster-up.sh).
pub fn audited_requests(user: &str, from: jiff::Timestamp, to: jiff::Timestamp) -> Vec<String> {
    let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/logs");
    let files = std::fs::read_dir(logs).into_iter().flatten().filter_map(Result::ok).map(|e| e.path());
    let quoted = format!("\"{user}\"");
    let mut writes = Vec::new();
    for path in files.filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("audit"))) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        writes.extend(
            text.lines()
                // Most lines are other users': only a user's own are decoded.
                .filter(|l| l.contains(&quoted))
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|e| e["user"]["username"] == user && e["stage"] == "ResponseComplete")
                .filter(|e| {
                    e["requestReceivedTimestamp"]
                        .as_str()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .is_some_and(|t| t >= from && t <= to)
                })
                .map(|e| format!("{} {}", e["verb"].as_str().unwrap_or(""), e["requestURI"].as_str().unwrap_or(""))),
        );
    }
    writes
}

/// A helper process of a benchmark: this binary started again with a role's arguments (the role's `serve_if_asked`
/// or `run_if_asked` takes over before `main` does anything else), with regcred's logging environment, its
/// standard error in a log file. Killed when dropped.
pub struct Helper {
    pub child: tokio::process::Child,
    pub log: PathBuf,
}

impl Helper {
    /// Starts the helper `name` with `args` (the first of which selects its role).
    pub fn spawn(name: &str, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join("regcred-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{name}-{}-{}.log", std::process::id(), jiff::Timestamp::now().as_millisecond()));
        let child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(args)
            .envs(LOG_ENV)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// What the helper logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak and current resident set size in KiB (VmHWM, VmRSS), from /proc.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        memory_kib(self.child.id()?)
    }
}

/// Peak and current resident set size of process `pid` in KiB (VmHWM, VmRSS), from /proc.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name))?.trim().trim_end_matches(" kB").trim().parse().ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// CPU time process `pid` has used so far, in seconds: the sum of its threads' time on a CPU from
/// /proc/PID/task/*/schedstat (nanoseconds; /proc/PID/stat counts in ticks of 10 ms, too coarse for a few ms).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        nanos += stat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(nanos as f64 / 1e9)
}

/// The window over which a process's idle CPU is measured, repeated until it is idle.
const IDLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);
/// A process using less of a core than this is idle (regcred's lease renewals and a floor's nothing use less than
/// 0.1%).
const IDLE_AT_MOST: f64 = 0.002;

/// Process `pid`'s idle CPU rate (seconds per second), once it has settled: windows of [`IDLE_WINDOW`] until two
/// in a row use less than [`IDLE_AT_MOST`] of a core, at most three minutes. After a sync, a rotation or a warm-up
/// regcred stays busy a while (its watches deliver the events of every write), and 20 s after a burst it gives
/// memory back (`malloc_trim`); an idle rate measured then would be taken off the measured work.
pub async fn idle_rate(pid: u32) -> f64 {
    let mut last = f64::INFINITY;
    for _ in 0..36 {
        let (from, start) = (cpu_seconds(pid).unwrap_or(0.0), std::time::Instant::now());
        tokio::time::sleep(IDLE_WINDOW).await;
        let rate = (cpu_seconds(pid).unwrap_or(0.0) - from) / start.elapsed().as_secs_f64();
        if rate < IDLE_AT_MOST && last < IDLE_AT_MOST {
            return (rate + last) / 2.0;
        }
        last = rate;
    }
    last
}

/// The cumulative buckets `(upper bound, count)` of Prometheus histogram `name` in the exposition `text`, sorted by
/// bound (summed over label sets).
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: std::collections::BTreeMap<u64, (f64, f64)> = std::collections::BTreeMap::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(&prefix) else { continue };
        let Some(le) = rest.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
        let Some(count) = l.rsplit(' ').next().and_then(|c| c.parse::<f64>().ok()) else { continue };
        // Bounds are positive: their bits sort as the numbers do.
        buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += count;
    }
    buckets.into_values().collect()
}

/// Buckets `after` less `before` (the observations between two readings of the same histogram).
pub fn buckets_since(after: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after.iter().map(|&(le, count)| (le, count - before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1))).collect()
}

/// The `q` quantile (0..=1) of cumulative histogram buckets `(upper bound, count)` sorted by bound, interpolated
/// linearly within its bucket as PromQL's histogram_quantile does; NaN when empty.
pub fn quantile_of_buckets(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else { return f64::NAN };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower;
            }
            return lower + (le - lower) * (rank - below) / (count - below).max(f64::MIN_POSITIVE);
        }
        (lower, below) = (le, count);
    }
    lower
}

/// The async runtime of a baseline's process (the floor webhook, the raw and hand-written clients): as many worker
/// threads as regcred runs with by default, so each compares with regcred on equal terms.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(regcred::config::DEFAULT_WORKER_THREADS))
        .enable_all()
        .build()
        .unwrap()
}

/// Installs regcred's own logger with the benchmark's logging ([`LOG_ENV`]), parsed by regcred's own options:
/// in helper processes, and wherever regcred's code runs in the benchmark's process.
pub fn child_logging() {
    #[derive(clap::Parser)]
    struct Logging {
        #[command(flatten)]
        log: regcred::config::LogArgs,
    }
    let [(_, level), (_, format)] = LOG_ENV;
    let logging = <Logging as clap::Parser>::parse_from(["helper", "--log-level", level, "--log-format", format]);
    regcred::telemetry::init(&logging.log).unwrap();
}
