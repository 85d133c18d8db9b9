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

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

/// Refusals audited one by one per peer: a sustained rate and a burst.
const PER_PEER_PER_SECOND: u32 = 1;
const PER_PEER_BURST: u32 = 60;
/// And for all peers together: many addresses (an IPv6 range) cannot add up to an
/// unbounded chain.
const ALL_PEERS_PER_SECOND: u32 = 10;
const ALL_PEERS_BURST: u32 = 600;
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
    per_peer: DefaultKeyedRateLimiter<IpAddr>,
    all_peers: DefaultDirectRateLimiter,
    summarized: Mutex<HashMap<String, u64>>,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

impl Default for RefusalAudit {
    fn default() -> Self {
        RefusalAudit {
            per_peer: RateLimiter::keyed(quota(PER_PEER_PER_SECOND, PER_PEER_BURST)),
            all_peers: RateLimiter::direct(quota(ALL_PEERS_PER_SECOND, ALL_PEERS_BURST)),
            summarized: Mutex::new(HashMap::new()),
        }
    }
}

impl RefusalAudit {
    /// Whether a refusal of `peer` (unknown: one shared key) is audited on its own.
    pub fn admit(&self, peer: Option<IpAddr>) -> Admission {
        let peer = peer.map(network_of);
        let key = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if self.per_peer.check_key(&key).is_ok() && self.all_peers.check().is_ok() {
            return Admission::Audit;
        }
        let mut summarized = self.summarized.lock();
        let name = match peer.map(|ip| ip.to_string()) {
            Some(ip) if summarized.len() < MAX_PEERS || summarized.contains_key(&ip) => ip,
            _ => OTHER_PEERS.to_owned(),
        };
        *summarized.entry(name).or_default() += 1;
        Admission::Summarized
    }

    /// The counts summarized since the last call, per peer (sorted), and forgets them;
    /// the limiter forgets peers it has not seen for a while too.
    pub fn take(&self) -> Vec<(String, u64)> {
        self.per_peer.retain_recent();
        let mut counts: Vec<(String, u64)> = self.summarized.lock().drain().collect();
        counts.sort();
        counts
    }

    /// Counts taken by [`RefusalAudit::take`] whose summary could not be written: they
    /// join the next one.
    pub fn give_back(&self, peer: String, count: u64) {
        *self.summarized.lock().entry(peer).or_default() += count;
    }
}

/// The unit refusals are counted by: an IPv4 address, or an IPv6 /64 (one host's usual
/// allocation, which it can spread its requests over).
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
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
        for n in 0..(MAX_PEERS as u32 + 2 * ALL_PEERS_BURST) {
            let ip = IpAddr::from(n.to_be_bytes());
            if audit.admit(Some(ip)) == Admission::Summarized {
                summarized += 1;
            }
        }
        // Past the all-peers burst (and what refilled meanwhile), each new address is
        // summarized: under its own name up to the bound, then under one.
        assert!(summarized > (MAX_PEERS / 2) as u64, "{summarized}");
        let taken = audit.take();
        assert_eq!(taken.iter().map(|(_, n)| n).sum::<u64>(), summarized);
        assert_eq!(taken.len(), MAX_PEERS + 1);
        assert!(taken.iter().any(|(peer, n)| peer == OTHER_PEERS && *n >= 1));
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64_and_a_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(network_of(a), network_of(b));
        assert_ne!(network_of(a), network_of(other));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(network_of(mapped), "10.0.0.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn counts_given_back_join_the_next_summary() {
        let audit = RefusalAudit::default();
        audit.give_back("10.0.0.9".into(), 7);
        audit.give_back("10.0.0.9".into(), 3);
        assert_eq!(audit.take(), [("10.0.0.9".to_owned(), 10)]);
    }
}
