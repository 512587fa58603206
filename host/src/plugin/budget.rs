//! A plugin call's CPU-time budget. Calls run as futures on the async workers (wasmtime
//! runs the guest on a fiber), so one call may be polled on several threads: the CPU time
//! it is charged is measured per poll, on the polling thread. A host preempted under load
//! therefore does not fail healthy plugins, and `WALL_FACTOR` times the budget in wall time
//! is the hard stop for a call that is starved rather than busy, or waiting in a host call
//! (a WASI clock) where no epoch tick reaches it.
//!
//! Reading a thread's CPU clock is a system call (about half a microsecond), so a poll reads
//! it only from its first epoch tick on. Until then the guest has run for at most about a
//! tick, and the poll is charged its wall time, capped at one tick: most calls end before
//! any tick and never read the clock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// One epoch tick; deadlines are counted in ticks.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Marks "not read in this poll yet" and "no thread clock here" (the budget then falls back
/// to wall time).
const UNSET: u64 = u64::MAX;

/// The CPU time one call has used, shared between the store (read by the epoch callback,
/// inside a poll) and [`metered`] (which brackets each poll outside the store).
pub(crate) struct CpuMeter {
    /// Origin of the wall-clock nanoseconds below.
    origin: Instant,
    /// CPU nanoseconds charged to the call's earlier polls.
    spent: AtomicU64,
    /// Wall-clock nanoseconds since `origin` when the current poll began.
    poll_began: AtomicU64,
    /// The polling thread's CPU clock at which the current poll is taken to have begun, once
    /// read in this poll; `UNSET` before.
    cpu_base: AtomicU64,
}

impl Default for CpuMeter {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            spent: AtomicU64::new(0),
            poll_began: AtomicU64::new(0),
            cpu_base: AtomicU64::new(UNSET),
        }
    }
}

impl CpuMeter {
    fn reset(&self) {
        self.spent.store(0, Relaxed);
        self.begin_poll();
    }

    fn begin_poll(&self) {
        self.poll_began.store(self.wall_ns(), Relaxed);
        self.cpu_base.store(UNSET, Relaxed);
    }

    fn end_poll(&self) {
        let in_poll = match self.cpu_base.load(Relaxed) {
            UNSET => self.before_first_tick(),
            base => thread_cpu_ns().saturating_sub(base),
        };
        self.spent.fetch_add(in_poll, Relaxed);
    }

    fn wall_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The current poll's charge while its thread clock is unread: its wall time, capped at
    /// one tick.
    fn before_first_tick(&self) -> u64 {
        let wall = self.wall_ns().saturating_sub(self.poll_began.load(Relaxed));
        wall.min(TICK.as_nanos() as u64)
    }

    /// CPU time of the poll running now, on this thread; `None` without a thread clock.
    fn in_poll(&self) -> Option<u64> {
        let now = thread_cpu_ns();
        if now == UNSET {
            return None;
        }
        let base = match self.cpu_base.load(Relaxed) {
            UNSET => {
                let base = now.saturating_sub(self.before_first_tick());
                self.cpu_base.store(base, Relaxed);
                base
            }
            base => base,
        };
        Some(now.saturating_sub(base))
    }

    /// CPU time used so far; called from inside a poll, at an epoch tick.
    fn spent(&self) -> Option<Duration> {
        self.in_poll().map(|in_poll| Duration::from_nanos(self.spent.load(Relaxed) + in_poll))
    }
}

/// What one call may use: CPU time, and wall time as the hard stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub cpu: Duration,
    pub wall: Duration,
}

impl Budget {
    /// `cpu` of CPU time, stopped at `WALL_FACTOR` times that in wall time.
    pub(crate) fn cpu(cpu: Duration) -> Self {
        Self { cpu, wall: cpu * WALL_FACTOR }
    }

    /// More CPU time, with the wall-clock stop kept where it was unless `cpu` passes it: a
    /// call waiting in a WASI clock is not let wait longer.
    pub(crate) fn with_cpu(self, cpu: Duration) -> Self {
        Self { cpu, wall: self.wall.max(cpu) }
    }
}

/// A call's budget as the store holds it.
pub(crate) struct CallClock {
    pub meter: Arc<CpuMeter>,
    wall: Instant,
    budget: Budget,
}

/// What the epoch callback should do at a tick.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Out of budget: interrupt the guest.
    Expired,
    /// Ran for more than a tick: let other tasks run before going on.
    Yield,
    /// Short so far: go on.
    Continue,
}

/// The wall-clock stop, in multiples of the CPU budget.
const WALL_FACTOR: u32 = 50;

impl CallClock {
    pub(crate) fn new() -> Self {
        Self { meter: Arc::default(), wall: Instant::now(), budget: Budget::cpu(Duration::ZERO) }
    }

