//! What the harness=false benches share: timing a closure and printing one JSON line.

use std::time::Instant;

/// Runs `f` once to warm up, then `runs` times, and prints the median, min and max nanoseconds
/// per operation (`ops` operations per call of `f`) as a JSON line.
pub fn report(name: &str, runs: usize, ops: usize, mut f: impl FnMut()) {
    f();
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_nanos() as f64 / ops as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    println!(
        "{{\"bench\":\"{name}\",\"ns_per_op\":{median:.1},\"min\":{:.1},\"max\":{:.1},\"runs\":{runs}}}",
        samples[0],
        samples[samples.len() - 1]
    );
}
