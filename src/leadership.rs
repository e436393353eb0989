//! Leader election with a renew deadline, as client-go's: the Lease is held and renewed by
//! kube-lease-manager, and the [`Fence`] follows what this process reads back of the Lease: its
//! own renewal plus the renew deadline. A leader that has not seen a renewal within the renew
//! deadline (shorter than the Lease) stops acting before its Lease can expire, so a standby,
//! which takes over only once the Lease has expired, never acts at the same time. A replica
//! that stops leading steps down to standby and stands for election again.

use crate::fence::Fence;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use std::time::{Duration, Instant, SystemTime};

/// The durations of the election, in client-go's relationship: the renew deadline shorter than
/// the Lease, the retry period shorter than the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease holds without renewal; a standby takes over after it.
    pub lease: Duration,
    /// How long a leader acts after its last renewal it has seen.
    pub renew_deadline: Duration,
    /// How often the Lease is renewed and read back.
    pub retry: Duration,
}

impl Timing {
    /// The timing for a Lease of `lease`, with the deadline and retry period asked for, or
    /// client-go's proportions (15 s, 10 s, 2 s) of it. Refuses a deadline not shorter than the
    /// Lease, a retry period too long for the deadline, or a Lease under 2 seconds.
    pub fn new(
        lease: Duration,
        renew_deadline: Option<Duration>,
        retry: Option<Duration>,
    ) -> Result<Self, String> {
        if lease < Duration::from_secs(2) {
            return Err(format!(
                "the leader-election Lease must last at least 2s, not {lease:?}"
            ));
        }
        let renew_deadline = renew_deadline.unwrap_or(lease * 2 / 3);
        let retry = retry.unwrap_or(lease * 2 / 15).max(Duration::from_millis(200));
        if renew_deadline >= lease {
            return Err(format!(
                "the renew deadline ({renew_deadline:?}) must be shorter than the leader-election Lease ({lease:?}): a leader must stop before its Lease can expire"
            ));
        }
        // The Lease is renewed every whole retry period and read back every retry period: a
        // shorter deadline would lapse between two renewals of a healthy leader.
        let renewal_seen_within = Duration::from_secs(whole_seconds(retry)) + retry;
        if renewal_seen_within >= renew_deadline {
            return Err(format!(
                "the renew deadline ({renew_deadline:?}) must be longer than the retry period ({retry:?}) rounded up to whole seconds plus the retry period again, or a healthy leader would lapse between renewals"
            ));
        }
        Ok(Self {
            lease,
            renew_deadline,
            retry,
        })
    }

    /// The Lease's duration in whole seconds, as the Lease records it.
    pub fn lease_seconds(&self) -> u64 {
        self.lease.as_secs().max(1)
    }

    /// How long before the Lease expires kube-lease-manager renews it: one retry period after
    /// the last renewal, in whole seconds.
    pub fn renew_grace_seconds(&self) -> u64 {
        self.lease_seconds()
            .saturating_sub(whole_seconds(self.retry))
            .max(1)
    }
}

/// `period` rounded up to whole seconds, at least one: how often kube-lease-manager, which
/// counts in seconds, renews when asked to every `period`.
fn whole_seconds(period: Duration) -> u64 {
    (period.as_secs_f64().ceil() as u64).max(1)
}

/// Keeps `fence` open while this process (`identity`) is seen holding Lease `name`: every retry
/// period it reads the Lease, and while it shows this process's renewal at `renewTime`, allows
/// acting until `renewTime` plus the renew deadline, earlier than before too. A read that fails
/// or times out moves nothing, so the fence lapses on its own; a Lease held by another closes
/// it at once. Runs
/// until the process ends.
pub async fn keep_fence(leases: Api<Lease>, name: String, identity: String, timing: Timing, fence: Fence) {
    let mut tick = tokio::time::interval(timing.retry);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let read = tokio::time::timeout(timing.retry, leases.get_opt(&name)).await;
        let lease = match read {
            Ok(Ok(lease)) => lease,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "could not read the leader Lease");
                continue;
            }
            Err(_) => {
                tracing::debug!("reading the leader Lease timed out");
                continue;
            }
        };
        let spec = lease.and_then(|l| l.spec);
        let holder = spec.as_ref().and_then(|s| s.holder_identity.as_deref());
        let renewed = spec.as_ref().and_then(|s| s.renew_time.as_ref());
        match (holder, renewed) {
            (Some(holder), Some(renewed)) if holder == identity => {
                let renewed = SystemTime::from(renewed.0);
                match acting_until(renewed, SystemTime::now(), Instant::now(), timing) {
                    Some(until) => fence.open_until(until),
                    // Renewed longer ago than the deadline, or rewound by a delayed write.
                    None => fence.close(),
                }
            }
            _ => fence.close(),
        }
    }
}

/// The instant (on this process's monotonic clock, which reads `now_mono` when the wall clock
/// reads `now_wall`) until which a renewal recorded at `renewed` lets the leader act; `None`
/// when that is past already.
fn acting_until(
    renewed: SystemTime,
    now_wall: SystemTime,
    now_mono: Instant,
    timing: Timing,
) -> Option<Instant> {
    let age = now_wall.duration_since(renewed).unwrap_or(Duration::ZERO);
    let left = timing.renew_deadline.checked_sub(age)?;
    Some(now_mono + left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_keeps_client_gos_relationship_and_refuses_a_deadline_past_the_lease() {
        let secs = Duration::from_secs;
        let defaults = Timing::new(secs(15), None, None).unwrap();
        assert_eq!((defaults.renew_deadline, defaults.retry), (secs(10), secs(2)));
        assert_eq!(
            (defaults.lease_seconds(), defaults.renew_grace_seconds()),
            (15, 13)
        );
        let short = Timing::new(secs(4), None, None).unwrap();
        assert!(short.renew_deadline < short.lease && short.retry < short.renew_deadline);
        assert!(
            Timing::new(secs(15), Some(secs(15)), None)
                .unwrap_err()
                .contains("renew deadline")
        );
        assert!(
            Timing::new(secs(15), Some(secs(10)), Some(secs(10)))
                .unwrap_err()
                .contains("retry period")
        );
        assert!(Timing::new(secs(1), None, None).is_err());
    }

    #[test]
    fn a_renewal_lets_the_leader_act_for_the_deadline_from_when_it_was_recorded() {
        let timing = Timing::new(Duration::from_secs(15), None, None).unwrap();
        let (wall, mono) = (SystemTime::now(), Instant::now());
        let until = acting_until(wall - Duration::from_secs(3), wall, mono, timing).unwrap();
        assert_eq!(until - mono, Duration::from_secs(7));
        assert_eq!(
            acting_until(wall - Duration::from_secs(11), wall, mono, timing),
            None
        );
    }
}
