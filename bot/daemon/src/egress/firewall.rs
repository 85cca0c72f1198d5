//! The host side of the egress network's isolation. Docker's `--internal` only stops
//! forwarding; packets to the host's own addresses (docker0's, the gateway's, any interface's)
//! go through INPUT, so without this a container could reach every host service listening on
//! them. The chain [`CHAIN`] ends in a reject; each daemon inserts accepts for its two ports
//! (the proxy's and the API's) at the top and removes them when it stops.
//!
//! A daemon killed with -9 cannot remove its holes, and a hole outlives the listener it was
//! made for: whatever listens on that port later would be reachable from every agent. So each
//! hole names its [`Holder`], the daemon and the process running it, and every daemon that
//! starts on the host removes the holes of processes that are gone, whichever daemon made
//! them.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;

/// An iptables call that failed.
#[derive(Debug, thiserror::Error)]
#[error("iptables {args}: {detail} (egress control needs root and iptables)")]
pub struct FirewallError {
    args: String,
    detail: String,
}

/// The iptables chain (filter table, jumped to from INPUT for the network's bridge) that keeps
/// the network's containers away from every host port except the proxy's and the API's.
pub const CHAIN: &str = "LOOP-EGRESS";

/// This daemon's holes in [`CHAIN`], removed on drop.
#[derive(Debug)]
pub struct Firewall {
    rules: Vec<Vec<String>>,
}

impl Firewall {
    /// Sets up the chain (once per host) and lets `ports` on `gateway` through, tagged with
    /// `daemon` (the daemon id) and this process. Holes left by a killed run of the same
    /// daemon, or by any daemon process that is gone, are removed first; live daemons' holes
    /// are left alone.
    pub fn install(
        bridge: &str,
        gateway: Ipv4Addr,
        ports: &[u16],
        daemon: &str,
    ) -> Result<Firewall, FirewallError> {
        if iptables(&strings(&["-n", "-L", CHAIN])).is_err() {
            iptables(&strings(&["-N", CHAIN]))?;
            iptables(&strings(&[
                "-A",
                CHAIN,
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ]))?;
            iptables(&strings(&[
                "-A",
                CHAIN,
                "-p",
                "tcp",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ]))?;
            iptables(&strings(&["-A", CHAIN, "-j", "REJECT"]))?;
        }
        let jump = strings(&["INPUT", "-i", bridge, "-j", CHAIN]);
        let check: Vec<String> = std::iter::once("-C".to_owned())
            .chain(jump.iter().cloned())
            .collect();
        if iptables(&check).is_err() {
            let insert: Vec<String> = std::iter::once("-I".to_owned())
                .chain(jump.iter().cloned())
                .collect();
            iptables(&insert)?;
        }
        let me = Holder {
            daemon: daemon.to_owned(),
            process: ProcessMark::current(),
        };
        remove_stale(&me);
        let comment = me.comment();
        let mut firewall = Firewall { rules: Vec::new() };
        for port in ports {
            let rule = vec![
                CHAIN.to_owned(),
                "-p".to_owned(),
                "tcp".to_owned(),
                "-d".to_owned(),
                gateway.to_string(),
                "--dport".to_owned(),
                port.to_string(),
                "-m".to_owned(),
                "comment".to_owned(),
                "--comment".to_owned(),
                comment.clone(),
                "-j".to_owned(),
                "ACCEPT".to_owned(),
            ];
            let insert: Vec<String> = std::iter::once("-I".to_owned())
                .chain(rule.iter().cloned())
                .collect();
            iptables(&insert)?;
            firewall.rules.push(rule);
        }
        Ok(firewall)
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        for rule in &self.rules {
            let delete: Vec<String> = std::iter::once("-D".to_owned())
                .chain(rule.iter().cloned())
                .collect();
            if let Err(err) = iptables(&delete) {
                tracing::warn!(error = %err, "egress: cannot remove a firewall rule");
            }
        }
    }
}

