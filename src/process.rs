//! Starting child processes that open the parent's channels (being written).
