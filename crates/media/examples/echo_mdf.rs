//! Cost and depth of the echo canceller's filter structure against a frequency-domain one —
//! the measurement behind the issue-echo4 paragraph of BENCHMARKS.md, not used by the
//! detector.
//!
//! `cargo run --release -p crieur-media --example echo_mdf`
//!
//! On the same 30 s of speech-like audio (noise in 100 ms syllables, some silent, through a
//! one-pole low-pass: a voice's tilt) and its echo through the unit tests' 7-tap hybrid at
//! 15 dB of return loss with a floor 80 dB down, two adaptive filters of 64 taps, each a
//! foreground (subtracted, copied from the background every 10 ms) and a background:
//!
//! * **NLMS**, as `amd/echo.rs` runs it (without its whitening): per sample, the
//!   foreground's and the background's dot products and the background's update with
//!   leakage, the step normalised by our audio's energy over the taps from a running sum.
//! * **MDF** (the multidelay block frequency-domain filter of Speex's and WebRTC's echo
//!   cancellers, here one partition): blocks of 64 samples, 128-point FFTs (overlap-save), the
//!   step normalised per frequency bin by our audio's smoothed power there, the gradient
//!   constrained to 64 taps. Our audio's transform is computed per block here; the detector
//!   could keep it once per message, as it keeps the whitened message.
//!
//! Printed per round: each filter's time per sample and its cancellation (ERLE) over the
//! last 5 s. Neither has the detector's double-talk control or copy-over tests: this measures
//! the structures' cost and depth, not the detector.

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::time::Instant;

use rustfft::num_complex::Complex32 as C;
use rustfft::FftPlanner;

/// Filter length (as `amd/echo.rs`).
const TAPS: usize = 64;
/// MDF block length (its FFTs are twice it).
const N: usize = 64;
/// Our audio's samples (30 s).
const LEN: usize = 30 * 8000;

