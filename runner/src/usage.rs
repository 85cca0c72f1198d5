//! What a container uses, for status displays (`loop status`, the dashboard's overview): its
//! memory, its CPU time so far and its CPU rate, as `docker stats` shows them.
//!
//! Both are read from the container's cgroup when the daemon shares the engine's host (cgroup
//! v1 or v2, cgroupfs or systemd driver: a file read, microseconds), else asked of the Engine's
//! stats API (a round trip per container). The kernel only counts CPU time, so the rate is the
//! difference between two readings: [`UsageMeter`] keeps each container's last one, and a
//! display's reading gives the rate since the previous one. Nothing here polls: readings are
//! taken when someone looks.
//!
//! A first look has no previous reading; the meter then reads twice, [`FIRST_LOOK`] apart, for
//! every container it has not seen lately (all of them together, so one wait), rather than
//! show the total alone: `loop status` is one call and the overview is often opened once, so a
//! rate shown only on the second look would rarely be seen, and the wait is paid once per
//! container per [`STALE`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::StatsOptions;
use futures::StreamExt;
use serde::Serialize;

/// Between a first look's two readings.
pub const FIRST_LOOK: Duration = Duration::from_millis(100);
/// A previous reading older than this makes no rate: it would average over a time nobody asked
/// about (the last look an hour ago), so the meter reads twice again.
pub const STALE: Duration = Duration::from_secs(10);
/// A reading this close to the previous one says nothing new (two displays asking at once):
/// the rate already computed stands, and the older reading stays the base of the next one.
const TOO_CLOSE: Duration = Duration::from_millis(50);
/// Engine stats calls in flight at once when the cgroups are not visible.
const STATS_PARALLEL: usize = 8;

/// A container's use of memory and CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ContainerUsage {
    /// Memory the kernel accounts to the container.
    pub memory_bytes: Option<u64>,
    /// CPU time used since the container started, in microseconds.
    pub cpu_usec: Option<u64>,
    /// CPU used since the previous reading (at most [`STALE`] ago), in percent of one core
    /// (`docker stats`' "CPU %": 250 is two and a half cores busy).
    pub cpu_percent: Option<f64>,
}

/// One reading of a container's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Reading {
    memory_bytes: Option<u64>,
    cpu_usec: Option<u64>,
}

/// The CPU rate between two readings of a container's CPU time, in percent of one core,
/// rounded to a tenth. `None` when no time passed or the counter went back (another container
/// under the same id).
pub fn cpu_percent(before: (Instant, u64), after: (Instant, u64)) -> Option<f64> {
    let elapsed = after.0.checked_duration_since(before.0)?.as_micros();
    let used = after.1.checked_sub(before.1)?;
    if elapsed == 0 {
        return None;
    }
    let percent = used as f64 * 100.0 / elapsed as f64;
    Some((percent * 10.0).round() / 10.0)
}

/// A container's last CPU reading and the rate it gave.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_usec: u64,
    percent: Option<f64>,
}

/// The last CPU reading of each container looked at, and the rate each gave.
#[derive(Debug, Default)]
pub struct CpuSamples {
    last: HashMap<String, Sample>,
}

impl CpuSamples {
    /// Records container `id`'s CPU time `cpu_usec` read at `at`; returns the rate since the
    /// previous reading, or `None` when there is none younger than [`STALE`] (the caller reads
    /// again after [`FIRST_LOOK`]).
    pub fn record(&mut self, id: &str, at: Instant, cpu_usec: u64) -> Option<f64> {
        if let Some(previous) = self.last.get(id).copied() {
            let age = at.saturating_duration_since(previous.at);
            if age < TOO_CLOSE && cpu_usec >= previous.cpu_usec {
                return previous.percent;
            }
            if age <= STALE
                && let Some(percent) = cpu_percent((previous.at, previous.cpu_usec), (at, cpu_usec))
            {
                let percent = Some(percent);
                self.last.insert(
                    id.to_owned(),
                    Sample {
                        at,
                        cpu_usec,
                        percent,
                    },
                );
                return percent;
            }
        }
        self.last.insert(
            id.to_owned(),
            Sample {
                at,
                cpu_usec,
                percent: None,
            },
        );
        None
    }

    /// Forgets readings older than [`STALE`] (they make no rate): what is kept is bounded by
    /// the containers looked at lately.
    pub fn forget_stale(&mut self, now: Instant) {
        self.last
            .retain(|_, sample| now.saturating_duration_since(sample.at) <= STALE);
    }
}

