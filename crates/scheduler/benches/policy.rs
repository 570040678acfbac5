//! Policy throughput: `decide()` per call and `windows` for 1 M contacts over 7 days.
//! Run: `cargo bench -p crieur-scheduler --bench policy` (figures go to BENCHMARKS.md).

use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use crieur_scheduler::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .unwrap_or_default()
}

fn policy(ruleset: &str, cron: Option<&str>) -> Policy {
    let rs = RuleSet::by_name(ruleset).unwrap_or_else(|e| panic!("{e}"));
    let schedule = cron.map(|c| {
        let e: CronExpr = c.parse().unwrap_or_else(|e| panic!("{e}"));
        CampaignSchedule::new(vec![e], Tz::Europe__Paris).unwrap_or_else(|e| panic!("{e}"))
    });
    Policy::new(
        rs,
        schedule,
        Duration::from_secs(25),
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A one-zone contact (zone given), as the 2 M/s target specifies.
fn contact(i: usize, windows: &str, zone: Tz) -> Contact {
    let w: Windows = windows.parse().unwrap_or_else(|e| panic!("{e}"));
    let phone: E164 = format!("+336{:08}", 10_000_000 + i % 89_999_999)
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    Contact::new(
        ContactId::new(format!("c{i}")).unwrap_or_else(|e| panic!("{e}")),
        phone,
        Some(zone),
        vec![ConsentRecord {
            windows: w,
            granted_at: at(2027, 1, 1, 0, 0),
            expires_at: None,
            revoked_at: None,
            source: "bench".into(),
            proof: "bench".into(),
        }],
    )
}

fn decide_bench(c: &mut Criterion) {
    let fr = policy("FR", None);
    let fr_cron = policy("FR", Some("* 9-19 * * mon-fri"));
    let paris = contact(1, "mon-fri 18:00-20:00", Tz::Europe__Paris);
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    // Monday 18:30 Paris: Dial.
    let dial_at = at(2027, 3, 1, 17, 30);
    g.bench_function("dial/FR/one-zone", |b| {
        b.iter(|| black_box(decide(black_box(&paris), &fr, dial_at)))
    });
    g.bench_function("dial/FR+cron/one-zone", |b| {
        b.iter(|| black_box(decide(black_box(&paris), &fr_cron, dial_at)))
    });
    let mut ev = Evaluator::new(&fr);
    g.bench_function("dial/FR/one-zone/reused-evaluator", |b| {
        b.iter(|| black_box(ev.decide(black_box(&paris), dial_at)))
    });
    g.bench_function("dial/FR/one-zone/fresh-evaluator", |b| {
        b.iter(|| black_box(Evaluator::new(&fr).decide(black_box(&paris), dial_at)))
    });
    // Monday 10:30 Paris: Skip, with the next-eligible search (same day 18:00).
    let skip_at = at(2027, 3, 1, 9, 30);
    g.bench_function("skip+next/FR/one-zone", |b| {
        b.iter(|| black_box(decide(black_box(&paris), &fr, skip_at)))
    });
    // Friday 20:30: Skip, next eligible is Monday.
    let skip_weekend = at(2027, 3, 5, 19, 30);
    g.bench_function("skip+next-monday/FR/one-zone", |b| {
        b.iter(|| black_box(decide(black_box(&paris), &fr, skip_weekend)))
    });
    g.finish();
}

fn windows_bench(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let p = policy("FR", Some("* 9-19 * * mon-fri"));
    let zones = [
        Tz::Europe__Paris,
        Tz::Indian__Reunion,
        Tz::America__Guadeloupe,
        Tz::Pacific__Noumea,
    ];
    let shapes = [
        "mon-fri 18:00-20:00",
        "mon-fri 10:00-12:00; sat 10:00-12:00",
        "daily 09:00-21:00",
        "wed 14:00-17:00",
    ];
    let contacts: Vec<Contact> = (0..N)
        .map(|i| contact(i, shapes[i % 4], zones[i / 4 % 4]))
        .collect();
    // The week of the 2027 spring DST change in Europe.
    let (from, until) = (at(2027, 3, 24, 0, 0), at(2027, 3, 31, 0, 0));
    let mut g = c.benchmark_group("windows");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("1M-contacts/7-days", |b| {
        b.iter_batched(
            || Evaluator::batch(&p),
            |mut ev| {
                let mut n = 0usize;
                for c in &contacts {
                    n += ev.windows(c, from, until).len();
                }
                black_box(n)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, decide_bench, windows_bench);
criterion_main!(benches);
