//! The smallest mulproc program: two processes talking through two queues.
//!
//! ```text
//! cargo run --example hello
//! ```
//!
//! The parent creates two queues, one per direction, and starts a second
//! copy of this program as the child with `mulproc::process::Child` (a new
//! process, not a `fork`), handing it the queues' names. The child opens
//! both and sends three messages; the parent checks and prints each one,
//! then tells the child to stop with `DIE`.
//!
//! Why two queues: a queue is many-to-many, so whoever receives from it may
//! get any message in it, even one it sent itself. One queue per direction
//! keeps each side's messages for the other.

use std::error::Error;
use std::time::Duration;

use mulproc::process::{self, Child};
use mulproc::{Message, Queue, QueueConfig, Request};

/// An application's own request code (codes below 16 are mulproc's).
const RESIZE: Request = Request::new(100);

fn main() -> Result<(), Box<dyn Error>> {
    if process::role().as_deref() == Some("child") {
        return child();
    }

    // 16 slots of up to 256 bytes each, under names unique to this run.
    // Dropping these creating handles removes the names from /dev/shm.
    let up = Queue::create_unique(QueueConfig::new(16, 256))?;
    let down = Queue::create_unique(QueueConfig::new(16, 256))?;
    println!(
        "parent {}: created {:?} and {:?}",
        std::process::id(),
        up.name(),
        down.name()
    );

    let mut child = Child::role("child")
        .queue("up", &up)
        .queue("down", &down)
        .die_with_parent(true)
        .spawn()?;

    // What the child sends, in order. A timeout rather than `recv()`, so
    // that a child that failed does not leave us waiting forever.
    let expected: [(Request, &[u8], Option<u32>); 3] = [
        (Request::DO, b"render frame 1", None),
        (RESIZE, b"640x480", Some(std::process::id())),
        (Request::FINISHED, b"frame 0 done", Some(std::process::id())),
    ];
    for (request, data, recipient) in expected {
        let m = up.recv_timeout(Duration::from_secs(10))?;
        println!(
            "parent: {:?} from pid {} for {}: {:?}",
            m.request,
            m.sender.unwrap_or(0),
            m.recipient
                .map_or("anyone".to_string(), |p| format!("pid {p}")),
            String::from_utf8_lossy(&m.data),
        );
        assert_eq!(
            (m.request, m.data.as_slice(), m.recipient),
            (request, data, recipient)
        );
        assert_eq!(m.sender, Some(child.pid()), "send stamps the sender's pid");
    }

    println!("parent: sending DIE to the child");
    down.send(Message::signal(Request::DIE).to(child.pid()))?;
    let status = child.wait()?;
    assert!(status.success(), "the child failed: {status}");
    assert!(up.is_empty() && down.is_empty());
    println!("parent: the child exited ({status}); the queues go when we exit");
    Ok(())
}

fn child() -> Result<(), Box<dyn Error>> {
    let me = std::process::id();
    let parent = process::parent_pid().ok_or("no parent pid")?;
    let up = process::open_queue("up")?;
    let down = process::open_queue("down")?;
    println!("child {me}: opened both queues by name");

    // A task for anyone, then two messages addressed to the parent.
    up.send(Message::new(Request::DO, b"render frame 1".as_slice()))?;
    up.send(Message::new(RESIZE, b"640x480".as_slice()).to(parent))?;
    up.send(Message::new(Request::FINISHED, b"frame 0 done".as_slice()).to(parent))?;
    println!("child {me}: sent 3 messages, waiting for orders");

    let m = down.recv_timeout(Duration::from_secs(30))?;
    assert_eq!(m.request, Request::DIE, "the parent sends nothing else");
    println!(
        "child {me}: received DIE from pid {}, exiting",
        m.sender.unwrap_or(0)
    );
    Ok(())
}