/// Reads containers' use and keeps the CPU readings the rates are computed from.
#[derive(Debug, Default)]
pub struct UsageMeter {
    samples: Mutex<CpuSamples>,
}

impl UsageMeter {
    fn samples(&self) -> std::sync::MutexGuard<'_, CpuSamples> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The use of each container in `ids`, by id (a container that cannot be read has empty
    /// fields). Waits [`FIRST_LOOK`] once when one of them has no recent reading.
    pub async fn usage(&self, docker: &Docker, ids: &[String]) -> HashMap<String, ContainerUsage> {
        let mut usage = self.look(docker, ids).await;
        let again: Vec<String> = usage
            .iter()
            .filter(|(_, u)| u.cpu_usec.is_some() && u.cpu_percent.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        if !again.is_empty() {
            tokio::time::sleep(FIRST_LOOK).await;
            usage.extend(self.look(docker, &again).await);
        }
        usage
    }

    /// One reading of each container, recorded.
    async fn look(&self, docker: &Docker, ids: &[String]) -> HashMap<String, ContainerUsage> {
        let mut readings = Vec::with_capacity(ids.len());
        let mut elsewhere = Vec::new();
        for id in ids {
            match cgroup_reading(id) {
                Some(reading) => readings.push((id.clone(), Instant::now(), reading)),
                None => elsewhere.push(id.clone()),
            }
        }
        // Asked together: an Engine stats call is a round trip, and a status call must not
        // wait for one container after another.
        let asked: Vec<(String, Instant, Reading)> = futures::stream::iter(elsewhere)
            .map(|id| async move {
                let reading = engine_reading(docker, &id).await;
                (id, Instant::now(), reading)
            })
            .buffer_unordered(STATS_PARALLEL)
            .collect()
            .await;
        readings.extend(asked);
        let mut samples = self.samples();
        samples.forget_stale(Instant::now());
        readings
            .into_iter()
            .map(|(id, at, reading)| {
                let cpu_percent = reading
                    .cpu_usec
                    .and_then(|usec| samples.record(&id, at, usec));
                let usage = ContainerUsage {
                    memory_bytes: reading.memory_bytes,
                    cpu_usec: reading.cpu_usec,
                    cpu_percent,
                };
                (id, usage)
            })
            .collect()
    }
}

/// A reading from the Engine's stats API (one shot: the Engine does not wait a second for a
/// second sample of its own).
async fn engine_reading(docker: &Docker, id: &str) -> Reading {
    let mut stats = docker.stats(
        id,
        Some(StatsOptions {
            stream: false,
            one_shot: true,
        }),
    );
    let Some(Ok(stats)) = stats.next().await else {
        return Reading::default();
    };
    Reading {
        memory_bytes: stats.memory_stats.and_then(|m| m.usage),
        cpu_usec: stats
            .cpu_stats
            .and_then(|c| c.cpu_usage?.total_usage)
            .map(|ns| ns / 1000),
    }
}

/// A reading from the container's cgroup files, the ones Docker's own stats read; `None` when
/// the daemon does not see the engine's cgroups (another host, a rootless engine, a container).
fn cgroup_reading(id: &str) -> Option<Reading> {
    let memory_bytes = cgroup_memory_usage(id);
    let cpu_usec = cgroup_cpu_usec(id);
    (memory_bytes.is_some() || cpu_usec.is_some()).then_some(Reading {
        memory_bytes,
        cpu_usec,
    })
}

/// Whether `id` can name a container's cgroup directory (a full id: hex digits only, so it
/// cannot climb out of the cgroup tree).
fn is_container_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit())
}

/// The memory use the kernel accounts to a container.
fn cgroup_memory_usage(id: &str) -> Option<u64> {
    if !is_container_id(id) {
        return None;
    }
    let candidates = [
        format!("/sys/fs/cgroup/memory/docker/{id}/memory.usage_in_bytes"),
        format!("/sys/fs/cgroup/memory/system.slice/docker-{id}.scope/memory.usage_in_bytes"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.current"),
        format!("/sys/fs/cgroup/docker/{id}/memory.current"),
    ];
    candidates
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse().ok())
}

