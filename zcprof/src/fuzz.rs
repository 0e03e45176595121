//! The fuzz runs' driver (tests only): proptest cases against one harness, bounded in count
//! or in time, and a report of what ran.
//!
//! `cargo xtask test` runs each harness briefly with a fixed seed, so that a CI failure
//! reproduces; `cargo xtask fuzz` sets the environment below for longer runs with random
//! seeds. The variables:
//! - `ZCPROF_FUZZ_SECONDS`: run batches of cases until this many seconds have passed;
//! - `ZCPROF_FUZZ_CASES`: cases per run (per batch with a time budget);
//! - `ZCPROF_FUZZ_SEED`: the seed (of the first batch; batch i uses seed + i). Without it
//!   the seed is fixed, or random with a time budget.

use std::{
    fmt::Debug,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use proptest::{
    strategy::Strategy,
    test_runner::{Config, RngSeed, TestCaseResult, TestRunner},
};

/// The seed of the short runs.
const FIXED_SEED: u64 = 0x7a63_7072_6f66_0001;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a whole number"),
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy)]
pub struct Ran {
    /// Calls of the harness, shrinking included.
    pub executions: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// Runs `test` on cases from `strategy`: `default_cases` of them with the fixed seed, or as
/// the environment says. Panics with the minimal failing input and how to replay it; prints
/// the executions, time and seed otherwise (`--nocapture` shows it).
pub fn run<S>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) -> Ran
where
    S: Strategy,
    S::Value: Debug,
{
    let budget = env_u64("ZCPROF_FUZZ_SECONDS").map(Duration::from_secs);
    let cases =
        env_u64("ZCPROF_FUZZ_CASES").map_or(default_cases, |n| n.clamp(1, u32::MAX.into()) as u32);
    let seed = env_u64("ZCPROF_FUZZ_SEED").unwrap_or(match budget {
        // Nanoseconds are random enough to pick a seed; it is printed either way.
        Some(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(FIXED_SEED, |d| d.as_nanos() as u64),
        None => FIXED_SEED,
    });
    let executions = AtomicU64::new(0);
    let counted = |v: S::Value| {
        executions.fetch_add(1, Ordering::Relaxed);
        test(v)
    };
    let started = Instant::now();
    let mut batch = 0u64;
    loop {
        let batch_seed = seed.wrapping_add(batch);
        let config = Config {
            cases,
            rng_seed: RngSeed::Fixed(batch_seed),
            // Failures are turned into regression tests by hand, next to the harness.
            failure_persistence: None,
            // A failing case may be a slow one: shrinking is bounded too.
            max_shrink_iters: 512,
            max_shrink_time: 120_000,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        if let Err(e) = runner.run(&strategy, counted) {
            panic!(
                "fuzz {name}: failed after {} executions in {:.1} s; replay with \
                 ZCPROF_FUZZ_SEED={batch_seed} ZCPROF_FUZZ_CASES={cases}\n{e}",
                executions.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            );
        }
        batch += 1;
        match budget {
            Some(b) if started.elapsed() < b => {}
            _ => break,
        }
    }
    let ran = Ran {
        executions: executions.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    };
    println!(
        "fuzz {name}: {} executions ({batch} batches of {cases} cases) in {:.1} s, seed {seed}, \
         no failure",
        ran.executions,
        ran.elapsed.as_secs_f64()
    );
    ran
}
