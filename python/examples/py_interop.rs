//! The Rust end of the Python interop test (`python/tests/test_interop.py`):
//! a Rust process and a Python process share one mulproc queue, each
//! receiving the messages addressed to it.
//!
//! ```sh
//! py_interop QUEUE_NAME PYTHON_PID
//! ```
//!
//! It greets the Python process with one raw-bytes message (request 100)
//! and one JSON value (request 101), then answers what it receives until
//! `DIE`: raw bytes come back reversed (100), a JSON value comes back as
//! `{"echo": value, "from": "rust"}` (101), and a `DO` task (what
//! `mulproc.pymulproc` sends for `REQ_DO`, with JSON data) comes back as
//! `FINISHED` with `{"done": data}`. Every message received is marked
//! done, so the Python side can `join()` the queue.

use std::error::Error;

use mulproc::{Message, Queue, Request};
use serde_json::{json, Value};

/// Raw bytes, as `Queue.put_message(data, request=100)` sends them.
const RAW: u32 = 100;
/// A JSON document (`json.dumps(...).encode()`).
const JSON: u32 = 101;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, name, py_pid] = args.as_slice() else {
        return Err("usage: py_interop QUEUE_NAME PYTHON_PID".into());
    };
    let py_pid: u32 = py_pid.parse()?;
    let q = Queue::open(name)?;
    let me = q.pid();
    let reply =
        |request: u32, data: Vec<u8>| q.send(Message::new(Request::new(request), data).to(py_pid));

    reply(RAW, b"\x00\x01rust\xff".to_vec()).map_err(|e| e.to_string())?;
    reply(
        JSON,
        serde_json::to_vec(&json!({"hello": "from rust", "pid": me}))?,
    )
    .map_err(|e| e.to_string())?;

    loop {
        let m = q.recv_for_me()?;
        let stop = m.request == Request::DIE;
        match m.request {
            Request::DIE => {}
            Request::DO => {
                let data: Value = if m.data.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&m.data)?
                };
                let answer = serde_json::to_vec(&json!({"done": data}))?;
                q.send(Message::new(Request::FINISHED, answer).to(py_pid))
                    .map_err(|e| e.to_string())?;
            }
            r if r.code() == RAW => {
                let mut data = m.data;
                data.reverse();
                reply(RAW, data).map_err(|e| e.to_string())?;
            }
            r if r.code() == JSON => {
                let value: Value = serde_json::from_slice(&m.data)?;
                let answer = serde_json::to_vec(&json!({"echo": value, "from": "rust"}))?;
                reply(JSON, answer).map_err(|e| e.to_string())?;
            }
            other => {
                return Err(format!("unexpected request {other:?} from pid {:?}", m.sender).into())
            }
        }
        q.task_done()?;
        if stop {
            return Ok(());
        }
    }
}
