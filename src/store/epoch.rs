//! Ownership epochs, as the store hands them out: the high bits count a partition's
//! acquisitions (its *generation*), the low [`TAG_BITS`] are a random tag of the
//! acquisition that took it.
//!
//! Why a tag: taking a partition is not waited on by replicas (it happens inside the
//! rebalance callback), so a failover to a replica that missed the last acquisition hands
//! the same generation out again. Two owners would then hold one epoch, and the earlier
//! one's writes (a flush still in flight at its revocation, a zombie) would land over the
//! new owner's. With the tag, the two acquisitions differ but for a one-in-16.7-million
//! draw, and the earlier one is fenced as it should be.
//!
//! Why order by generation: a refusal with a *lower* generation than the one held is read
//! as a store that went back, and an equal or higher one as another owner. Comparing whole
//! epochs would take an equal generation with a lower tag for a store that went back, and
//! the instance would take the partition from its owner. A lower generation is another
//! owner only when the store went back by two generations or more (acquisitions are never
//! waited on by replicas, renewals only with `store.replica_acks`), and another instance
//! took the partition before this one wrote: this one then takes it back, and the other
//! lets it go until the next rebalance. That needs such a failover and an owner that
//! missed its revocation.
//!
//! Why 24 bits: Redis computes the next generation in Lua, whose numbers are doubles,
//! exact up to 2^53, which leaves 29 bits (536 million acquisitions and renewals of one
//! partition).
//! Epochs written before tags existed are small counters: generation 0, so the first
//! acquisition after an upgrade is still above them, and an instance of an earlier version
//! `INCR`s a tagged epoch within its generation (taken for another owner, as it is).

/// Bits of an epoch that tag its acquisition.
pub const TAG_BITS: u32 = 24;
/// One generation: what a renewal adds.
pub const GENERATION: u64 = 1 << TAG_BITS;
const TAG_MASK: u64 = GENERATION - 1;
/// The largest epoch the store hands out: Lua's numbers are exact below 2^53.
pub const MAX: u64 = (1 << 53) - 1;

/// How many times the partition was taken (or renewed) up to `epoch`.
pub fn generation(epoch: u64) -> u64 {
    epoch >> TAG_BITS
}

/// The epoch an acquisition with `tag` takes when the store holds `current` (0: never
/// taken); `None` past [`MAX`].
pub fn acquired_after(current: u64, tag: u64) -> Option<u64> {
    (generation(current) + 1)
        .checked_mul(GENERATION)
        .map(|next| next | (tag & TAG_MASK))
        .filter(|next| *next <= MAX)
}

/// The epoch a renewal of `held` moves to: the next generation, with the same tag (the
/// same acquisition goes on); `None` past [`MAX`].
pub fn renewed(held: u64) -> Option<u64> {
    held.checked_add(GENERATION).filter(|next| *next <= MAX)
}

/// A fresh acquisition's tag.
pub fn random_tag() -> u64 {
    rand::random::<u64>() & TAG_MASK
}

/// Whether a refusal naming `current` means the store went back below `held`, rather than
/// another owner taking the partition.
pub fn went_back(held: u64, current: u64) -> bool {
    generation(current) < generation(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acquisition_takes_the_next_generation_with_its_own_tag() {
        let first = acquired_after(0, 5).unwrap();
        assert_eq!((generation(first), first & TAG_MASK), (1, 5));
        let second = acquired_after(first, 7).unwrap();
        assert_eq!((generation(second), second & TAG_MASK), (2, 7));
        assert!(second > first);
        // An epoch from before tags (a plain counter) is generation 0.
        assert_eq!(acquired_after(41, 3), Some(GENERATION | 3));
        // A tag is only ever its low bits.
        assert_eq!(acquired_after(0, GENERATION | 9), Some(GENERATION | 9));
    }

    #[test]
    fn a_renewal_keeps_the_tag_and_takes_the_next_generation() {
        let held = acquired_after(0, 0xABCDE).unwrap();
        let next = renewed(held).unwrap();
        assert_eq!(generation(next), generation(held) + 1);
        assert_eq!(next & TAG_MASK, 0xABCDE);
    }

    #[test]
    fn epochs_stop_where_lua_stops_counting_exactly() {
        let last = MAX & !TAG_MASK;
        assert_eq!(acquired_after(last - GENERATION, TAG_MASK), Some(MAX));
        assert_eq!(acquired_after(last, 0), None);
        assert_eq!(renewed(MAX), None);
        assert_eq!(renewed(last - 1), Some(last - 1 + GENERATION));
    }

    #[test]
    fn only_a_lower_generation_is_a_store_that_went_back() {
        let held = acquired_after(GENERATION, 0x800000).unwrap();
        let same_generation_lower_tag = acquired_after(GENERATION, 1).unwrap();
        assert!(same_generation_lower_tag < held);
        assert!(!went_back(held, same_generation_lower_tag), "another owner");
        assert!(!went_back(held, renewed(held).unwrap()), "another owner");
        assert!(went_back(held, GENERATION), "the generation before");
        assert!(went_back(held, 0), "nothing left");
    }

    #[test]
    fn tags_are_drawn_below_their_bits() {
        assert!((0..1_000).all(|_| random_tag() <= TAG_MASK));
        assert!(
            (0..8)
                .map(|_| random_tag())
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 1
        );
    }
}