/// The CPU time a container used, in microseconds: cgroup v2's `cpu.stat` (`usage_usec`) or
/// v1's `cpuacct.usage` (nanoseconds).
fn cgroup_cpu_usec(id: &str) -> Option<u64> {
    if !is_container_id(id) {
        return None;
    }
    let v2 = [
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat"),
        format!("/sys/fs/cgroup/docker/{id}/cpu.stat"),
    ];
    let from_v2 = v2
        .iter()
        .find_map(|path| usage_usec(&std::fs::read_to_string(path).ok()?));
    if from_v2.is_some() {
        return from_v2;
    }
    let v1 = ["cpuacct", "cpu,cpuacct"]
        .into_iter()
        .flat_map(|hierarchy| {
            [
                format!("/sys/fs/cgroup/{hierarchy}/docker/{id}/cpuacct.usage"),
                format!("/sys/fs/cgroup/{hierarchy}/system.slice/docker-{id}.scope/cpuacct.usage"),
            ]
        });
    v1.into_iter().find_map(|path| {
        let ns: u64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
        Some(ns / 1000)
    })
}

/// `usage_usec` of a cgroup v2 `cpu.stat` file.
fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|line| line.strip_prefix("usage_usec ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(used_usec: u64, over: Duration, expected: Option<f64>) {
        let start = Instant::now();
        assert_eq!(
            cpu_percent((start, 1_000), (start + over, 1_000 + used_usec)),
            expected,
            "{used_usec} µs over {over:?}"
        );
    }

    #[test]
    fn the_rate_is_cpu_time_over_wall_time_in_percent_of_a_core() {
        check(0, Duration::from_secs(1), Some(0.0));
        check(120_000, Duration::from_secs(1), Some(12.0));
        check(100_000, Duration::from_millis(100), Some(100.0));
        check(250_000, Duration::from_millis(100), Some(250.0));
        check(333, Duration::from_millis(1), Some(33.3));
        check(1, Duration::from_secs(3), Some(0.0));
        check(5, Duration::ZERO, None);
    }

    #[test]
    fn a_counter_that_went_back_or_time_that_did_not_pass_makes_no_rate() {
        let start = Instant::now();
        assert_eq!(cpu_percent((start, 500), (start + STALE, 100)), None);
        assert_eq!(cpu_percent((start + STALE, 100), (start, 500)), None);
    }

    #[test]
    fn samples_give_the_rate_since_the_previous_reading() {
        let mut samples = CpuSamples::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        // A first look has nothing to compare with.
        assert_eq!(samples.record("a", at(0), 1_000), None);
        // 50 ms of CPU in 100 ms.
        assert_eq!(samples.record("a", at(100), 51_000), Some(50.0));
        // Asked again at once: the same rate, and the base stays at 100 ms.
        assert_eq!(samples.record("a", at(110), 51_500), Some(50.0));
        // A second later: the rate is over the second since the base (from 110 ms it would
        // be 15.1).
        assert_eq!(samples.record("a", at(1_100), 151_000), Some(10.0));
        // Another container is its own.
        assert_eq!(samples.record("b", at(1_100), 7), None);
        // A reading older than STALE makes no rate: read twice again.
        let late = 1_100 + STALE.as_millis() as u64 + 1;
        assert_eq!(samples.record("a", at(late), 90_000), None);
        assert_eq!(samples.record("a", at(late + 200), 290_000), Some(100.0));
        // A counter that went back (a new container under the id) starts over.
        assert_eq!(samples.record("a", at(late + 400), 10), None);
    }

    #[test]
    fn stale_readings_are_forgotten() {
        let mut samples = CpuSamples::default();
        let start = Instant::now();
        samples.record("old", start, 1);
        samples.record("new", start + STALE, 1);
        samples.forget_stale(start + STALE + Duration::from_millis(1));
        assert_eq!(samples.last.keys().collect::<Vec<_>>(), vec!["new"]);
    }

    #[test]
    fn reads_usage_usec_from_cpu_stat() {
        let stat = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 0\n";
        assert_eq!(usage_usec(stat), Some(123_456));
        assert_eq!(usage_usec("user_usec 5\n"), None);
    }

    #[test]
    fn only_hex_ids_name_a_cgroup() {
        assert!(is_container_id("0123abcdef"));
        assert!(!is_container_id(""));
        assert!(!is_container_id("../../etc"));
        assert_eq!(cgroup_reading("../x"), None);
    }
}
