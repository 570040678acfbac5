//! Why contacts live in hash buckets: sled's cost per contact written one key each (as the
//! store did before) against a few thousand bucket values holding the same bytes.
//!
//! `cargo run --release -p crieur-store --example layout_probe [CONTACTS]`
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let value = vec![7u8; 200];
    let dir = tempfile::tempdir()?;
    for mode in ["key per contact", "4096 buckets", "65536 buckets"] {
        let db = sled::open(dir.path().join(mode))?;
        let tree = db.open_tree("contacts")?;
        let start = Instant::now();
        if mode == "key per contact" {
            for chunk in 0..n.div_ceil(10_000) {
                let mut batch = sled::Batch::default();
                for i in chunk * 10_000..((chunk + 1) * 10_000).min(n) {
                    batch.insert(format!("campaign\0c{i}").as_bytes(), value.clone());
                }
                tree.apply_batch(batch)?;
                db.flush()?;
            }
        } else {
            let buckets: usize = if mode.starts_with("4096") {
                4096
            } else {
                65536
            };
            let mut values = vec![Vec::new(); buckets];
            for i in 0..n {
                let b = i.wrapping_mul(2_654_435_761) % buckets;
                values[b].extend_from_slice(format!("c{i}").as_bytes());
                values[b].extend_from_slice(&value);
            }
            let mut batch = sled::Batch::default();
            for (i, v) in values.into_iter().enumerate() {
                let mut key = b"campaign\0".to_vec();
                key.extend_from_slice(&(i as u32).to_be_bytes());
                batch.insert(key, v);
            }
            tree.apply_batch(batch)?;
            db.flush()?;
        }
        let t = start.elapsed().as_secs_f64();
        println!(
            "{mode}: {n} contacts of 200 bytes in {t:.2} s, {:.2} µs per contact",
            t * 1e6 / n as f64
        );
    }
    Ok(())
}