fn iptables(args: &[String]) -> Result<(), FirewallError> {
    let output = std::process::Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|err| FirewallError {
            args: args.join(" "),
            detail: err.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FirewallError {
            args: args.join(" "),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// Who made a hole: the rule's comment, `loop:DAEMON:PIDNS:PID:START`. Loop before this
/// wrote `loop:DAEMON` alone; such holes can only be judged by their own daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    daemon: String,
    process: Option<ProcessMark>,
}

/// A process, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessMark {
    /// The inode of the pid namespace `pid` is in: another namespace's pids mean nothing here.
    pid_namespace: u64,
    pid: i32,
    /// Clock ticks after boot (`/proc/PID/stat`'s `starttime`).
    start: u64,
}

impl ProcessMark {
    /// This process, or `None` without a readable `/proc`.
    fn current() -> Option<ProcessMark> {
        let pid_namespace = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
        let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
        Some(ProcessMark {
            pid_namespace,
            pid: stat.pid,
            start: stat.starttime,
        })
    }

    /// Whether the process still runs (a zombie does not: it is only waiting to be reaped).
    fn is_running(&self) -> bool {
        let Ok(stat) = procfs::process::Process::new(self.pid).and_then(|p| p.stat()) else {
            return false;
        };
        let ended = matches!(
            stat.state(),
            Ok(procfs::process::ProcState::Zombie | procfs::process::ProcState::Dead)
        );
        stat.starttime == self.start && !ended
    }
}

impl Holder {
    fn comment(&self) -> String {
        match &self.process {
            Some(p) => format!(
                "loop:{}:{}:{}:{}",
                self.daemon, p.pid_namespace, p.pid, p.start
            ),
            None => format!("loop:{}", self.daemon),
        }
    }

    fn parse(comment: &str) -> Option<Holder> {
        let parts: Vec<&str> = comment.strip_prefix("loop:")?.split(':').collect();
        match parts[..] {
            [daemon] if !daemon.is_empty() => Some(Holder {
                daemon: daemon.to_owned(),
                process: None,
            }),
            [daemon, namespace, pid, start] if !daemon.is_empty() => Some(Holder {
                daemon: daemon.to_owned(),
                process: Some(ProcessMark {
                    pid_namespace: namespace.parse().ok()?,
                    pid: pid.parse().ok()?,
                    start: start.parse().ok()?,
                }),
            }),
            _ => None,
        }
    }

    /// Whether `me`, starting, may remove this holder's holes: they are a killed run of the
    /// same daemon (one data directory runs one daemon at a time), or their process, in
    /// `me`'s pid namespace, no longer runs.
    fn is_stale(&self, me: &Holder, running: impl Fn(&ProcessMark) -> bool) -> bool {
        if self.daemon == me.daemon {
            return true;
        }
        match (&self.process, &me.process) {
            (Some(theirs), Some(mine)) => {
                theirs.pid_namespace == mine.pid_namespace && !running(theirs)
            }
            _ => false,
        }
    }
}

/// Deletes the rules of [`CHAIN`] whose holder is gone ([`Holder::is_stale`]).
fn remove_stale(me: &Holder) {
    let Ok(output) = std::process::Command::new("iptables")
        .args(["-w", "-S", CHAIN])
        .output()
    else {
        return;
    };
    let listing = String::from_utf8_lossy(&output.stdout);
    for line in stale_rules(&listing, me, ProcessMark::is_running) {
        let mut delete = vec!["-D".to_owned()];
        delete.extend(line);
        match iptables(&delete) {
            Ok(()) => {
                tracing::info!(rule = %delete.join(" "), "egress: removed a stale firewall rule")
            }
            Err(err) => tracing::warn!(error = %err, "egress: cannot remove a stale firewall rule"),
        }
    }
}

/// The stale rules of an `iptables -S CHAIN` listing, as arguments after `-A` (so `-D` +
/// them deletes the rule). Rules without a loop comment (the chain's own) are never stale.
fn stale_rules(
    listing: &str,
    me: &Holder,
    running: impl Fn(&ProcessMark) -> bool,
) -> Vec<Vec<String>> {
    listing
        .lines()
        .filter_map(|line| line.strip_prefix("-A "))
        .map(|rest| {
            rest.split_whitespace()
                .map(|word| word.trim_matches('"').to_owned())
                .collect::<Vec<String>>()
        })
        .filter(|words| {
            words
                .windows(2)
                .find(|w| w[0] == "--comment")
                .and_then(|w| Holder::parse(&w[1]))
                .is_some_and(|holder| holder.is_stale(me, &running))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(port: u16, comment: &str) -> String {
        format!(
            "-A LOOP-EGRESS -d 172.30.0.1/32 -p tcp -m tcp --dport {port} -m comment --comment \"{comment}\" -j ACCEPT\n"
        )
    }

    #[test]
    fn holes_of_gone_processes_and_of_this_daemon_are_stale_and_no_others() {
        let me = Holder {
            daemon: "dme".into(),
            process: Some(ProcessMark {
                pid_namespace: 7,
                pid: 100,
                start: 5000,
            }),
        };
        let listing = format!(
            "-N LOOP-EGRESS\n{}{}{}{}{}{}{}-A LOOP-EGRESS -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A LOOP-EGRESS -p tcp -j REJECT --reject-with tcp-reset\n",
            // A killed run of this daemon, old and new format.
            rule(4100, "loop:dme"),
            rule(4101, "loop:dme:7:90:4000"),
            // Another daemon whose process is gone.
            rule(4200, "loop:dgone:7:91:4100"),
            // Another daemon still running (pid 92 started at 4200).
            rule(4300, "loop:dlive:7:92:4200"),
            // Pid 92 again, but a later process than the one that made the hole.
            rule(4400, "loop:dreused:7:92:3000"),
            // Another pid namespace, and an older loop's tag: nothing to judge them by.
            rule(4500, "loop:delse:8:91:4100") + &rule(4600, "loop:dold"),
            rule(4700, "someone else's rule"),
        );
        let running = |p: &ProcessMark| p.pid == 92 && p.start == 4200;
        let stale: Vec<String> = stale_rules(&listing, &me, running)
            .iter()
            .map(|words| {
                assert_eq!(words[0], "LOOP-EGRESS");
                let at = words.iter().position(|w| w == "--dport").expect("port");
                words[at + 1].clone()
            })
            .collect();
        assert_eq!(stale, ["4100", "4101", "4200", "4400"]);
    }

    #[test]
    fn a_holder_reads_back_from_its_comment() {
        let me = Holder {
            daemon: "d0123456789ab".into(),
            process: ProcessMark::current(),
        };
        assert!(me.process.is_some(), "/proc is readable here");
        assert_eq!(Holder::parse(&me.comment()), Some(me.clone()));
        for bad in [
            "loop:",
            "loop:d:x:1:2",
            "loop:d:1:2",
            "other:d",
            "loop::1:2:3",
        ] {
            assert_eq!(Holder::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn this_process_runs_and_one_with_another_start_does_not() {
        let me = ProcessMark::current().expect("/proc");
        assert!(me.is_running());
        let earlier = ProcessMark {
            start: me.start.saturating_sub(1),
            ..me
        };
        assert!(!earlier.is_running());
        let reaped = ProcessMark {
            pid: i32::MAX,
            ..me
        };
        assert!(!reaped.is_running());
    }
}
