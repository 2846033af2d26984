//! The iterators over a pool's results: [`Results`], [`Map`],
//! [`MapUnordered`].

use std::fmt;
use std::sync::Arc;

use super::state::{Sink, State};
use super::{Backend, Codec, Completed, Pool, PoolError, TaskError, Wire, SEND_BATCH};

/// Results of submitted tasks as they finish; see [`Pool::results`].
pub struct Results<'p, In, Out, C: Codec, B: Backend> {
    pub(super) pool: &'p mut Pool<In, Out, C, B>,
}

impl<In, Out, C: Codec, B: Backend> fmt::Debug for Results<'_, In, Out, C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Results { .. }")
    }
}

impl<In: Wire<C>, Out: Wire<C>, C: Codec, B: Backend> Iterator for Results<'_, In, Out, C, B> {
    type Item = Result<Completed<Out>, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.pool.next_result().transpose()
    }
}

/// The iterator of [`Pool::map`]: results in input order.
pub struct Map<'p, In, Out, C: Codec, B: Backend, I> {
    pub(super) pool: &'p mut Pool<In, Out, C, B>,
    pub(super) inputs: I,
    pub(super) tag: u32,
    pub(super) more: bool,
    /// Topping the window up (from a chunk free to full).
    pub(super) filling: bool,
    pub(super) failed: bool,
}

impl<In, Out, C: Codec, B: Backend, I> fmt::Debug for Map<'_, In, Out, C, B, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl<In, Out, C, B, I> Iterator for Map<'_, In, Out, C, B, I>
where
    In: Wire<C>,
    Out: Wire<C>,
    C: Codec,
    B: Backend,
    I: Iterator<Item = In>,
{
    type Item = Result<Out, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let p = &mut *self.pool;
        loop {
            // Room in the window, counting results waiting for their turn.
            let room = |st: &State<Out, C>| {
                let waiting = match &st.sink {
                    Sink::Ordered { slots, .. } => slots.len(),
                    _ => 0,
                };
                st.window.saturating_sub(waiting.max(st.flights.len()))
            };
            // Top up once a chunk is free, then to the brim.
            self.filling |= self.more && room(&p.st) >= p.st.chunk();
            while self.filling {
                if room(&p.st) == 0 {
                    self.filling = false;
                    break;
                }
                let Some(input) = self.inputs.next() else {
                    self.more = false;
                    self.filling = false;
                    break;
                };
                let r = p.st.enqueue(&input, self.tag);
                let Sink::Ordered { slots, .. } = &mut p.st.sink else {
                    unreachable!("the map's sink")
                };
                match r {
                    Ok(_) => slots.push_back(None),
                    Err(e) => {
                        // Not sent: its place gets the error, under the id
                        // it would have had.
                        slots.push_back(Some(Err(e)));
                        p.st.next_id += 1;
                    }
                }
                if p.st.flights.unsent() >= SEND_BATCH {
                    break; // send these first
                }
            }
            let Sink::Ordered { slots, base, .. } = &mut p.st.sink else {
                unreachable!("the map's sink")
            };
            match slots.front_mut() {
                None if !self.more => return None,
                Some(s) if s.is_some() => {
                    let r = s.take();
                    slots.pop_front();
                    *base += 1;
                    return r;
                }
                _ => {}
            }
            // Send what was queued; wait only if nothing else can move.
            if let Err(e) = p.pump(!self.filling) {
                self.failed = true;
                return Some(Err(TaskError::Pool(Arc::new(e))));
            }
        }
    }
}

impl<In, Out, C: Codec, B: Backend, I> Drop for Map<'_, In, Out, C, B, I> {
    fn drop(&mut self) {
        // Results of this map still in flight are dropped when they come.
        self.pool.st.sink = Sink::None;
    }
}

/// The iterator of [`Pool::map_unordered`]: `(input index, result)` as
/// results come.
pub struct MapUnordered<'p, In, Out, C: Codec, B: Backend, I> {
    pub(super) pool: &'p mut Pool<In, Out, C, B>,
    pub(super) inputs: I,
    pub(super) tag: u32,
    pub(super) more: bool,
    /// Topping the window up (from a chunk free to full).
    pub(super) filling: bool,
    pub(super) failed: bool,
    /// Tasks of this map not yielded yet.
    pub(super) in_flight: usize,
    pub(super) index: usize,
}

impl<In, Out, C: Codec, B: Backend, I> fmt::Debug for MapUnordered<'_, In, Out, C, B, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapUnordered")
            .field("tag", &self.tag)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl<In, Out, C, B, I> Iterator for MapUnordered<'_, In, Out, C, B, I>
where
    In: Wire<C>,
    Out: Wire<C>,
    C: Codec,
    B: Backend,
    I: Iterator<Item = In>,
{
    type Item = (usize, Result<Out, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let p = &mut *self.pool;
        loop {
            let room = |st: &State<Out, C>, mine: usize| {
                st.window.saturating_sub(mine.max(st.flights.len()))
            };
            self.filling |= self.more && room(&p.st, self.in_flight) >= p.st.chunk();
            while self.filling {
                if room(&p.st, self.in_flight) == 0 {
                    self.filling = false;
                    break;
                }
                let Some(input) = self.inputs.next() else {
                    self.more = false;
                    self.filling = false;
                    break;
                };
                self.in_flight += 1;
                self.index += 1;
                if let Err(e) = p.st.enqueue(&input, self.tag) {
                    p.st.next_id += 1;
                    let Sink::Unordered { done, .. } = &mut p.st.sink else {
                        unreachable!("the map's sink")
                    };
                    done.push_back((self.index - 1, Err(e)));
                }
                if p.st.flights.unsent() >= SEND_BATCH {
                    break; // send these first
                }
            }
            let Sink::Unordered { done, .. } = &mut p.st.sink else {
                unreachable!("the map's sink")
            };
            if let Some(r) = done.pop_front() {
                self.in_flight -= 1;
                return Some(r);
            }
            if self.in_flight == 0 && !self.more {
                return None;
            }
            if let Err(e) = p.pump(!self.filling) {
                self.failed = true;
                return Some((usize::MAX, Err(TaskError::Pool(Arc::new(e)))));
            }
        }
    }
}

impl<In, Out, C: Codec, B: Backend, I> Drop for MapUnordered<'_, In, Out, C, B, I> {
    fn drop(&mut self) {
        self.pool.st.sink = Sink::None;
    }
}
