//! Copies of waiting messages, taken without claiming them.

use super::read::{self, View};
use super::{Anomaly, InspectError, SCAN_LIMIT};
use crate::layout::ChannelKind;
use crate::message::{decode_recipient, Header, Request};
use crate::spsc::SlotState;
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};

/// A copy of one waiting message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeekedMessage {
    /// Its ticket (position in the ring's sequence).
    pub ticket: u64,
    /// For a pipe, the direction: 0 parent to child, 1 child to parent.
    pub direction: Option<usize>,
    /// Request, sender, recipient.
    pub header: Header,
    /// Its payload length.
    pub len: u32,
    /// The first bytes of the payload (at most the `max_bytes` asked for).
    pub data: Vec<u8>,
}

impl PeekedMessage {
    /// True if `data` holds only the first bytes of the payload.
    pub fn is_truncated(&self) -> bool {
        self.data.len() < self.len as usize
    }
}

/// What [`peek`] found.
#[derive(Clone, Debug)]
pub struct Peek {
    /// Queue or pipe.
    pub kind: ChannelKind,
    /// The messages, oldest first (a pipe's direction 0, then 1).
    pub messages: Vec<PeekedMessage>,
    /// Messages that were received (or their slot reused) while they were
    /// being copied, and are left out.
    pub changed: usize,
    /// What no honest run produces, seen on the way.
    pub anomalies: Vec<Anomaly>,
}

/// Copies up to `max_messages` of the messages waiting in segment `name`
/// (per direction, for a pipe), oldest first, with the first `max_bytes`
/// bytes of each payload. Takes nothing and changes nothing: the segment
/// is mapped read-only, and each copy is checked against the slot's
/// sequence word before and after, so a message received or overwritten
/// meanwhile is left out (counted in [`Peek::changed`]) rather than shown
/// torn. Messages held by a receiver are not waiting, and not shown.
///
/// Fails with [`InspectError::Unreadable`] on a segment whose layout cannot
/// be trusted.
pub fn peek(name: &str, max_messages: usize, max_bytes: usize) -> Result<Peek, InspectError> {
    let opened = read::open(name)?;
    let view = opened.view.map_err(|problem| InspectError::Unreadable {
        name: name.to_owned(),
        problem,
    })?;
    let mut peek = Peek {
        kind: view.geo.kind,
        messages: Vec::new(),
        changed: 0,
        anomalies: Vec::new(),
    };
    match view.geo.kind {
        ChannelKind::Queue => peek_queue(&view, max_messages, max_bytes, &mut peek),
        ChannelKind::Pipe => {
            for dir in 0..2 {
                peek_pipe(&view, dir, max_messages, max_bytes, &mut peek);
            }
        }
    }
    Ok(peek)
}

/// One slot's words and payload, for [`copy_checked`].
struct SlotView<'a> {
    seq: &'a AtomicU64,
    request: &'a AtomicU32,
    sender: &'a AtomicU32,
    recipient: &'a AtomicU32,
    len: &'a AtomicU32,
    payload: *const u8,
    ticket: u64,
}

