//! serde values over queues (being written).
