//! Typed messages: serde values one way, plain-data (`bytemuck::Pod`)
//! values the other.
//!
//! ```text
//! cargo run --example typed_values --features serde
//! ```
//!
//! A payload is bytes; two ways to put values in it:
//!
//! * **serde** (feature `serde`): any `Serialize` value, encoded with
//!   postcard straight into the slot by `send_value`, decoded by
//!   `recv_value::<T>()`. Strings, vectors, enums, nesting: anything serde
//!   can describe, at the cost of an encode and a decode.
//! * **`Pod`**: a `#[repr(C)]` struct of plain numbers is its own encoding:
//!   `Message::pod` sends its bytes, `read_pod` copies them back (checking
//!   the length). Nothing to encode; only for fixed-size plain data.
//!
//! The parent sends orders as serde values; the child prices each and
//! answers with a `Pod` receipt, which the parent checks.

use std::error::Error;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use mulproc::process::{self, Child};
use mulproc::{Message, Queue, QueueConfig, Request};
use serde::{Deserialize, Serialize};

/// Parent → child, as a serde value.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Order {
    id: u64,
    customer: String,
    items: Vec<(String, u32)>,
    shipping: Shipping,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
enum Shipping {
    Standard,
    Express { days: u8 },
}

/// Child → parent, as plain bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
struct Receipt {
    order: u64,
    items: u32,
    total_cents: u32,
}

/// What the child charges: 250 cents an item, 1000 more for express.
fn price(order: &Order) -> Receipt {
    let items: u32 = order.items.iter().map(|(_, n)| n).sum();
    let express = matches!(order.shipping, Shipping::Express { .. });
    Receipt {
        order: order.id,
        items,
        total_cents: items * 250 + if express { 1000 } else { 0 },
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    if process::role().as_deref() == Some("pricer") {
        return child();
    }
    let orders = Queue::create_unique(QueueConfig::new(16, 256))?;
    let receipts = Queue::create_unique(QueueConfig::new(16, 64))?;
    let mut child = Child::role("pricer")
        .queue("orders", &orders)
        .queue("receipts", &receipts)
        .die_with_parent(true)
        .spawn()?;

    let sent = [
        Order {
            id: 1,
            customer: "Ada".into(),
            items: vec![("tea".into(), 2), ("scones".into(), 6)],
            shipping: Shipping::Standard,
        },
        Order {
            id: 2,
            customer: "Grace".into(),
            items: vec![("coffee".into(), 1)],
            shipping: Shipping::Express { days: 1 },
        },
    ];
    for order in &sent {
        // No recipient: whoever receives from the queue.
        orders.send_value(Request::DO, None, order)?;
    }
    orders.send(Message::signal(Request::DIE))?;

    for order in &sent {
        let m = receipts.recv_timeout(Duration::from_secs(10))?;
        let receipt: Receipt = m.read_pod()?;
        println!(
            "parent: order {} of {}: {receipt:?}",
            order.id, order.customer
        );
        assert_eq!(receipt, price(order));
    }
    assert!(child.wait()?.success());
    Ok(())
}

fn child() -> Result<(), Box<dyn Error>> {
    let orders = process::open_queue("orders")?;
    let receipts = process::open_queue("receipts")?;
    loop {
        // Look at the header first: the DIE carries no value.
        let m = orders.recv_timeout(Duration::from_secs(10))?;
        if m.request == Request::DIE {
            return Ok(());
        }
        let order: Order = m.value()?;
        println!("child: {order:?}");
        let receipt = price(&order);
        // A failed send gives the message back; it borrows `receipt`, so
        // drop it (`map`) before the error leaves this function.
        receipts
            .send(Message::pod(Request::FINISHED, &receipt))
            .map_err(|e| e.map(drop))?;
    }
}
