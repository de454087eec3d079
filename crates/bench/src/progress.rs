//! How far a run is: its planned steps (a workload's run on one column, a baseline's run, a W5
//! probe), each weighted by its stage's usual share of a run's time, and the estimate of the time
//! left that this gives. On a terminal the runner keeps a bar below its log lines; otherwise the
//! percentage and the estimate go into the line that starts each step.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The parts of a run, in the order the runner takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The baselines (bare tokio, redis-rs, `PING`, `redis-benchmark`).
    Baselines,
    /// W1, and its one-producer row on a current-thread runtime.
    W1,
    /// W2 and W4, which take turns.
    Drains,
    /// W3.
    W3,
    /// W5.
    W5,
}

impl Stage {
    const ALL: [Self; 5] = [Self::Baselines, Self::W1, Self::Drains, Self::W3, Self::W5];

    fn index(self) -> usize {
        self as usize
    }

    /// The stage's share of a full run's time, roughly: read off the step lines of two full runs
    /// on a 2-vCPU VM (2026-12-01, 405 s and 488 s). Only the estimate of the time left uses it;
    /// W3's share is the steadiest, being paced (its jobs arrive at 200/s).
    fn share(self) -> f64 {
        match self {
            Self::Baselines => 0.25,
            Self::W1 => 0.13,
            Self::Drains => 0.15,
            Self::W3 => 0.27,
            Self::W5 => 0.20,
        }
    }
}

/// How many steps each stage of a run has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    steps: [u32; 5],
}

impl Plan {
    /// The steps of a run that repeats each measurement `runs` times and W5's probes `w5_runs`
    /// times, of the workloads `wants` accepts (`base`, `w1` … `w5`), as the runner takes them.
    #[must_use]
    pub fn new(runs: u32, w5_runs: u32, wants: impl Fn(&str) -> bool) -> Self {
        let on = |w: &str| u32::from(wants(w));
        let drains = on("w2") + on("w4");
        Self {
            steps: [
                // The bare tokio drain, redis-rs's three, the paced PING, redis-benchmark.
                on("base") * 4 * runs,
                // Three rows by three columns, then the current-thread row.
                on("w1") * 10 * runs,
                // The two embedded columns, and Redis with claiming ahead and without.
                drains * 4 * runs,
                // The two embedded columns, and Redis with upload jobs and with chat jobs.
                on("w3") * 4 * runs,
                // One child per embedded store; on Redis, two fills and their probes.
                on("w5") * (2 + 2 * (1 + w5_runs)),
            ],
        }
    }

    /// The number of steps in all.
    #[must_use]
    pub fn total_steps(&self) -> u32 {
        self.steps.iter().sum()
    }

    fn total_weight(&self) -> f64 {
        Stage::ALL.iter().filter(|s| self.steps[s.index()] > 0).map(|s| s.share()).sum()
    }

    /// The weight of one step of `stage`, as a fraction of the run.
    fn step_weight(&self, stage: Stage) -> f64 {
        let n = self.steps[stage.index()];
        let total = self.total_weight();
        if n == 0 || total <= 0.0 { 0.0 } else { stage.share() / total / f64::from(n) }
    }
}

/// The run's progress, as its steps begin. Shared by reference with the runner's tasks, hence
/// the lock (held only to count and print).
#[derive(Debug)]
pub struct Progress {
    plan: Plan,
    /// Whether stderr is a terminal (a bar is drawn) or not (a log: the estimate goes into the
    /// step's line).
    tty: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The fraction of the run that the steps begun before the current one make.
    done: f64,
    /// The weight of the step under way.
    current: f64,
    /// Whether the bar is on the screen (the last line printed).
    drawn: bool,
    /// How many steps have begun.
    begun: u32,
}

impl Progress {
    /// Progress through `plan`, drawn on stderr when it is a terminal.
    #[must_use]
    pub fn new(plan: Plan) -> Self {
        Self::with_terminal(plan, std::io::stderr().is_terminal())
    }

