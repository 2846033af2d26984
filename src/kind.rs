//! What a segment holds. Its own module, so that the errors can name it
//! without depending on the layout (whose checks report errors); the
//! layout's facts about each kind are in `layout`.

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelKind {
    /// A [`Queue`](crate::Queue): one MPMC ring.
    Queue = 1,
    /// A [`Pipe`](crate::Pipe): two SPSC rings, one per direction.
    Pipe = 2,
}