fn noise(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Our audio and the far end (its echo), as [`main`]'s doc says.
fn signals() -> (Vec<f32>, Vec<f32>) {
    let mut seed = 7u64;
    let (mut lp, mut level) = (0f32, 1.0);
    let x: Vec<f32> = (0..LEN)
        .map(|n| {
            if n % 800 == 0 {
                let r = noise(&mut seed);
                level = if r < -0.6 { 0.0 } else { 0.4 + 0.6 * r.abs() };
            }
            lp = 0.9 * lp + 0.1 * 15_000.0 * level * noise(&mut seed);
            // (No subnormal numbers in a silent syllable's decay: our audio is G.711.)
            if lp.abs() < 1e-3 {
                lp = 0.0;
            }
            lp
        })
        .collect();
    let ir = [0.7f32, -0.45, 0.3, -0.2, 0.12, -0.06, 0.03];
    let norm = ir.iter().map(|h| h * h).sum::<f32>().sqrt();
    let gain = 10f32.powf(-15.0 / 20.0) / norm;
    // The echo 30 samples late: inside the filters' span.
    let delay = 30;
    let d = (0..LEN)
        .map(|n| {
            let echo: f32 = ir
                .iter()
                .enumerate()
                .filter_map(|(k, h)| Some(h * x.get(n.checked_sub(delay + k)?)?))
                .sum();
            gain * echo + 2.0 * noise(&mut seed)
        })
        .collect();
    (x, d)
}

/// The cancellation over the last 5 s, dB.
fn erle(d: &[f32], e: &[f32]) -> f32 {
    let t = d.len() - 5 * 8000;
    let energy = |v: &[f32]| v.iter().map(|s| s * s).sum::<f32>();
    10.0 * (energy(&d[t..]) / energy(&e[t..])).log10()
}

/// `amd/echo.rs`'s dot product (8 partial sums).
#[inline(always)]
fn dot(w: &[f32], x: &[f32]) -> f32 {
    let mut a = [0f32; 8];
    for (w, x) in w.chunks_exact(8).zip(x.chunks_exact(8)) {
        for (i, s) in a.iter_mut().enumerate() {
            *s += w[i] * x[i];
        }
    }
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// The time-domain filter: the residual of its foreground.
fn nlms(x: &[f32], d: &[f32]) -> Vec<f32> {
    let (mut w, mut fore) = ([0f32; TAPS], [0f32; TAPS]);
    let mut xp = vec![0f32; TAPS - 1];
    xp.extend_from_slice(x);
    let energy: Vec<f64> = std::iter::once(0.0)
        .chain(xp.iter().scan(0f64, |t, &v| {
            *t += f64::from(v * v);
            Some(*t)
        }))
        .collect();
    let mut out = vec![0f32; d.len()];
    for (n, (o, &far)) in out.iter_mut().zip(d).enumerate() {
        let xs = &xp[n..n + TAPS];
        *o = far - dot(&fore, xs);
        let e = far - dot(&w, xs);
        let power = 1e4 * TAPS as f32 + (energy[n + TAPS] - energy[n]) as f32;
        let g = 0.3 * e / power;
        for (wi, v) in w.iter_mut().zip(xs) {
            *wi = *wi * (1.0 - 1e-5) + g * v;
        }
        if n % 80 == 79 {
            fore = w;
        }
    }
    out
}

/// The frequency-domain filter: the residual of its foreground.
fn mdf(x: &[f32], d: &[f32]) -> Vec<f32> {
    let mut planner = FftPlanner::<f32>::new();
    let fwd = planner.plan_fft_forward(2 * N);
    let inv = planner.plan_fft_inverse(2 * N);
    let zero = C::new(0.0, 0.0);
    let mut scratch = vec![
        zero;
        fwd.get_inplace_scratch_len()
            .max(inv.get_inplace_scratch_len())
    ];
    let (mut w, mut fore) = (vec![zero; 2 * N], vec![zero; 2 * N]);
    let (mut xf, mut buf, mut ef) = (vec![zero; 2 * N], vec![zero; 2 * N], vec![zero; 2 * N]);
    let mut power = vec![1e6f32; 2 * N];
    let scale = 1.0 / (2 * N) as f32;
    let mut xp = vec![0f32; N];
    xp.extend_from_slice(x);
    let mut out = vec![0f32; d.len()];
    for (b, (o, far)) in out.chunks_exact_mut(N).zip(d.chunks_exact(N)).enumerate() {
        // Our last 2N samples.
        for (c, &v) in xf.iter_mut().zip(&xp[b * N..b * N + 2 * N]) {
            *c = C::new(v, 0.0);
        }
        fwd.process_with_scratch(&mut xf, &mut scratch);
        // The foreground's output (the last N of the circular convolution) and residual.
        for ((c, f), x) in buf.iter_mut().zip(&fore).zip(&xf) {
            *c = f * x;
        }
        inv.process_with_scratch(&mut buf, &mut scratch);
        for ((o, &v), y) in o.iter_mut().zip(far).zip(&buf[N..]) {
            *o = v - y.re * scale;
        }
        // The background's error, its transform (zeros first), and the update.
        for ((c, f), x) in buf.iter_mut().zip(&w).zip(&xf) {
            *c = f * x;
        }
        inv.process_with_scratch(&mut buf, &mut scratch);
        ef[..N].fill(zero);
        for ((e, &v), y) in ef[N..].iter_mut().zip(far).zip(&buf[N..]) {
            *e = C::new(v - y.re * scale, 0.0);
        }
        fwd.process_with_scratch(&mut ef, &mut scratch);
        for (((c, p), x), e) in buf.iter_mut().zip(power.iter_mut()).zip(&xf).zip(&ef) {
            *p = 0.9 * *p + 0.1 * x.norm_sqr();
            *c = x.conj() * e * (0.5 / (*p + 1e4 * N as f32));
        }
        // The gradient constrained to N taps.
        inv.process_with_scratch(&mut buf, &mut scratch);
        buf[N..].fill(zero);
        for c in buf[..N].iter_mut() {
            *c *= scale;
        }
        fwd.process_with_scratch(&mut buf, &mut scratch);
        for (wk, g) in w.iter_mut().zip(&buf) {
            *wk = *wk * (1.0 - 1e-5 * N as f32) + g;
        }
        // Every 10 ms (N is 8 ms: every other block, 16 ms).
        if b % 2 == 1 {
            fore.copy_from_slice(&w);
        }
    }
    out
}

fn main() {
    let (x, d) = signals();
    for round in 1..=3 {
        let t = Instant::now();
        let e_nlms = nlms(&x, &d);
        let t_nlms = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let e_mdf = mdf(&x, &d);
        let t_mdf = t.elapsed().as_secs_f64();
        let per = 1e9 / d.len() as f64;
        println!(
            "round {round}: NLMS {:.1} ns/sample, ERLE {:.1} dB | MDF {:.1} ns/sample, ERLE {:.1} dB",
            t_nlms * per,
            erle(&d, &e_nlms),
            t_mdf * per,
            erle(&d, &e_mdf)
        );
    }
}
