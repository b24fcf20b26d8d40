//! What every benchmark shares: percentiles of latency samples, and the machine-readable report.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

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
    println!("{figure:<52} {measured:>12} {target:>14}");
}

/// Mutating requests by `user` in the apiserver's audit log (`.local/logs/audit.log`) received within [from, to]
/// (a write received before the window can complete inside it: it is not an idle write).
pub fn audited_writes(user: &str, from: jiff::Timestamp, to: jiff::Timestamp) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/logs/audit.log");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["user"]["username"] == user && e["stage"] == "ResponseComplete")
        .filter(|e| {
            e["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| t >= from && t <= to)
        })
        .map(|e| format!("{} {}", e["verb"].as_str().unwrap_or(""), e["requestURI"].as_str().unwrap_or("")))
        .collect()
}
