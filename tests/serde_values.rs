//! serde values as payloads (feature `serde`): round trips of nested
//! structures across real processes, values too large for the queue,
//! values that cannot be encoded, and garbage payloads, which must give a
//! typed decode error and never a panic.
#![cfg(feature = "serde")]

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mulproc::process::{self, Child, ChildProcess};
use mulproc::{
    encoded_len, DecodeError, EncodeError, Message, Queue, QueueConfig, RecvValueError, Request,
    SendRetry, TryRecvError, ValueSendError,
};
use serde::{Deserialize, Serialize};

const PATIENCE: Duration = Duration::from_secs(30);

// --------------------------------------------------------------- values ---

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Shape {
    Point,
    Circle { r: f64 },
    Poly(Vec<(i32, i32)>),
    Named(String, u8),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Item {
    sku: String,
    qty: u32,
    price_cents: i64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Order {
    id: u64,
    customer: String,
    items: Vec<Item>,
    note: Option<String>,
    tags: BTreeMap<String, Vec<u16>>,
    stock: HashMap<u32, i64>,
    shape: Shape,
    seen_by: Option<u32>,
    parent: Option<Box<Order>>,
}

/// What the echo child receives: an order to stamp, or the end.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Task {
    Stamp(Order),
    Stop,
}

fn order(id: u64) -> Order {
    let shape = match id % 4 {
        0 => Shape::Point,
        1 => Shape::Circle { r: id as f64 / 3.0 },
        2 => Shape::Poly((0..id as i32).map(|i| (i, -i * 1000)).collect()),
        _ => Shape::Named(format!("shape-ü-{id}"), id as u8),
    };
    Order {
        id,
        customer: format!("customer {id} — “quoted” ✓"),
        items: (0..id % 5)
            .map(|i| Item {
                sku: format!("SKU-{id}-{i}"),
                qty: (i as u32 + 1) * 7,
                price_cents: -(i as i64) * 12_345,
            })
            .collect(),
        note: (id % 2 == 0).then(|| "leave at the door".repeat(id as usize % 3)),
        tags: (0..id % 3)
            .map(|i| (format!("tag{i}"), vec![i as u16; i as usize + 1]))
            .collect(),
        stock: (0..id % 4)
            .map(|i| (i as u32 * 1_000_003, i as i64 - 2))
            .collect(),
        shape,
        seen_by: None,
        parent: (id % 3 == 0).then(|| {
            Box::new(Order {
                parent: None,
                ..order(id + 1)
            })
        }),
    }
}

// ------------------------------------------------------------- helpers ---

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("sv-{}-{nanos}-{tag}", std::process::id())
}

/// A queue under a unique name, removed when the handle drops.
fn queue(tag: &str, capacity: u32, max_payload: u32) -> Queue {
    Queue::create(&unique(tag), QueueConfig::new(capacity, max_payload)).expect("create queue")
}

fn child(role: &str) -> Child {
    Child::role(role)
        .inherit_args(false)
        .args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .stdout(Stdio::null())
}

// ---------------------------------------------------------- child side ---

#[test]
fn child_main() {
    let Some(role) = process::role() else {
        return;
    };
    let code = match role.as_str() {
        "echo" => role_echo(),
        other => {
            eprintln!("unknown role {other:?}");
            2
        }
    };
    std::process::exit(code);
}

/// Decodes each task in place, stamps the order with its pid and sends it
/// back to the parent, until `Task::Stop`.
fn role_echo() -> i32 {
    let tasks = process::open_queue("tasks").expect("open tasks");
    let mut results = process::open_queue("results").expect("open results");
    results.set_send_retry(SendRetry {
        tries: 300,
        wait: Duration::from_millis(100),
    });
    let parent = process::parent_pid();
    loop {
        let guard = tasks.recv_ref_timeout(PATIENCE).expect("task");
        let task: Task = guard.value().expect("decode task");
        drop(guard);
        match task {
            Task::Stop => return 0,
            Task::Stamp(mut o) => {
                o.seen_by = Some(std::process::id());
                results
                    .send_value(Request::FINISHED, parent, &o)
                    .expect("send order back");
            }
        }
    }
}

// --------------------------------------------------------- parent side ---

