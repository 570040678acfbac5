//! Opt-out write → durable (sled flush, an fsync) latency: p50 / p99 / max over N writes of
//! distinct numbers. Usage: optout_latency [N] [store dir]   (run with --release)

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::time::Instant;

use crieur_store::{SledStore, Store};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("store"));
    let store = SledStore::open(&path, true).unwrap_or_else(|e| panic!("{e}"));
    let numbers: Vec<_> = (0..n)
        .map(|i| {
            format!("+336{:08}", 10_000_000 + i)
                .parse()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let at = chrono::Utc::now();
    let mut us: Vec<u128> = Vec::with_capacity(n);
    for num in &numbers {
        let t = Instant::now();
        store
            .add_opt_out(num, at, "bench")
            .unwrap_or_else(|e| panic!("{e}"));
        us.push(t.elapsed().as_micros());
    }
    us.sort_unstable();
    let p = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
    println!(
        "opt-out writes={n} durable latency p50={}us p99={}us max={}us (store on {})",
        p(0.5),
        p(0.99),
        us[us.len() - 1],
        path.display()
    );
}
