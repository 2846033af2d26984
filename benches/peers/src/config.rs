//! What to run: the system, the scenario and their parameters, parsed from
//! command-line flags and passed on to child processes through one
//! environment variable.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::{err, Error, Result};

/// A peer system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// iceoryx2 publish-subscribe over shared memory (with an event service
    /// for blocking receive).
    Iceoryx2,
    /// ipmpsc shared-memory MPSC ring.
    Ipmpsc,
    /// cloudtoid-interprocess shared-memory byte queue (several publishers,
    /// crash recovery), with its semaphore-backed blocking receive.
    Cloudtoid,
    /// `std::os::unix::net::UnixStream`, one connection per producer.
    Uds,
    /// crossbeam-queue `ArrayQueue` between threads of one process.
    ArrayQueue,
    /// One cache line per direction, spun on by the other process.
    Raw,
    /// One futex word per direction, FUTEX_WAIT / FUTEX_WAKE across processes.
    Futex,
    /// `memcpy` of a buffer: the copying bandwidth bound.
    Memcpy,
    /// procspawn process pool (ipc-channel + serde): the pool scenario only.
    Procspawn,
}

impl System {
    /// The flag spelling of the system.
    pub fn name(self) -> &'static str {
        match self {
            System::Iceoryx2 => "iceoryx2",
            System::Ipmpsc => "ipmpsc",
            System::Cloudtoid => "cloudtoid",
            System::Uds => "uds",
            System::ArrayQueue => "arrayqueue",
            System::Raw => "raw",
            System::Futex => "futex",
            System::Memcpy => "memcpy",
            System::Procspawn => "procspawn",
        }
    }
}

impl FromStr for System {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "iceoryx2" | "iox2" => System::Iceoryx2,
            "ipmpsc" => System::Ipmpsc,
            "cloudtoid" | "cloudtoid-interprocess" => System::Cloudtoid,
            "procspawn" => System::Procspawn,
            "uds" | "unix" => System::Uds,
            "arrayqueue" | "crossbeam" => System::ArrayQueue,
            "raw" => System::Raw,
            "futex" => System::Futex,
            "memcpy" => System::Memcpy,
            _ => return Err(err(format!("unknown system {s:?}"))),
        })
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Ping-pong between a parent and one child; reports one-way latency.
    PingPong,
    /// `producers` children stream to the parent; reports messages/s.
    Stream,
    /// Copy a buffer over and over; reports bytes/s.
    Memcpy,
    /// Tasks through a pool of `workers` processes; reports tasks/s.
    Pool,
}

