//! Percentiles of samples and how they are printed.

/// Median, 95th and 99th percentiles and maximum of per-operation times, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub n: usize,
}

impl Stats {
    pub fn of(mut ns: Vec<f64>) -> Stats {
        assert!(!ns.is_empty(), "no samples");
        ns.sort_by(f64::total_cmp);
        let n = ns.len();
        let at = |q: f64| ns[((n - 1) as f64 * q).round() as usize];
        Stats {
            median: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: ns[n - 1],
            n,
        }
    }
}

/// A duration in nanoseconds, in the unit that reads best.
pub fn human(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}

/// One line of figures, with its ratio to the baseline of its block (`None`: it is the baseline).
pub fn row(name: &str, s: Stats, ratio: Option<f64>) {
    let ratio = ratio.map_or_else(|| "baseline".to_owned(), |r| format!("{r:.2}x"));
    println!(
        "  {name:<44} median {:>9}  p95 {:>9}  p99 {:>9}  n={:<5} {ratio}",
        human(s.median),
        human(s.p95),
        human(s.p99),
        s.n
    );
}