    /// Starts a call with `budget`, on the thread that is about to poll it first.
    pub(crate) fn start(&mut self, budget: Budget) {
        self.meter.reset();
        self.wall = Instant::now();
        self.budget = budget;
    }

    /// Called at an epoch tick, from inside the call's poll. `tick` is the tick length.
    pub(crate) fn verdict(&self, tick: Duration) -> Verdict {
        let wall = self.wall.elapsed();
        // Without a thread clock, wall time is all there is.
        let spent = self.meter.spent().unwrap_or(wall);
        if spent >= self.budget.cpu || wall >= self.budget.wall {
            Verdict::Expired
        } else if spent >= tick {
            Verdict::Yield
        } else {
            Verdict::Continue
        }
    }
}

/// Runs `call` (guest code started with `budget`), charging the CPU time of each of its
/// polls to `meter`, and interrupts it at the wall-clock stop.
pub(crate) async fn bounded<R>(
    meter: &CpuMeter,
    budget: Budget,
    call: impl Future<Output = wasmtime::Result<R>>,
) -> wasmtime::Result<R> {
    match tokio::time::timeout(budget.wall, metered(meter, call)).await {
        Ok(result) => result,
        Err(_) => Err(wasmtime::Trap::Interrupt.into()),
    }
}

/// Runs `call`, charging the CPU time of each of its polls to `meter`.
async fn metered<F: Future>(meter: &CpuMeter, call: F) -> F::Output {
    let mut call = std::pin::pin!(call);
    std::future::poll_fn(|cx| {
        meter.begin_poll();
        let poll = call.as_mut().poll(cx);
        if poll.is_pending() {
            meter.end_poll();
        }
        poll
    })
    .await
}

fn thread_cpu_ns() -> u64 {
    cpu_time::ThreadTime::try_now().map_or(UNSET, |t| u64::try_from(t.as_duration().as_nanos()).unwrap_or(UNSET))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Burns `d` of this thread's CPU, calling `at_tick` after each tick of it, as the epoch
    /// callback would be called.
    fn burn(d: Duration, mut at_tick: impl FnMut()) {
        let start = cpu_time::ThreadTime::now();
        let mut ticks = 0;
        while start.elapsed() < d {
            std::hint::black_box(0u64);
            if start.elapsed() >= TICK * (ticks + 1) {
                ticks += 1;
                at_tick();
            }
        }
    }

    /// A future that burns `per_poll` of CPU at each of `polls` polls, while a new thread
    /// (as a work-stealing runtime might run other tasks) burns as much again, and records
    /// the verdict at each poll's last tick.
    async fn hop_threads(clock: &CallClock, polls: u32, per_poll: Duration) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        for _ in 0..polls {
            std::thread::scope(|s| s.spawn(|| burn(per_poll, || ())).join().expect("burn"));
            let mut last = None;
            burn(per_poll, || last = Some(clock.verdict(TICK)));
            verdicts.push(last.expect("a tick"));
            tokio::task::yield_now().await;
        }
        verdicts
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_is_charged_the_cpu_of_its_own_polls_only() {
        let mut clock = CallClock::new();
        clock.start(Budget::cpu(Duration::from_millis(40)));
        let meter = clock.meter.clone();
        // 5 ms in each of 3 polls: 15 ms of its own, while other threads burn as much again.
        let verdicts = metered(&meter, hop_threads(&clock, 3, Duration::from_millis(5))).await;
        assert_eq!(verdicts, [Verdict::Yield, Verdict::Yield, Verdict::Yield]);

        clock.start(Budget::cpu(Duration::from_millis(12)));
        let verdicts = metered(&meter, hop_threads(&clock, 3, Duration::from_millis(5))).await;
        assert_eq!(verdicts, [Verdict::Yield, Verdict::Yield, Verdict::Expired], "charged across polls");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_poll_that_waits_before_its_first_tick_is_charged_one_tick_at_most() {
        let mut clock = CallClock::new();
        clock.start(Budget::cpu(Duration::from_millis(10)));
        let meter = clock.meter.clone();
        let waits = async {
            // Descheduled for 20 ms in each of two polls, as an overloaded host might be.
            for _ in 0..2 {
                std::thread::sleep(Duration::from_millis(20));
                tokio::task::yield_now().await;
            }
            std::thread::sleep(Duration::from_millis(20));
            clock.verdict(TICK)
        };
        assert_eq!(metered(&meter, waits).await, Verdict::Yield, "charged a tick per poll, 3 ms of 10");
    }

    #[test]
    fn a_short_call_goes_on_without_yielding() {
        let mut clock = CallClock::new();
        clock.start(Budget::cpu(Duration::from_millis(10)));
        assert_eq!(clock.verdict(Duration::from_secs(1)), Verdict::Continue);
    }
}
