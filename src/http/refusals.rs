//! The audit of refused requests, bounded per peer.
//!
//! CONTRACT §6 audits every 401 and 403. One audit record per refusal would let anyone who
//! can reach the port grow the audit chain (Redis, and the audit topic) without limit,
//! with no token at all. So each peer (its IP address, from the connection, never from a
//! header it could forge) gets its refusals audited one by one up to a rate; past it, they
//! are counted and written as summary records every minute: one per peer for the busiest,
//! one for all the others. Nothing is dropped unseen:
//! `warden_admin_refusals_summarized_total` counts what went into summaries. A caller with
//! a valid token is budgeted by its token instead of its peer (behind a proxy every caller
//! is one peer), and its summary names the token and counts each action it tried.

use std::collections::{BTreeMap, HashMap};
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
/// Refusals audited one by one per token (a caller with a valid token but not the role):
/// the same rate as a peer's. Tokens are few, so their summaries need no bound.
const PER_TOKEN_PER_SECOND: u32 = 1;
const PER_TOKEN_BURST: u32 = 60;
/// Peers whose summarized refusals are kept apart; the rest share one summary.
const MAX_PEERS: usize = 10_000;
/// Summaries written per round under their own peer's name (the busiest); the other
/// peers' counts go into one more: a round's records are bounded, whatever the number of
/// addresses the refusals came from.
const SUMMARIES_PER_ROUND: usize = 20;
/// The peer name of the shared summary.
pub const OTHER_PEERS: &str = "other";

/// One summary record's content: refusals of one peer, or of `peers` peers together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub peer: String,
    pub peers: u64,
    pub refused: u64,
}

/// What [`RefusalAudit::admit`] says about one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Audit it on its own.
    Audit,
    /// Counted for the peer's next summary.
    Summarized,
}

/// Refusals past their peer's (or token's) rate, to be written as summaries.
pub struct RefusalAudit {
    per_peer: DefaultKeyedRateLimiter<IpAddr>,
    all_peers: DefaultDirectRateLimiter,
    /// Per peer name: (peers it stands for, refusals).
    summarized: Mutex<HashMap<String, (u64, u64)>>,
    per_token: DefaultKeyedRateLimiter<String>,
    /// Per token name, per action: refusals past the token's rate.
    by_token: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
}

