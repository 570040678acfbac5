//! Shared by the benchmark examples.

/// This thread's CPU time (user + system), seconds, from `CLOCK_THREAD_CPUTIME_ID`
/// (nanoseconds: /proc's 1/100 s ticks, read before, made a file's 15 ms of analysis a
/// figure of 10 or 20 ms, so two builds 5 % apart could not be told apart in one run).
pub fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel
    // knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
