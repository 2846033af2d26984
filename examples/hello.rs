//! The smallest mulproc program: two processes talking through two queues.
//!
//! ```text
//! cargo run --release --example hello
//! ```
//!
//! The parent creates two queues, one per direction, and starts a second
//! copy of this program as the child (a new process, not a `fork`). The
//! child opens both queues by name and sends a few messages; the parent
//! prints each one, then tells the child to stop with `DIE`.
//!
//! Why two queues: a queue is many-to-many, so whoever receives from it may
//! get any message in it, even one it sent itself. One queue per direction
//! keeps each side's messages for the other.

use std::error::Error;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mulproc::{Message, Queue, QueueConfig, Request};

/// An application's own request code (codes below 16 are mulproc's).
const RESIZE: Request = Request::new(100);

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, to_parent, to_child] = args.as_slice() {
        if role == "--child" {
            return child(to_parent, to_child);
        }
    }

    // Names unique to this run. The handles that create the queues remove
    // the names from /dev/shm when they are dropped.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let tag = format!("{}-{now}", std::process::id());
    let (up_name, down_name) = (format!("hello-{tag}-up"), format!("hello-{tag}-down"));
    // 16 slots of up to 256 bytes each.
    let to_parent = Queue::create(&up_name, QueueConfig::new(16, 256))?;
    let to_child = Queue::create(&down_name, QueueConfig::new(16, 256))?;
    println!(
        "parent {}: created queues {up_name:?} and {down_name:?}",
        std::process::id()
    );

    let mut child = Command::new(std::env::current_exe()?)
        .args(["--child", &up_name, &down_name])
        .spawn()?;

    for _ in 0..3 {
        // A timeout rather than `recv()`, so that a child that failed does
        // not leave us waiting forever.
        let m = to_parent.recv_timeout(Duration::from_secs(10))?;
        println!(
            "parent: received {:?} from pid {} for {}: {:?}",
            m.request,
            m.sender.unwrap_or(0),
            m.recipient
                .map_or("anyone".to_string(), |p| format!("pid {p}")),
            String::from_utf8_lossy(&m.data),
        );
    }

    println!("parent: sending DIE to the child");
    to_child.send(Message::signal(Request::DIE).to(child.id()))?;
    let status = child.wait()?;
    println!("parent: the child exited ({status}); the queues are removed as we exit");
    Ok(())
}

fn child(to_parent: &str, to_child: &str) -> Result<(), Box<dyn Error>> {
    let me = std::process::id();
    let parent = std::os::unix::process::parent_id();
    let to_parent = Queue::open(to_parent)?;
    let to_child = Queue::open(to_child)?;
    println!("child {me}: opened both queues by name");

    // A task for anyone, then two messages addressed to the parent.
    to_parent.send(Message::new(Request::DO, b"render frame 1".as_slice()))?;
    to_parent.send(Message::new(RESIZE, b"640x480".as_slice()).to(parent))?;
    to_parent.send(Message::new(Request::FINISHED, b"frame 0 done".as_slice()).to(parent))?;
    println!("child {me}: sent 3 messages, waiting for orders");

    loop {
        let m = to_child.recv_timeout(Duration::from_secs(30))?;
        if m.request == Request::DIE {
            println!(
                "child {me}: received DIE from pid {}, exiting",
                m.sender.unwrap_or(0)
            );
            return Ok(());
        }
        println!("child {me}: ignoring {m:?}");
    }
}
