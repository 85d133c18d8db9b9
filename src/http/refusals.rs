//! The audit of refused requests, bounded per peer.
//!
//! CONTRACT §6 audits every 401 and 403. One audit record per refusal would let anyone who
//! can reach the port grow the audit chain (Redis, and the audit topic) without limit,
//! with no token at all. So each peer (its IP address, from the connection, never from a
//! header it could forge) gets its refusals audited one by one up to a rate; past it, they
//! are counted and written as one summary record per peer per minute. Nothing is dropped
//! unseen: `warden_admin_refusals_summarized_total` counts what went into summaries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

/// Refusals audited one by one per peer: a sustained rate and a burst.
const PER_PEER_PER_SECOND: u32 = 1;
const PER_PEER_BURST: u32 = 60;
/// Peers whose summarized refusals are kept apart; the rest share one summary.
const MAX_PEERS: usize = 10_000;
/// The peer name of the shared summary.
pub const OTHER_PEERS: &str = "other";

/// What [`RefusalAudit::admit`] says about one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Audit it on its own.
    Audit,
    /// Counted for the peer's next summary.
    Summarized,
}

/// Refusals past their peer's rate, to be written as summaries.
pub struct RefusalAudit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    summarized: Mutex<HashMap<String, u64>>,
}

impl Default for RefusalAudit {
    fn default() -> Self {
        let quota =
            Quota::per_second(NonZeroU32::new(PER_PEER_PER_SECOND).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(PER_PEER_BURST).unwrap_or(NonZeroU32::MIN));
        RefusalAudit {
            limiter: RateLimiter::keyed(quota),
            summarized: Mutex::new(HashMap::new()),
        }
    }
}

impl RefusalAudit {
    /// Whether a refusal of `peer` (unknown: one shared key) is audited on its own.
    pub fn admit(&self, peer: Option<IpAddr>) -> Admission {
        let key = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if self.limiter.check_key(&key).is_ok() {
            return Admission::Audit;
        }
        let mut summarized = self.summarized.lock();
        let name = match peer {
            Some(ip)
                if summarized.len() < MAX_PEERS || summarized.contains_key(&ip.to_string()) =>
            {
                ip.to_string()
            }
            _ => OTHER_PEERS.to_owned(),
        };
        *summarized.entry(name).or_default() += 1;
        Admission::Summarized
    }

    /// The counts summarized since the last call, per peer (sorted), and forgets them;
    /// the limiter forgets peers it has not seen for a while too.
    pub fn take(&self) -> Vec<(String, u64)> {
        self.limiter.retain_recent();
        let mut counts: Vec<(String, u64)> = self.summarized.lock().drain().collect();
        counts.sort();
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_past_its_burst_is_summarized_and_others_are_not_affected() {
        let audit = RefusalAudit::default();
        let flood: IpAddr = "10.0.0.9".parse().unwrap();
        let calm: IpAddr = "10.0.0.7".parse().unwrap();
        let admitted = (0..200)
            .filter(|_| audit.admit(Some(flood)) == Admission::Audit)
            .count();
        // The burst (and whatever refilled while the loop ran), not all of them.
        assert!((PER_PEER_BURST as usize..200).contains(&admitted));
        assert_eq!(audit.admit(Some(calm)), Admission::Audit);
        let taken = audit.take();
        assert_eq!(taken, [("10.0.0.9".to_owned(), 200 - admitted as u64)]);
        assert!(audit.take().is_empty(), "taken once");
    }

    #[test]
    fn past_the_peer_bound_summaries_share_one_entry() {
        let audit = RefusalAudit::default();
        let mut summarized = 0;
        for n in 0..(MAX_PEERS as u32 + 50) {
            let ip = IpAddr::from(n.to_be_bytes());
            for _ in 0..=PER_PEER_BURST {
                if audit.admit(Some(ip)) == Admission::Summarized {
                    summarized += 1;
                }
            }
        }
        let taken = audit.take();
        assert_eq!(taken.len(), MAX_PEERS + 1);
        assert_eq!(taken.iter().map(|(_, n)| n).sum::<u64>(), summarized);
        assert!(taken
            .iter()
            .any(|(peer, n)| peer == OTHER_PEERS && *n >= 50));
    }
}
