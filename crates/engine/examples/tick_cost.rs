//! Tick cost against campaign size: with the same 100 contacts due, a tick over 100 k and over
//! 10 M contacts should cost the same (O(due), not O(all)). Usage: tick_cost [N...]
//! (run with --release; 10 M contacts take several GB of memory and a minute to build).

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use crieur_engine::{CapRules, Pacing, Planner, RetryPolicy};
use crieur_scheduler::*;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100_000, 10_000_000]
    } else {
        sizes
    };
    let policy = Policy::new(
        RuleSet::by_name("FR").unwrap_or_else(|e| panic!("{e}")),
        None,
        Duration::from_secs(25),
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let phone: E164 = "+33612345678"
        .parse()
        .unwrap_or_else(|e: Error| panic!("{e}"));
    let consent = ConsentRecord {
        windows: "mon-fri 18:00-20:00"
            .parse()
            .unwrap_or_else(|e: Error| panic!("{e}")),
        granted_at: Utc
            .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default(),
        expires_at: None,
        revoked_at: None,
        source: "bench".into(),
        proof: "bench".into(),
    };
    // Monday 2027-03-01 17:30 UTC = 18:30 Paris: inside the window.
    let now = Utc
        .with_ymd_and_hms(2027, 3, 1, 17, 30, 0)
        .single()
        .unwrap_or_default();
    let tomorrow = now + chrono::Duration::days(1);
    let mut per_tick = Vec::new();
    for &n in &sizes {
        let t = Instant::now();
        let contacts: Vec<Contact> = (0..n)
            .map(|i| {
                Contact::new(
                    ContactId::new(format!("c{i}")).unwrap_or_else(|e| panic!("{e}")),
                    phone.clone(),
                    Some(Tz::Europe__Paris),
                    vec![consent.clone()],
                )
            })
            .collect();
        let pacing = Pacing {
            calls_per_second: 1e9,
            max_concurrent: u32::MAX,
        };
        let mut planner = Planner::new(
            contacts,
            &policy,
            CapRules::for_ruleset("FR", 3),
            RetryPolicy::default(),
            pacing,
            tomorrow,
        );
        let built = t.elapsed();
        // 100 contacts due now, spread over the campaign; the rest tomorrow.
        let step = n / 100;
        let rounds = 20;
        let mut total = Duration::ZERO;
        for r in 0..rounds {
            for k in 0..100 {
                planner.reschedule(k * step + r, now);
            }
            let t = Instant::now();
            let orders = planner.tick(now);
            total += t.elapsed();
            assert_eq!(orders.len(), 100);
            for o in orders {
                planner.report(o.contact, now, crieur_engine::AttemptOutcome::Answered);
            }
        }
        let tick = total / rounds as u32;
        per_tick.push(tick);
        println!("contacts={n} built_in={built:.1?} tick_with_100_due={tick:.1?} ({:.2} µs per due contact)", tick.as_secs_f64() * 1e6 / 100.0);
    }
    if per_tick.len() >= 2 {
        println!(
            "ratio largest/smallest = {:.2}",
            per_tick[per_tick.len() - 1].as_secs_f64() / per_tick[0].as_secs_f64()
        );
    }
}