impl<'a> SlotView<'a> {
    fn of_queue(view: &'a View, t: u64) -> SlotView<'a> {
        let idx = (t & (u64::from(view.geo.capacity) - 1)) as usize;
        let s = &view.slots()[idx];
        SlotView {
            seq: &s.seq,
            request: &s.header.request,
            sender: &s.header.sender,
            recipient: &s.header.recipient,
            len: &s.header.len,
            payload: view.queue_payload(idx),
            ticket: t,
        }
    }

    fn of_pipe(view: &'a View, dir: usize, t: u64) -> SlotView<'a> {
        let idx = (t & (u64::from(view.geo.capacity) - 1)) as usize;
        let s = view.pipe_slot(dir, idx);
        SlotView {
            seq: &s.seq,
            request: &s.header.request,
            sender: &s.header.sender,
            recipient: &s.header.recipient,
            len: &s.header.len,
            payload: view.pipe_payload(dir, idx),
            ticket: t,
        }
    }

    fn published(&self) -> bool {
        self.seq.load(Ordering::Relaxed) == self.ticket.wrapping_add(1)
    }
}

/// Copies the message of `slot` if its sequence word says published
/// before and after the copy (a seqlock read: receivers write no more than
/// the word, a pipe's to mark the slot freed, and a producer changes the
/// word before it rewrites one).
fn copy_checked(
    slot: &SlotView<'_>,
    max_payload: u32,
    max_bytes: usize,
    peek: &mut Peek,
) -> Option<PeekedMessage> {
    if !slot.published() {
        return None;
    }
    // Acquire: pairs with the publisher's Release; header and payload are
    // no older than the word.
    fence(Ordering::Acquire);
    let header = Header {
        request: Request::new(slot.request.load(Ordering::Relaxed)),
        sender: slot.sender.load(Ordering::Relaxed),
        recipient: decode_recipient(slot.recipient.load(Ordering::Relaxed)),
    };
    let len = slot.len.load(Ordering::Relaxed);
    if len > max_payload {
        peek.anomalies.push(Anomaly::Length {
            ticket: slot.ticket,
            len,
            max: max_payload,
        });
        return None;
    }
    let n = (len as usize).min(max_bytes);
    let mut data = vec![0u8; n];
    // SAFETY: `n <= len <= max_payload`, so the source lies inside the
    // slot's payload area of the read-only mapping; the destination is our
    // own buffer of `n` bytes. A concurrent rewrite of the source is caught
    // by the second look at the sequence word below, and the bytes are
    // then dropped.
    unsafe { crate::copy::copy_bytes(slot.payload, data.as_mut_ptr(), n) };
    // Acquire: the copy above is done before the word is looked at again.
    fence(Ordering::Acquire);
    if !slot.published() {
        peek.changed += 1;
        return None;
    }
    Some(PeekedMessage {
        ticket: slot.ticket,
        direction: None,
        header,
        len,
        data,
    })
}

fn peek_queue(view: &View, max_messages: usize, max_bytes: usize, peek: &mut Peek) {
    let (head, tail, bad) = view.queue_window();
    if let Some(a) = bad {
        peek.anomalies.push(a);
        return;
    }
    // A ring holds at most `capacity` tickets (more only in a pair read
    // while `head` kept moving).
    let window = (tail - head)
        .min(u64::from(view.geo.capacity))
        .min(SCAN_LIMIT);
    for t in head..head + window {
        if peek.messages.len() >= max_messages {
            break;
        }
        let slot = SlotView::of_queue(view, t);
        if let Some(m) = copy_checked(&slot, view.geo.max_payload, max_bytes, peek) {
            peek.messages.push(m);
        }
    }
}

fn peek_pipe(view: &View, dir: usize, max_messages: usize, max_bytes: usize, peek: &mut Peek) {
    let (published, _tail) = view.pipe_positions(dir);
    let head = view.pipe_exact_head(dir, published);
    let cap = u64::from(view.geo.capacity);
    let mut found = 0;
    // The receiver takes messages in order from `head` (passing those it
    // holds and freed out of order); the first slot neither published nor
    // freed for its ticket ends what is waiting.
    for t in head..head.saturating_add(cap) {
        if found >= max_messages {
            break;
        }
        let slot = SlotView::of_pipe(view, dir, t);
        let word = slot.seq.load(Ordering::Relaxed);
        if SlotState::of(word, t, cap) == SlotState::Freed {
            continue;
        }
        match copy_checked(&slot, view.geo.max_payload, max_bytes, peek) {
            Some(m) => {
                found += 1;
                peek.messages.push(PeekedMessage {
                    direction: Some(dir),
                    ..m
                });
            }
            None => break,
        }
    }
}
