//! Claims' owner words: who (handle entry and its generation) holds a
//! slot's claim, in which role, for which ticket.

use crate::layout::MAX_HANDLES;

/// Owner word of a withheld slot whose claimant had not signed when it
/// was fenced: names no handle (entry 0), carries the fenced ticket's low
/// 32 bits.
pub(crate) const FENCED_MARK: u64 = 1 << 47;
/// Owner-word generation bits.
pub(super) const GEN_BITS: u32 = 14;
pub(crate) const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

/// What a claimant is doing with a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Producer: claimed, writing, not yet published.
    Send = 1,
    /// Receiver: holds a published message.
    Recv = 2,
    /// A sender moving a message over read slots (both slots).
    Move = 3,
}

/// A registered handle: its entry and the generation it owns it under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HandleId {
    pub index: u16,
    pub generation: u32,
}

/// The owner word of a claim: `(entry + 1) << 48 | role << 46 |
/// (generation mod 2^14) << 32 | ticket mod 2^32`. Zero names nobody.
#[inline]
pub(crate) fn owner_word(id: HandleId, role: Role, t: u64) -> u64 {
    (u64::from(id.index) + 1) << 48
        | (role as u64) << 46
        | u64::from(id.generation & GEN_MASK) << 32
        | (t & 0xFFFF_FFFF)
}

/// What an owner word says: entry, generation (low bits), role, ticket (low
/// 32 bits); `None` if it names no entry.
pub(crate) fn parse(word: u64) -> Option<(usize, u32, u64, u32)> {
    let entry = (word >> 48) as usize;
    if entry == 0 || entry > MAX_HANDLES {
        return None;
    }
    let generation = ((word >> 32) as u32) & GEN_MASK;
    Some((entry - 1, generation, (word >> 46) & 3, word as u32))
}

/// The handle an owner word names, if it names a claim of one of `roles`
/// on `t`.
pub(super) fn named(word: u64, roles: &[Role], t: u64) -> Option<(usize, u32)> {
    let (entry, generation, role, t_low) = parse(word)?;
    (t_low == t as u32 && roles.iter().any(|r| *r as u64 == role)).then_some((entry, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: HandleId = HandleId {
        index: 5,
        generation: 3,
    };

    #[test]
    fn owner_word_round_trips() {
        for (id, role, t) in [
            (ME, Role::Send, 0),
            (ME, Role::Recv, 0xFFFF_FFFF),
            (
                HandleId {
                    index: 0,
                    generation: 0,
                },
                Role::Move,
                1 << 40,
            ),
            (
                HandleId {
                    index: (MAX_HANDLES - 1) as u16,
                    generation: u32::MAX,
                },
                Role::Recv,
                u64::MAX >> 3,
            ),
        ] {
            let w = owner_word(id, role, t);
            assert_eq!(
                parse(w),
                Some((
                    id.index as usize,
                    id.generation & GEN_MASK,
                    role as u64,
                    t as u32
                )),
                "{w:#x}"
            );
            assert_eq!(
                named(w, &[role], t),
                Some((id.index as usize, id.generation & GEN_MASK))
            );
        }
    }

    #[test]
    fn named_checks_role_and_ticket() {
        let w = owner_word(ME, Role::Send, 77);
        assert_eq!(named(w, &[Role::Recv, Role::Move], 77), None);
        assert_eq!(named(w, &[Role::Send], 78), None);
        // The low 32 bits of the ticket only: a claim 2^32 tickets on reads
        // the same (never both live: the ring is at most 2^24 slots).
        assert_eq!(named(w, &[Role::Send], 77 + (1 << 32)), Some((5, 3)));
        // Generations wrap at 2^14.
        let w = owner_word(
            HandleId {
                index: 5,
                generation: 3 + (1 << GEN_BITS),
            },
            Role::Send,
            77,
        );
        assert_eq!(named(w, &[Role::Send], 77), Some((5, 3)));
    }

    #[test]
    fn words_naming_no_entry_parse_as_nobody() {
        assert_eq!(parse(0), None);
        // Entry field beyond the table (entry + 1 > MAX_HANDLES).
        assert_eq!(parse(((MAX_HANDLES as u64) + 1) << 48), None);
        // The fenced mark's entry field is 0: it names no handle.
        assert_eq!(parse(FENCED_MARK | 1234), None);
    }
}