    fn with_terminal(plan: Plan, tty: bool) -> Self {
        Self { plan, tty, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A step of `stage` begins: the one before it is done. Returns the fraction of the run done.
    pub fn begin(&self, stage: Stage) -> f64 {
        let mut st = self.state();
        st.done = (st.done + st.current).min(1.0);
        st.current = self.plan.step_weight(stage);
        st.begun += 1;
        st.done
    }

    /// `None` when the steps taken are the steps planned; otherwise both counts (the plan has
    /// fallen out of step with the runner, and the bar and the estimate with it).
    #[must_use]
    pub fn mismatch(&self) -> Option<(u32, u32)> {
        let (planned, begun) = (self.plan.total_steps(), self.state().begun);
        (planned != begun).then_some((planned, begun))
    }

    /// Prints one line of the run's log to stderr, keeping the bar below it on a terminal. A
    /// step's first line (`step`) also gets the percentage and the estimate when there is no bar.
    pub fn print(&self, line: &str, elapsed: Duration, step: bool) {
        let mut st = self.state();
        let mut err = std::io::stderr().lock();
        if self.tty {
            // Clear the bar, print the line, draw the bar again below it.
            let _ = write!(err, "\r\x1b[2K{line}\n{}", status(st.done, elapsed, 40));
            st.drawn = true;
        } else if step {
            let _ = writeln!(err, "{line} · {}", estimate(st.done, elapsed));
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Draws the bar again with the time now, on a terminal where it is shown (a step can last
    /// many seconds without a line printed).
    pub fn redraw(&self, elapsed: Duration) {
        let st = self.state();
        if self.tty && st.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{}", status(st.done, elapsed, 40));
            let _ = err.flush();
        }
    }

    /// Whether the bar is drawn (stderr is a terminal).
    #[must_use]
    pub fn on_terminal(&self) -> bool {
        self.tty
    }

    /// Removes the bar at the end of the run, so that what follows starts on a clean line.
    pub fn finish(&self) {
        let mut st = self.state();
        if self.tty && st.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            st.drawn = false;
        }
    }
}

/// `[#####-----]  50 % · 1m05s, about 1m05s left`, the bar `width` cells wide.
#[must_use]
pub fn status(fraction: f64, elapsed: Duration, width: usize) -> String {
    format!("{} {}", bar(fraction, width), estimate(fraction, elapsed))
}

/// The bar of `fraction` (clamped to 0–1), `width` cells between brackets.
#[must_use]
pub fn bar(fraction: f64, width: usize) -> String {
    // Rounded down, so that a full bar means done. The cast is exact for any width a line has.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let filled = ((fraction.clamp(0.0, 1.0) * width as f64).floor() as usize).min(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// `50 % · 1m05s, about 1m05s left`; no estimate of the time left before 2 % of the run is done
/// (the first steps are too few to tell).
#[must_use]
pub fn estimate(fraction: f64, elapsed: Duration) -> String {
    let fraction = fraction.clamp(0.0, 1.0);
    let percent = format!("{:>3.0} % · {}", fraction * 100.0, clock(elapsed));
    match left(fraction, elapsed) {
        Some(left) => format!("{percent}, about {} left", clock(left)),
        None => percent,
    }
}

/// The time left if the rest of the run goes at the pace so far; `None` before 2 % is done.
#[must_use]
pub fn left(fraction: f64, elapsed: Duration) -> Option<Duration> {
    if fraction < 0.02 {
        return None;
    }
    Some(elapsed.mul_f64((1.0 - fraction.min(1.0)) / fraction))
}

/// `38s`, `4m05s`, `1h02m`.
#[must_use]
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn a_full_plan_counts_every_step_the_runner_takes() {
        let plan = Plan::new(3, 5, all);
        assert_eq!(plan.steps, [12, 30, 24, 12, 14]);
        let only_drains = Plan::new(3, 5, |w| w == "w2" || w == "w4");
        assert_eq!(only_drains.steps, [0, 0, 24, 0, 0]);
        let only_w4 = Plan::new(3, 5, |w| w == "w4");
        assert_eq!(only_w4.steps, [0, 0, 12, 0, 0]);
    }

    #[test]
    fn the_steps_of_a_run_add_up_to_the_whole_of_it() {
        let plan = Plan::new(3, 5, all);
        let p = Progress::with_terminal(plan, false);
        let mut last = -1.0;
        for stage in Stage::ALL {
            for _ in 0..plan.steps[stage.index()] {
                let done = p.begin(stage);
                assert!(done > last, "progress moves forward at every step");
                last = done;
            }
        }
        // The last step has begun; ending it (as the next begin would) completes the run.
        let end = {
            let st = p.state();
            (st.done + st.current).min(1.0)
        };
        assert!((end - 1.0).abs() < 1e-9, "{end}");
        assert_eq!(p.mismatch(), None);
        p.begin(Stage::W5);
        assert_eq!(p.mismatch(), Some((92, 93)));
        // A stage's steps weigh its share: W3's 12 steps are 27 % of the run.
        let w3: f64 = (0..12).map(|_| plan.step_weight(Stage::W3)).sum();
        assert!((w3 - 0.27).abs() < 1e-9, "{w3}");
    }

    #[test]
    fn a_partial_plan_spreads_the_whole_run_over_its_own_stages() {
        let plan = Plan::new(3, 5, |w| w == "w3");
        let sum: f64 = (0..12).map(|_| plan.step_weight(Stage::W3)).sum();
        assert!((sum - 1.0).abs() < 1e-9);
        assert!(plan.step_weight(Stage::W1).abs() < f64::EPSILON);
    }

    #[test]
    fn the_bar_fills_with_the_fraction_and_the_estimate_follows_the_pace() {
        assert_eq!(bar(0.0, 10), "[----------]");
        assert_eq!(bar(0.55, 10), "[#####-----]");
        assert_eq!(bar(1.0, 10), "[##########]");
        assert_eq!(bar(1.7, 4), "[####]");
        assert_eq!(left(0.01, Duration::from_secs(5)), None);
        assert_eq!(left(0.25, Duration::from_secs(60)), Some(Duration::from_secs(180)));
        assert_eq!(left(1.0, Duration::from_secs(60)), Some(Duration::ZERO));
        assert_eq!(estimate(0.5, Duration::from_secs(65)), " 50 % · 1m05s, about 1m05s left");
        assert_eq!(estimate(0.0, Duration::from_secs(1)), "  0 % · 1s");
        assert_eq!(status(0.5, Duration::from_secs(65), 4), "[##--]  50 % · 1m05s, about 1m05s left");
        assert_eq!(clock(Duration::from_secs(38)), "38s");
        assert_eq!(clock(Duration::from_secs(3725)), "1h02m");
    }
}
