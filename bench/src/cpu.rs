//! CPU time per acquire+release cycle, from `/proc`: each server process's
//! user+system time by role (etcd, agents, coordinator, redis), the
//! benchmark's own process (the client), and how busy the whole machine was.
//!
//! On one shared machine this is what bounds an uncontended cell: a system
//! that spends more CPU per cycle runs fewer cycles once the cores are full,
//! whatever its latency would be on machines of its own.

use serde::Serialize;

/// The server processes of one system, by role.
#[derive(Debug, Clone, Default)]
pub struct Roles(pub Vec<(&'static str, Vec<u32>)>);

/// Cumulative CPU ticks at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Per role, the ticks of its processes.
    roles: Vec<(&'static str, u64)>,
    /// The benchmark's own process: the client.
    client: u64,
    /// The machine: ticks spent busy, and in all (every CPU).
    machine_busy: u64,
    machine_total: u64,
}

/// CPU time of one role per cycle.
#[derive(Debug, Clone, Serialize)]
pub struct RoleCpu {
    /// `etcd`, `agents`, `coordinator`, `redis` or `client`.
    pub role: String,
    /// Milliseconds of CPU per acquire+release cycle.
    pub ms: f64,
}

/// CPU per cycle over a measurement (warm-up and drain included).
#[derive(Debug, Clone, Serialize)]
pub struct PerCycle {
    /// Milliseconds of CPU per cycle, every role and the client together.
    pub total_ms: f64,
    /// The same by role, the client last.
    pub roles: Vec<RoleCpu>,
    /// Share of the machine's CPU time that was busy (0 to 1), everything on
    /// it included.
    pub machine_busy: f64,
}

/// Sample the processes of `roles` and this process; `None` when `/proc`
/// cannot be read (a process that exited counts as 0 from then on, so its
/// role's figure would be wrong: left out instead).
pub fn sample(roles: &Roles) -> Option<Sample> {
    let mut by_role = Vec::new();
    for (role, pids) in &roles.0 {
        let mut ticks = 0;
        for pid in pids {
            ticks += process_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
        }
        by_role.push((*role, ticks));
    }
    let client = process_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let (machine_busy, machine_total) =
        machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(Sample {
        roles: by_role,
        client,
        machine_busy,
        machine_total,
    })
}

/// What happened between `before` and `after`, per cycle, with `ticks_per_s`
/// clock ticks a second.
pub fn per_cycle(
    before: &Sample,
    after: &Sample,
    cycles: u64,
    ticks_per_s: u64,
) -> Option<PerCycle> {
    if cycles == 0 || ticks_per_s == 0 || before.roles.len() != after.roles.len() {
        return None;
    }
    let ms = |ticks: u64| ticks as f64 * 1000.0 / ticks_per_s as f64 / cycles as f64;
    let mut roles: Vec<RoleCpu> = before
        .roles
        .iter()
        .zip(&after.roles)
        .map(|((role, b), (_, a))| RoleCpu {
            role: (*role).to_owned(),
            ms: ms(a.saturating_sub(*b)),
        })
        .collect();
    roles.push(RoleCpu {
        role: "client".to_owned(),
        ms: ms(after.client.saturating_sub(before.client)),
    });
    let total = after.machine_total.saturating_sub(before.machine_total);
    Some(PerCycle {
        total_ms: roles.iter().map(|r| r.ms).sum(),
        roles,
        machine_busy: if total == 0 {
            0.0
        } else {
            after.machine_busy.saturating_sub(before.machine_busy) as f64 / total as f64
        },
    })
}

/// One line: the total, each role, and how busy the machine was.
pub fn describe(c: &PerCycle) -> String {
    let roles: Vec<String> = c
        .roles
        .iter()
        .map(|r| format!("{} {:.2}", r.role, r.ms))
        .collect();
    format!(
        "{:>6.2} ms ({}); machine {:.0}% busy",
        c.total_ms,
        roles.join(", "),
        c.machine_busy * 100.0
    )
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
#[allow(unsafe_code)]
pub fn ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100)
}

/// utime + stime of a `/proc/<pid>/stat` line. The name field (2) may hold
/// spaces and parentheses, so fields are counted after its last `)`: the
/// times are fields 14 and 15 of the line, 12 and 13 after the name.
fn process_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// (busy, total) ticks over every CPU, from the `cpu` line of `/proc/stat`:
/// idle and iowait are not busy; guest time is already inside user time.
fn machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_times_are_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194304 900 0 0 0 \
                    250 75 3 1 20 0 4 0 123 456 789";
        assert_eq!(process_ticks(stat), Some(325));
        assert_eq!(process_ticks("garbage"), None);
    }

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(machine_ticks(stat), Some((160, 1000)));
    }

    #[test]
    fn per_cycle_divides_each_role_and_the_client_by_cycles() {
        let before = Sample {
            roles: vec![("etcd", 100), ("agents", 50)],
            client: 10,
            machine_busy: 1_000,
            machine_total: 2_000,
        };
        let after = Sample {
            roles: vec![("etcd", 300), ("agents", 150)],
            client: 30,
            machine_busy: 1_900,
            machine_total: 3_000,
        };
        let p = per_cycle(&before, &after, 100, 100).unwrap();
        let by_role: Vec<(&str, f64)> = p.roles.iter().map(|r| (r.role.as_str(), r.ms)).collect();
        assert_eq!(
            by_role,
            vec![("etcd", 20.0), ("agents", 10.0), ("client", 2.0)]
        );
        assert_eq!(p.total_ms, 32.0);
        assert!((p.machine_busy - 0.9).abs() < 1e-9);
        assert!(per_cycle(&before, &after, 0, 100).is_none());
        assert_eq!(
            describe(&p),
            " 32.00 ms (etcd 20.00, agents 10.00, client 2.00); machine 90% busy"
        );
    }
}