#[test]
fn nested_values_round_trip_across_processes() {
    let tasks = queue("tasks", 16, 4096);
    let results = queue("results", 16, 4096);
    let mut echo: ChildProcess = child("echo")
        .queue("tasks", &tasks)
        .queue("results", &results)
        .spawn()
        .expect("spawn echo");
    let n = 40u64;
    let mut sent = 0;
    let mut got = 0;
    // Interleave, so that neither queue has to hold everything.
    while got < n {
        if sent < n {
            let task = Task::Stamp(order(sent));
            let r = if sent % 2 == 0 {
                tasks.send_value(Request::DO, None, &task)
            } else {
                tasks.try_send_value(Request::DO, None, &task)
            };
            match r {
                Ok(()) => sent += 1,
                Err(ValueSendError::Full) => {}
                Err(e) => panic!("send order {sent}: {e}"),
            }
        }
        match results.recv_value_timeout::<Order>(Duration::from_millis(if sent < n {
            1
        } else {
            30_000
        })) {
            Ok((header, o)) => {
                assert_eq!(header.request, Request::FINISHED);
                assert_eq!(header.sender, echo.pid());
                assert_eq!(header.recipient, Some(std::process::id()));
                let expected = Order {
                    seen_by: Some(echo.pid()),
                    ..order(o.id)
                };
                assert_eq!(o, expected);
                assert_eq!(o.id, got, "orders come back in order");
                got += 1;
            }
            Err(RecvValueError::Timeout) if sent < n => {}
            Err(e) => panic!("receive order {got}: {e}"),
        }
    }
    tasks.send_value(Request::DO, None, &Task::Stop).unwrap();
    let st = echo.wait_timeout(PATIENCE).unwrap().expect("echo exits");
    assert!(st.success());
}

#[test]
fn too_large_values_are_refused_with_their_length_and_nothing_is_delivered() {
    let mut q = queue("large", 4, 32);
    q.set_send_retry(SendRetry {
        tries: 1,
        wait: Duration::from_millis(5),
    });
    // A string of n chars encodes as 1 length byte + n bytes (n < 128).
    let fits = "x".repeat(31);
    let over = "x".repeat(32);
    assert_eq!(encoded_len(&fits).unwrap(), 32);
    assert_eq!(
        q.try_send_value(Request::DO, None, &over),
        Err(ValueSendError::TooLarge { len: 33, max: 32 })
    );
    assert_eq!(
        q.send_value(Request::DO, None, &order(7)).unwrap_err(),
        ValueSendError::TooLarge {
            len: encoded_len(&order(7)).unwrap(),
            max: 32
        }
    );
    // The refused reservation left only a tombstone: no message, and
    // nothing outstanding for join.
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
    q.join_timeout(Duration::from_millis(100)).unwrap();

    q.try_send_value(Request::DO, None, &fits).unwrap();
    let (_, back) = q.recv_value::<String>().unwrap();
    assert_eq!(back, fits);

    // Full is told apart from too large, by both sends.
    for _ in 0..4 {
        q.try_send_value(Request::DO, None, &1u8).unwrap();
    }
    assert_eq!(
        q.try_send_value(Request::DO, None, &1u8),
        Err(ValueSendError::Full)
    );
    let full = q.send_value(Request::DO, None, &1u8).unwrap_err();
    assert!(full.is_full());
    assert_eq!(
        q.send_value(Request::DO, None, &over),
        Err(ValueSendError::TooLarge { len: 33, max: 32 })
    );
}

/// A value whose `Serialize` fails, and one with a sequence of unknown
/// length.
struct Refuses;
impl Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("no"))
    }
}
struct NoLength;
impl Serialize for NoLength {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(None)?;
        seq.serialize_element(&1u8)?;
        seq.end()
    }
}

#[test]
fn values_that_cannot_be_encoded_give_typed_errors() {
    let q = queue("encode", 4, 64);
    let refused = ValueSendError::Encode(EncodeError::Rejected);
    assert_eq!(
        q.try_send_value(Request::DO, None, &Refuses),
        Err(refused.clone())
    );
    assert_eq!(
        q.send_value(Request::DO, None, &Refuses),
        Err(refused.clone())
    );
    assert_eq!(
        q.try_send_value(Request::DO, None, &NoLength),
        Err(ValueSendError::Encode(EncodeError::LengthUnknown))
    );
    assert_eq!(encoded_len(&Refuses), Err(EncodeError::Rejected));
    assert_eq!(
        Message::with_value(Request::DO, &NoLength).unwrap_err(),
        EncodeError::LengthUnknown
    );
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
    q.join_timeout(Duration::from_millis(100)).unwrap();
}