/// A token's refusals past its rate in one round, per action.
pub type TokenSummary = (String, BTreeMap<String, u64>);

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
            per_token: RateLimiter::keyed(quota(PER_TOKEN_PER_SECOND, PER_TOKEN_BURST)),
            by_token: Mutex::new(BTreeMap::new()),
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
        let entry = summarized.entry(name).or_insert((1, 0));
        entry.1 += 1;
        Admission::Summarized
    }

    /// Whether a refusal of a caller with a valid token is audited on its own: up to the
    /// token's own rate, whatever peer it comes from (a proxy makes every caller one
    /// peer); past it, counted per action for the token's summary, so the records name
    /// the token and what it tried.
    pub fn admit_token(&self, token: &str, action: &str) -> Admission {
        if self.per_token.check_key(&token.to_owned()).is_ok() {
            return Admission::Audit;
        }
        let mut by_token = self.by_token.lock();
        let actions = by_token.entry(token.to_owned()).or_default();
        *actions.entry(action.to_owned()).or_default() += 1;
        Admission::Summarized
    }

    /// The tokens' refusals summarized since the last call (one entry per token; tokens
    /// are few, from the configuration), and forgets them.
    pub fn take_tokens(&self) -> Vec<TokenSummary> {
        self.per_token.retain_recent();
        std::mem::take(&mut *self.by_token.lock())
            .into_iter()
            .collect()
    }

    /// A token's summary that could not be written: its counts join the next round's.
    pub fn give_back_token(&self, (token, actions): TokenSummary) {
        let mut by_token = self.by_token.lock();
        let kept = by_token.entry(token).or_default();
        for (action, n) in actions {
            *kept.entry(action).or_default() += n;
        }
    }

    /// The counts summarized since the last call, and forgets them: the
    /// [`SUMMARIES_PER_ROUND`] busiest peers on their own (most refusals first, then by
    /// name), then every other peer in one summary named [`OTHER_PEERS`]. The limiter
    /// forgets peers it has not seen for a while too.
    pub fn take(&self) -> Vec<Summary> {
        self.per_peer.retain_recent();
        let mut counts: Vec<(String, (u64, u64))> = self.summarized.lock().drain().collect();
        counts.sort_by(|(pa, (_, na)), (pb, (_, nb))| nb.cmp(na).then_with(|| pa.cmp(pb)));
        let mut out: Vec<Summary> = Vec::new();
        let mut others = Summary {
            peer: OTHER_PEERS.to_owned(),
            peers: 0,
            refused: 0,
        };
        for (peer, (peers, refused)) in counts {
            if peer != OTHER_PEERS && out.len() < SUMMARIES_PER_ROUND {
                out.push(Summary {
                    peer,
                    peers,
                    refused,
                });
            } else {
                others.peers += peers;
                others.refused += refused;
            }
        }
        if others.refused > 0 {
            out.push(others);
        }
        out
    }

    /// A summary taken by [`RefusalAudit::take`] that could not be written: its count joins
    /// the next round's.
    pub fn give_back(&self, summary: Summary) {
        let mut summarized = self.summarized.lock();
        let entry = summarized.entry(summary.peer).or_insert((0, 0));
        // The peers it stands for: at least as many as either round saw.
        entry.0 = entry.0.max(summary.peers);
        entry.1 += summary.refused;
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
        let want = Summary {
            peer: "10.0.0.9".to_owned(),
            peers: 1,
            refused: 200 - admitted as u64,
        };
        assert_eq!(taken, [want]);
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
        assert_eq!(taken.iter().map(|s| s.refused).sum::<u64>(), summarized);
        // A round writes the busiest peers' summaries and one for all the others: not
        // one per address (10,000 a minute from an IPv6 range would grow the chain).
        assert_eq!(taken.len(), SUMMARIES_PER_ROUND + 1);
        let others = taken.last().unwrap();
        assert_eq!(others.peer, OTHER_PEERS);
        assert!(others.peers > MAX_PEERS as u64 / 2, "{others:?}");
    }

    #[test]
    fn the_busiest_peers_are_summarized_on_their_own() {
        let audit = RefusalAudit::default();
        for n in 0..(SUMMARIES_PER_ROUND as u64 + 5) {
            audit.give_back(Summary {
                peer: format!("10.0.1.{n}"),
                peers: 1,
                refused: n + 1,
            });
        }
        let taken = audit.take();
        assert_eq!(taken.len(), SUMMARIES_PER_ROUND + 1);
        // Most refusals first; the five quietest share the last record.
        assert_eq!(taken[0].peer, format!("10.0.1.{}", SUMMARIES_PER_ROUND + 4));
        let others = &taken[SUMMARIES_PER_ROUND];
        assert_eq!((others.peers, others.refused), (5, 1 + 2 + 3 + 4 + 5));
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
    fn a_tokens_refusals_past_its_rate_are_summarized_per_action_under_its_name() {
        let audit = RefusalAudit::default();
        let admitted = (0..200)
            .filter(|_| audit.admit_token("bob", "kill_switch.create") == Admission::Audit)
            .count();
        assert!((PER_TOKEN_BURST as usize..200).contains(&admitted));
        assert_eq!(audit.admit_token("carol", "audit.read"), Admission::Audit);
        for _ in 0..3 {
            assert_eq!(
                audit.admit_token("bob", "enforcement.set"),
                Admission::Summarized
            );
        }
        let taken = audit.take_tokens();
        let want = BTreeMap::from([
            ("enforcement.set".to_owned(), 3),
            ("kill_switch.create".to_owned(), 200 - admitted as u64),
        ]);
        assert_eq!(taken, [("bob".to_owned(), want.clone())]);
        audit.give_back_token(("bob".to_owned(), want.clone()));
        assert_eq!(audit.take_tokens(), [("bob".to_owned(), want)]);
        assert!(audit.take_tokens().is_empty());
    }

    #[test]
    fn a_shared_summary_given_back_keeps_the_peers_it_stands_for() {
        let audit = RefusalAudit::default();
        audit.give_back(Summary {
            peer: OTHER_PEERS.into(),
            peers: 40,
            refused: 90,
        });
        let taken = audit.take();
        assert_eq!((taken[0].peers, taken[0].refused), (40, 90));
    }

    #[test]
    fn counts_given_back_join_the_next_summary() {
        let audit = RefusalAudit::default();
        let back = |refused| Summary {
            peer: "10.0.0.9".into(),
            peers: 1,
            refused,
        };
        audit.give_back(back(7));
        audit.give_back(back(3));
        assert_eq!(audit.take(), [back(10)]);
    }
}
