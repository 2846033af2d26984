//! A duplex pipe between a parent and its child: requests one way,
//! responses the other, and the end of the conversation seen as
//! `Disconnected`.
//!
//! ```text
//! cargo run --example pipe
//! ```
//!
//! A `Pipe` joins exactly two ends, each of which sends to the other: the
//! parent creates it (the parent end) and starts a child with
//! `mulproc::process::Child`, which opens the child end. Unlike a queue, a
//! message never comes back to the end that sent it, so one pipe serves
//! both directions.
//!
//! The parent sends words, the child answers each one upper-cased, and
//! after `FINISHED` ("no more requests") the child closes its end. The
//! parent reads every answer still waiting, then its next receive says
//! `Disconnected`: the other end is gone and nothing can come any more
//! (the same happens if the child dies).

use std::error::Error;
use std::time::Duration;

use mulproc::process::{self, Child};
use mulproc::{Message, Pipe, PipeConfig, RecvTimeoutError, Request};

/// The words the parent asks about.
const WORDS: [&str; 4] = ["shared", "memory", "duplex", "pipe"];
/// How long either side waits for the other before giving up.
const PATIENCE: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn Error>> {
    if process::role().as_deref() == Some("upper") {
        return child();
    }

    // 8 slots per direction of up to 64 bytes; the creating end removes the
    // name when dropped.
    let pipe = Pipe::create_unique(PipeConfig::new(8, 64))?;
    let mut child = Child::role("upper")
        .pipe("calc", &pipe)
        .die_with_parent(true)
        .spawn()?;

    // All requests first: they wait in the pipe until the child takes them,
    // and its answers wait in the other direction until we take them.
    for word in WORDS {
        pipe.send(Message::new(Request::DO, word.as_bytes()))?;
    }
    pipe.send(Message::signal(Request::FINISHED))?;
    println!("parent: sent {} requests and FINISHED", WORDS.len());

    for word in WORDS {
        let answer = pipe.recv_timeout(PATIENCE)?;
        let text = String::from_utf8(answer.data)?;
        println!("parent: {word:?} -> {text:?}");
        assert_eq!(answer.request, Request::FINISHED);
        assert_eq!(text, word.to_uppercase());
        assert_eq!(answer.sender, Some(child.pid()));
    }

    // The child has closed its end: nothing more can come.
    match pipe.recv_timeout(PATIENCE) {
        Err(RecvTimeoutError::Disconnected) => println!("parent: the child closed its end"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let status = child.wait()?;
    assert!(status.success(), "the child failed: {status}");
    println!("parent: the child exited ({status})");
    Ok(())
}

fn child() -> Result<(), Box<dyn Error>> {
    let pipe = process::open_pipe("calc")?;
    loop {
        let request = pipe.recv_timeout(PATIENCE)?;
        if request.request == Request::FINISHED {
            break;
        }
        let answer = std::str::from_utf8(&request.data)?.to_uppercase();
        pipe.send(Message::new(Request::FINISHED, answer.into_bytes()))?;
    }
    println!(
        "child {}: answered everything, closing my end",
        std::process::id()
    );
    // Dropping the end closes it too; `close` says so explicitly.
    pipe.close()?;
    Ok(())
}
