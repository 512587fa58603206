//! A plugin call's CPU-time budget. Calls run as futures on the async workers (wasmtime
//! runs the guest on a fiber), so one call may be polled on several threads: the CPU time
//! it is charged is measured per poll, on the polling thread. A host preempted under load
//! therefore does not fail healthy plugins, and `WALL_FACTOR` times the budget in wall time
//! is the hard stop for a call that is starved rather than busy, or waiting in a host call
//! (a WASI clock) where no epoch tick reaches it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Marks "no thread clock here": the budget falls back to wall time.
const NO_CLOCK: u64 = u64::MAX;

/// The CPU time one call has used, shared between the store (read by the epoch callback,
/// inside a poll) and [`metered`] (which brackets each poll outside the store).
#[derive(Default)]
pub(crate) struct CpuMeter {
    /// CPU nanoseconds used by the call's earlier polls.
    spent: AtomicU64,
    /// The polling thread's CPU clock in nanoseconds when the current poll began.
    poll_began: AtomicU64,
}

impl CpuMeter {
    fn reset(&self) {
        self.spent.store(0, Relaxed);
        self.begin_poll();
    }

    fn begin_poll(&self) {
        self.poll_began.store(thread_cpu_ns(), Relaxed);
    }

    fn end_poll(&self) {
        if let Some(in_poll) = self.in_poll() {
            self.spent.fetch_add(in_poll, Relaxed);
        }
    }

    /// CPU time of the poll running now, on this thread.
    fn in_poll(&self) -> Option<u64> {
        let began = self.poll_began.load(Relaxed);
        let now = thread_cpu_ns();
        (began != NO_CLOCK && now != NO_CLOCK).then(|| now.saturating_sub(began))
    }

    /// CPU time used so far; called from inside a poll.
    fn spent(&self) -> Option<Duration> {
        self.in_poll().map(|in_poll| Duration::from_nanos(self.spent.load(Relaxed) + in_poll))
    }
}

/// A call's budget as the store holds it.
pub(crate) struct CallClock {
    pub meter: Arc<CpuMeter>,
    wall: Instant,
    budget: Duration,
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
        Self { meter: Arc::default(), wall: Instant::now(), budget: Duration::ZERO }
    }

    /// Starts a call with `budget`, on the thread that is about to poll it first.
    pub(crate) fn start(&mut self, budget: Duration) {
        self.meter.reset();
        self.wall = Instant::now();
        self.budget = budget;
    }

    /// Called at an epoch tick, from inside the call's poll. `tick` is the tick length.
    pub(crate) fn verdict(&self, tick: Duration) -> Verdict {
        let wall = self.wall.elapsed();
        // Without a thread clock, wall time is all there is.
        let spent = self.meter.spent().unwrap_or(wall);
        if spent >= self.budget || wall >= self.budget * WALL_FACTOR {
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
    budget: Duration,
    call: impl Future<Output = wasmtime::Result<R>>,
) -> wasmtime::Result<R> {
    match tokio::time::timeout(budget * WALL_FACTOR, metered(meter, call)).await {
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
    cpu_time::ThreadTime::try_now().map_or(NO_CLOCK, |t| u64::try_from(t.as_duration().as_nanos()).unwrap_or(NO_CLOCK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burn(d: Duration) {
        let start = cpu_time::ThreadTime::now();
        while start.elapsed() < d {
            std::hint::black_box(0u64);
        }
    }

    /// A future that burns `per_poll` of CPU at each of `polls` polls, each time on a new
    /// thread (as a work-stealing runtime might move it), and records each verdict.
    async fn hop_threads(clock: &CallClock, polls: u32, per_poll: Duration) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        for _ in 0..polls {
            std::thread::scope(|s| s.spawn(|| burn(per_poll)).join().expect("burn"));
            burn(per_poll);
            verdicts.push(clock.verdict(Duration::from_millis(1)));
            tokio::task::yield_now().await;
        }
        verdicts
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_is_charged_the_cpu_of_its_own_polls_only() {
        let mut clock = CallClock::new();
        clock.start(Duration::from_millis(40));
        let meter = clock.meter.clone();
        // 5 ms in each of 3 polls: 15 ms of its own, while other threads burn as much again.
        let verdicts = metered(&meter, hop_threads(&clock, 3, Duration::from_millis(5))).await;
        assert_eq!(verdicts, [Verdict::Yield, Verdict::Yield, Verdict::Yield]);

        clock.start(Duration::from_millis(12));
        let verdicts = metered(&meter, hop_threads(&clock, 3, Duration::from_millis(5))).await;
        assert_eq!(verdicts, [Verdict::Yield, Verdict::Yield, Verdict::Expired], "charged across polls");
    }

    #[test]
    fn a_short_call_goes_on_without_yielding() {
        let mut clock = CallClock::new();
        clock.start(Duration::from_millis(10));
        assert_eq!(clock.verdict(Duration::from_secs(1)), Verdict::Continue);
    }
}