/// Sends `bytes` raw and decodes them as `T` through `recv_value`.
fn decode_raw<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    q: &Queue,
    bytes: &[u8],
) -> DecodeError {
    q.try_send(Message::new(Request::DO, bytes)).unwrap();
    match q.recv_value_timeout::<T>(Duration::from_secs(1)) {
        Err(RecvValueError::Decode { header, source }) => {
            assert_eq!(header.sender, std::process::id());
            source
        }
        other => panic!("{bytes:?} as {}: {other:?}", std::any::type_name::<T>()),
    }
}

#[test]
fn garbage_payloads_are_decode_errors_not_panics() {
    let q = queue("garbage", 8, 256);
    let good = postcard_bytes(&order(5));

    assert_eq!(decode_raw::<bool>(&q, &[2]), DecodeError::BadEncoding);
    assert_eq!(
        decode_raw::<String>(&q, &[2, 0xC3, 0x28]),
        DecodeError::BadEncoding
    );
    assert_eq!(decode_raw::<u32>(&q, &[0xFF; 6]), DecodeError::BadEncoding);
    assert_eq!(
        decode_raw::<Option<u8>>(&q, &[7, 0]),
        DecodeError::BadEncoding
    );
    assert_eq!(decode_raw::<u64>(&q, &[]), DecodeError::UnexpectedEnd);
    assert_eq!(
        decode_raw::<Order>(&q, &good[..good.len() - 1]),
        DecodeError::UnexpectedEnd
    );
    let mut long = good.clone();
    long.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        decode_raw::<Order>(&q, &long),
        DecodeError::TrailingBytes(3)
    );
    // Shape has 4 variants; index 9 is refused by the derived Deserialize.
    assert_eq!(decode_raw::<Shape>(&q, &[9]), DecodeError::Rejected);
    // A sequence claiming 2^62 elements: an error, not a huge allocation.
    let mut huge = vec![0xFF; 8];
    huge.push(0x3F);
    assert_eq!(
        decode_raw::<Vec<u64>>(&q, &huge),
        DecodeError::UnexpectedEnd
    );
    // The untouched encoding still decodes, in place and owned.
    q.try_send(Message::new(Request::DO, good.as_slice()))
        .unwrap();
    assert_eq!(
        q.try_recv_ref().unwrap().value::<Order>().unwrap(),
        order(5)
    );
    assert!(q.is_empty());

    // Random bytes: every outcome is a value or a typed error.
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut errors = 0;
    for round in 0..3000 {
        let len = (next() % 96) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 3 == 0 && !good.is_empty() {
            // Mutate a valid encoding: the interesting near-misses.
            bytes = good.clone();
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        let r = if round % 2 == 0 {
            Message::new(Request::DO, bytes.as_slice()).value::<Order>()
        } else {
            q.try_send(Message::new(Request::DO, bytes.as_slice()))
                .unwrap();
            q.try_recv_ref().unwrap().value::<Order>()
        };
        errors += usize::from(r.is_err());
    }
    assert!(
        errors > 2000,
        "random bytes decoded too often: {errors} errors"
    );
    assert!(q.is_empty());
}

#[test]
fn message_values_round_trip_in_process() {
    let q = queue("message", 8, 1024);
    let m = Message::with_value(Request::new(100), &order(3))
        .unwrap()
        .to(4242);
    q.try_send(m).unwrap();
    let got = q.try_recv().unwrap();
    assert_eq!(
        (got.request, got.recipient),
        (Request::new(100), Some(4242))
    );
    assert_eq!(got.value::<Order>().unwrap(), order(3));
    assert_eq!(got.data.len(), encoded_len(&order(3)).unwrap());
    // Unit values fit an empty payload.
    q.try_send_value(Request::DIE, None, &()).unwrap();
    let (h, ()) = q.recv_value::<()>().unwrap();
    assert_eq!(h.request, Request::DIE);
}

fn postcard_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    Message::with_value(Request::DO, v).unwrap().data
}
