//! What the benchmarks share: their rounds knob, the machine's load, and the statistics they
//! print (medians and ratios of durations measured in the same process).

use std::time::Duration;

/// `LOOP_BENCH_ROUNDS`, or `default`.
pub fn rounds(default: usize) -> Result<usize, std::num::ParseIntError> {
    std::env::var("LOOP_BENCH_ROUNDS")
        .ok()
        .map(|v| v.parse())
        .transpose()
        .map(|rounds| rounds.unwrap_or(default))
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` says them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The median (the mean of the middle two for an even count); zero for none.
pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// `a / b`.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// `1.234 s`.
pub fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}