impl Scenario {
    /// The flag spelling of the scenario.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::PingPong => "pingpong",
            Scenario::Stream => "stream",
            Scenario::Memcpy => "memcpy",
            Scenario::Pool => "pool",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything one run needs. Built from flags by [`Config::from_args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The system under test.
    pub system: System,
    /// The scenario.
    pub scenario: Scenario,
    /// Message size in bytes (at least 8: the first 8 bytes carry a sequence
    /// number); for memcpy, the buffer size.
    pub size: usize,
    /// Measured iterations: round trips, messages in all, or copies.
    /// `None`: batches until [`Config::TARGET_TIME`] has passed.
    pub iters: Option<u64>,
    /// Warm-up iterations before the measured ones (`None`: see
    /// [`Config::warmup`]).
    pub warmup: Option<u64>,
    /// Receivers sleep in a blocking receive instead of spinning.
    pub block: bool,
    /// Ping-pong only: the sender busy-waits this long before each send.
    pub idle_us: u64,
    /// Stream only: number of producer processes (threads for ArrayQueue).
    pub producers: usize,
    /// Stream only: messages a producer hands over per batch send (1: one
    /// send per message). Only systems with a batch send take more than 1.
    pub batch: usize,
    /// Pool only: worker processes.
    pub workers: usize,
    /// Memcpy only: destination offset in bytes from 64-byte alignment
    /// (the source is always page-aligned).
    pub dst_offset: usize,
    /// The whole run is abandoned (and cleaned up) after this long.
    pub timeout: Duration,
}

impl Config {
    /// A configuration with the defaults for `system` and `scenario`.
    pub fn new(system: System, scenario: Scenario) -> Self {
        Config {
            system,
            scenario,
            size: if scenario == Scenario::Memcpy {
                65536
            } else {
                64
            },
            iters: None,
            warmup: None,
            block: false,
            idle_us: 0,
            producers: 1,
            batch: 1,
            workers: 4,
            dst_offset: 0,
            timeout: Duration::from_secs(60),
        }
    }

    /// Warm-up iterations (also the calibration batch when `iters` is
    /// not given).
    pub fn warmup(&self) -> u64 {
        self.warmup.unwrap_or(match self.scenario {
            Scenario::PingPong if self.idle_us > 0 => (200_000 / self.idle_us).clamp(100, 5_000),
            Scenario::PingPong => 5_000,
            Scenario::Stream => 20_000,
            Scenario::Memcpy => 1_000,
            Scenario::Pool => 1_000,
        })
    }

    /// Batch size for a time-bounded measurement: about
    /// [`Config::BATCH_TIME`] worth at `per_iter` (from the warm-up).
    pub fn batch_for(&self, per_iter: Duration) -> u64 {
        let fit = Self::BATCH_TIME.as_secs_f64() / per_iter.as_secs_f64().max(1e-9);
        (fit as u64).clamp(100, 10_000_000)
    }

    /// Without `--iters`, batches run until this much wall time has passed.
    pub const TARGET_TIME: Duration = Duration::from_secs(1);

    /// A ping-pong warm-up ends after this long even if short of its count.
    pub const WARMUP_MAX: Duration = Duration::from_millis(500);

    /// Aimed-for length of one batch in a time-bounded measurement.
    pub const BATCH_TIME: Duration = Duration::from_millis(100);

    /// Messages per batch send of the `stream-batch` scenario when `--batch`
    /// is not given (what mulproc's batch stream uses).
    pub const DEFAULT_BATCH: usize = 64;

    /// Checks that the combination makes sense for the system.
    pub fn validate(&self) -> Result<()> {
        let sys = self.system;
        if (sys == System::Memcpy) != (self.scenario == Scenario::Memcpy) {
            return Err(err("the memcpy scenario goes with --system memcpy only"));
        }
        if self.size < 8 {
            return Err(err(
                "--size must be at least 8 (a sequence number travels in each message)",
            ));
        }
        if self.producers == 0 || (self.producers > 1 && self.scenario != Scenario::Stream) {
            return Err(err(
                "--producers applies to the stream scenario and must be at least 1",
            ));
        }
        if self.dst_offset > 0 && self.scenario != Scenario::Memcpy {
            return Err(err("--dst-offset applies to memcpy only"));
        }
        if self.dst_offset >= 4096 {
            return Err(err("--dst-offset must be below 4096"));
        }
        if self.idle_us > 0 && self.scenario != Scenario::PingPong {
            return Err(err("--idle-us applies to the ping-pong scenario only"));
        }
        if self.batch == 0 || (self.batch > 1 && self.scenario != Scenario::Stream) {
            return Err(err(
                "--batch applies to the stream scenario and must be at least 1",
            ));
        }
        if self.batch > 1 && sys != System::Cloudtoid {
            return Err(err(format!(
                "{sys} has no batch send (--batch is for --system cloudtoid)"
            )));
        }
        if self.batch > crate::common::queue_depth(self.size) {
            return Err(err(format!(
                "--batch {} exceeds the queue depth ({} messages of {} B)",
                self.batch,
                crate::common::queue_depth(self.size),
                self.size
            )));
        }
        if (sys == System::Procspawn) != (self.scenario == Scenario::Pool) {
            return Err(err(
                "the pool scenario goes with --system procspawn only (and procspawn runs only pool)",
            ));
        }
        if self.scenario == Scenario::Pool && self.block {
            return Err(err("--block does not apply to the pool scenario"));
        }
        if self.workers == 0 {
            return Err(err("--workers must be at least 1"));
        }
        match sys {
            System::Raw | System::Futex if self.scenario != Scenario::PingPong => Err(err(
                format!("{sys} is a ping-pong floor only (one word per direction, no queue)"),
            )),
            System::Raw if self.block => Err(err(
                "raw has no blocking receive; use --system futex for the blocking floor",
            )),
            System::ArrayQueue if self.block => {
                Err(err("ArrayQueue has no blocking receive (spin only)"))
            }
            System::ArrayQueue if ![8, 64, 1024, 65536].contains(&self.size) => Err(err(
                "arrayqueue supports --size 8, 64, 1024 or 65536 (fixed-size array slots)",
            )),
            _ => Ok(()),
        }
    }

    /// Parses the flags of the `peer` binary (program name excluded).
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Self> {
        let mut args = args.into_iter();
        let mut system = None;
        let mut scenario = None;
        let mut block = false;
        let mut size = None;
        let mut iters = None;
        let mut warmup = None;
        let mut idle_us = 0;
        let mut producers = None;
        let mut timeout = None;
        let mut dst_offset = 0;
        let mut batch = None;
        let mut workers = None;
        while let Some(flag) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| err(format!("{name} needs a value")))
            };
            match flag.as_str() {
                "--system" => system = Some(value("--system")?.parse::<System>()?),
                "--scenario" => scenario = Some(value("--scenario")?),
                "--block" => block = true,
                "--size" => size = Some(parse_num(&value("--size")?, "--size")? as usize),
                "--iters" => iters = Some(parse_num(&value("--iters")?, "--iters")?),
                "--warmup" => warmup = Some(parse_num(&value("--warmup")?, "--warmup")?),
                "--idle-us" => idle_us = parse_num(&value("--idle-us")?, "--idle-us")?,
                "--producers" => {
                    producers = Some(parse_num(&value("--producers")?, "--producers")? as usize)
                }
                "--batch" => batch = Some(parse_num(&value("--batch")?, "--batch")? as usize),
                "--workers" => {
                    workers = Some(parse_num(&value("--workers")?, "--workers")? as usize)
                }
                "--dst-offset" => {
                    dst_offset = parse_num(&value("--dst-offset")?, "--dst-offset")? as usize
                }
                "--timeout-s" => {
                    timeout = Some(Duration::from_secs(parse_num(
                        &value("--timeout-s")?,
                        "--timeout-s",
                    )?))
                }
                other => return Err(err(format!("unknown flag {other:?} (try --help)"))),
            }
        }
        let system = system.ok_or_else(|| err("--system is required"))?;
        let scenario_name = scenario.unwrap_or_else(|| {
            match system {
                System::Memcpy => "memcpy",
                System::Procspawn => "pool",
                _ => "pingpong",
            }
            .to_owned()
        });
        let (scenario, implied_block, implied_producers, implied_batch) =
            match scenario_name.as_str() {
                "pingpong" => (Scenario::PingPong, false, 1, 1),
                "pingpong-block" => (Scenario::PingPong, true, 1, 1),
                "stream" => (Scenario::Stream, false, 1, 1),
                "stream-batch" => (Scenario::Stream, false, 1, Self::DEFAULT_BATCH),
                "mpsc" | "contended" => (Scenario::Stream, false, 4, 1),
                "memcpy" => (Scenario::Memcpy, false, 1, 1),
                "pool" => (Scenario::Pool, false, 1, 1),
                other => return Err(err(format!("unknown scenario {other:?}"))),
            };
        let mut cfg = Config::new(system, scenario);
        cfg.block = block || implied_block;
        cfg.size = size.unwrap_or(cfg.size);
        cfg.iters = iters;
        cfg.warmup = warmup;
        cfg.idle_us = idle_us;
        cfg.producers = producers.unwrap_or(implied_producers);
        cfg.batch = batch.unwrap_or(implied_batch);
        if workers.is_some() && scenario != Scenario::Pool {
            return Err(err("--workers applies to the pool scenario only"));
        }
        cfg.workers = workers.unwrap_or(cfg.workers);
        cfg.timeout = timeout.unwrap_or(cfg.timeout);
        cfg.dst_offset = dst_offset;
        cfg.validate()?;
        Ok(cfg)
    }

    /// A short label, e.g. `ipmpsc/stream/64B/p4/block`.
    pub fn label(&self) -> String {
        let mut s = format!("{}/{}/{}B", self.system, self.scenario, self.size);
        if self.producers > 1 {
            s.push_str(&format!("/p{}", self.producers));
        }
        if self.batch > 1 {
            s.push_str(&format!("/batch{}", self.batch));
        }
        if self.scenario == Scenario::Pool {
            s.push_str(&format!("/w{}", self.workers));
        }
        if self.block {
            s.push_str("/block");
        }
        if self.idle_us > 0 {
            s.push_str(&format!("/idle{}us", self.idle_us));
        }
        if self.dst_offset > 0 {
            s.push_str(&format!("/dst+{}", self.dst_offset));
        }
        s
    }
}

fn parse_num(s: &str, name: &str) -> Result<u64> {
    s.replace('_', "")
        .parse::<u64>()
        .map_err(|e| err(format!("{name} {s:?}: {e}")))
}

/// What a child process is told: the run's configuration plus where to find
/// its channel (`addr`, opaque, chosen by the system) and which producer it
/// is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// The run's configuration (only the fields a child needs are encoded).
    pub cfg: Config,
    /// System-specific address: file paths, service names, socket path.
    pub addr: String,
    /// Producer index (0 for ping-pong).
    pub index: usize,
}

impl ChildSpec {
    /// Encodes into one line of space-separated `key=value` pairs.
    pub fn encode(&self) -> String {
        format!(
            "system={} scenario={} size={} block={} producers={} batch={} index={} addr={}",
            self.cfg.system,
            self.cfg.scenario,
            self.cfg.size,
            u8::from(self.cfg.block),
            self.cfg.producers,
            self.cfg.batch,
            self.index,
            self.addr
        )
    }

    /// Decodes what [`ChildSpec::encode`] wrote.
    pub fn decode(s: &str) -> Result<Self> {
        let mut spec = ChildSpec {
            cfg: Config::new(System::Raw, Scenario::PingPong),
            addr: String::new(),
            index: 0,
        };
        let mut scenario = Scenario::PingPong;
        for pair in s.split_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| err(format!("bad child spec item {pair:?}")))?;
            let num = || parse_num(v, k);
            match k {
                "system" => spec.cfg.system = v.parse()?,
                "scenario" => {
                    scenario = match v {
                        "pingpong" => Scenario::PingPong,
                        "stream" => Scenario::Stream,
                        _ => return Err(err(format!("bad child scenario {v:?}"))),
                    }
                }
                "size" => spec.cfg.size = num()? as usize,
                "block" => spec.cfg.block = num()? != 0,
                "producers" => spec.cfg.producers = num()? as usize,
                "batch" => spec.cfg.batch = num()? as usize,
                "index" => spec.index = num()? as usize,
                "addr" => spec.addr = v.to_owned(),
                _ => return Err(err(format!("unknown child spec key {k:?}"))),
            }
        }
        spec.cfg.scenario = scenario;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_flags_and_aliases() {
        let c = Config::from_args(args("--system ipmpsc --scenario mpsc --iters 1_000")).unwrap();
        assert_eq!(c.scenario, Scenario::Stream);
        assert_eq!(c.producers, 4);
        assert_eq!(c.iters, Some(1000));
        assert_eq!(c.batch_for(Duration::from_micros(1)), 100_000);
        let c = Config::from_args(args(
            "--system futex --scenario pingpong-block --idle-us 200",
        ))
        .unwrap();
        assert!(c.block);
        assert_eq!(c.idle_us, 200);
        assert!(Config::from_args(args("--system raw --scenario stream")).is_err());
        assert!(Config::from_args(args("--system raw --block")).is_err());
        let c = Config::from_args(args("--system cloudtoid --scenario stream-batch")).unwrap();
        assert_eq!(
            (c.scenario, c.batch, c.producers),
            (Scenario::Stream, 64, 1)
        );
        assert_eq!(c.label(), "cloudtoid/stream/64B/batch64");
        let c = Config::from_args(args("--system cloudtoid --scenario mpsc --batch 8")).unwrap();
        assert_eq!((c.batch, c.producers), (8, 4));
        assert!(Config::from_args(args("--system ipmpsc --scenario stream --batch 8")).is_err());
        assert!(
            Config::from_args(args("--system cloudtoid --scenario pingpong --batch 8")).is_err()
        );
        assert!(Config::from_args(args("--system cloudtoid --scenario stream --batch 0")).is_err());
        assert!(Config::from_args(args(
            "--system cloudtoid --size 65536 --scenario stream --batch 512"
        ))
        .is_err());
        let c = Config::from_args(args("--system procspawn --workers 2")).unwrap();
        assert_eq!((c.scenario, c.workers), (Scenario::Pool, 2));
        assert_eq!(c.label(), "procspawn/pool/64B/w2");
        assert!(Config::from_args(args("--system procspawn --scenario stream")).is_err());
        assert!(Config::from_args(args("--system ipmpsc --scenario pool")).is_err());
        assert!(Config::from_args(args("--system ipmpsc --workers 2")).is_err());
        assert!(Config::from_args(args("--system procspawn --workers 0")).is_err());
    }

    #[test]
    fn child_spec_round_trips() {
        let mut cfg = Config::new(System::Uds, Scenario::Stream);
        cfg.block = true;
        cfg.producers = 4;
        cfg.batch = 16;
        cfg.size = 1024;
        let spec = ChildSpec {
            cfg,
            addr: "/tmp/x.sock".into(),
            index: 3,
        };
        let back = ChildSpec::decode(&spec.encode()).unwrap();
        assert_eq!(back.addr, spec.addr);
        assert_eq!(back.index, 3);
        assert_eq!(back.cfg.size, 1024);
        assert!(back.cfg.block);
        assert_eq!(back.cfg.producers, 4);
        assert_eq!(back.cfg.batch, 16);
        assert_eq!(back.cfg.scenario, Scenario::Stream);
    }
}
