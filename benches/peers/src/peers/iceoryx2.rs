//! iceoryx2 publish-subscribe (`ipc` service, `[u8]` slice payload).
//!
//! Sending loans a sample, copies the message in and sends it; receiving
//! copies the payload out. The service does not overflow: the publisher
//! retries until delivered (`BackpressureStrategy::RetryUntilDelivered`),
//! so a stream loses nothing. Blocking receive (`--block`) adds an event
//! service per direction: the sender notifies after each sample, the
//! receiver sleeps in `Listener::timed_wait` when the subscriber is empty.

use std::time::Duration;

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

use crate::common::{queue_depth, unique_name, ChildControl, Children};
use crate::config::ChildSpec;
use crate::scenario::{echo, produce, PingPong, PingPongSession, Stream, StreamSession};
use crate::transport::{Rx, Tx};
use crate::{err, Config, Result, Scenario};

type Svc = ipc::Service;

struct IoxTx {
    publisher: Publisher<Svc, [u8], ()>,
    notifier: Option<Notifier<Svc>>,
}

impl Tx for IoxTx {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let sample = self.publisher.loan_slice_uninit(msg.len())?;
        sample.write_from_slice(msg).send()?;
        if let Some(n) = &self.notifier {
            n.notify()?;
        }
        Ok(())
    }
}

struct IoxRx {
    subscriber: Subscriber<Svc, [u8], ()>,
    listener: Option<Listener<Svc>>,
}

impl IoxRx {
    /// Connects the subscriber to every publisher that exists now.
    ///
    /// Must be called once the senders exist and before they fill the
    /// buffer: a publisher whose subscriber has not attached yet drops
    /// samples once the buffer is full ("no connected receiver"), even with
    /// `RetryUntilDelivered`. `has_samples` updates the connections.
    fn connect(&self) -> Result<()> {
        self.subscriber.has_samples()?;
        Ok(())
    }
}

impl Rx for IoxRx {
    #[inline]
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<bool> {
        let Some(sample) = self.subscriber.receive()? else {
            return Ok(false);
        };
        let got = sample.payload();
        if got.len() != buf.len() {
            return Err(err(format!(
                "iceoryx2: got {} bytes, expected {}",
                got.len(),
                buf.len()
            )));
        }
        buf.copy_from_slice(got);
        Ok(true)
    }

    fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<bool> {
        if self.try_recv(buf)? {
            return Ok(true);
        }
        let listener = self
            .listener
            .as_ref()
            .ok_or_else(|| err("iceoryx2 receiver has no listener (not a --block run)"))?;
        // Notifications are latched: one sent after our try_recv wakes us.
        listener.timed_wait(|_| {}, timeout)?;
        self.try_recv(buf)
    }
}

fn node() -> Result<Node<Svc>> {
    set_log_level_from_env_or(LogLevel::Error);
    // No signal handlers: the binary's own guard thread handles signals.
    Ok(NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Svc>()?)
}

/// Names of one direction: the pub/sub service and its event service.
fn names(base: &str, dir: &str) -> Result<(ServiceName, ServiceName)> {
    Ok((
        ServiceName::new(&format!("{base}/{dir}"))?,
        ServiceName::new(&format!("{base}/{dir}-event"))?,
    ))
}

/// One direction of the channel, as created (parent) or opened (child).
struct Direction {
    data: iceoryx2::service::port_factory::publish_subscribe::PortFactory<Svc, [u8], ()>,
    event: Option<iceoryx2::service::port_factory::event::PortFactory<Svc>>,
}

impl Direction {
    fn create(
        node: &Node<Svc>,
        base: &str,
        dir: &str,
        cfg: &Config,
        senders: usize,
    ) -> Result<Self> {
        let (data_name, event_name) = names(base, dir)?;
        let data = node
            .service_builder(&data_name)
            .publish_subscribe::<[u8]>()
            .max_publishers(senders)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(queue_depth(cfg.size))
            .enable_safe_overflow(false)
            .create()?;
        let event = if cfg.block {
            Some(
                node.service_builder(&event_name)
                    .event()
                    .max_notifiers(senders)
                    .max_listeners(1)
                    .create()?,
            )
        } else {
            None
        };
        Ok(Direction { data, event })
    }

    fn open(node: &Node<Svc>, base: &str, dir: &str, block: bool) -> Result<Self> {
        let (data_name, event_name) = names(base, dir)?;
        let data = node
            .service_builder(&data_name)
            .publish_subscribe::<[u8]>()
            .open()?;
        let event = if block {
            Some(node.service_builder(&event_name).event().open()?)
        } else {
            None
        };
        Ok(Direction { data, event })
    }

    fn tx(&self, size: usize) -> Result<IoxTx> {
        let publisher = self
            .data
            .publisher_builder()
            .initial_max_slice_len(size)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()?;
        let notifier = match &self.event {
            Some(e) => Some(e.notifier_builder().create()?),
            None => None,
        };
        Ok(IoxTx {
            publisher,
            notifier,
        })
    }

    fn rx(&self, size: usize) -> Result<IoxRx> {
        let subscriber = self
            .data
            .subscriber_builder()
            .buffer_size(queue_depth(size))
            .create()?;
        let listener = match &self.event {
            Some(e) => Some(e.listener_builder().create()?),
            None => None,
        };
        Ok(IoxRx {
            subscriber,
            listener,
        })
    }
}

/// Parent side of a ping-pong: services `a` (parent → child) and `b`.
pub fn pingpong(cfg: &Config) -> Result<Box<dyn PingPongSession>> {
    let node = node()?;
    let base = unique_name("iox2");
    let a = Direction::create(&node, &base, "a", cfg, 1)?;
    let b = Direction::create(&node, &base, "b", cfg, 1)?;
    let tx = a.tx(cfg.size)?;
    let rx = b.rx(cfg.size)?;
    let spec = ChildSpec {
        cfg: cfg.clone(),
        addr: base,
        index: 0,
    };
    let children = Children::spawn_ready(std::slice::from_ref(&spec))?;
    rx.connect()?;
    Ok(Box::new(PingPong::new(
        children,
        tx,
        rx,
        cfg,
        Some(Box::new((a, b, node))),
    )))
}

/// Parent side of a stream: one service, `cfg.producers` publishers.
pub fn stream(cfg: &Config) -> Result<Box<dyn StreamSession>> {
    let node = node()?;
    let base = unique_name("iox2");
    let s = Direction::create(&node, &base, "s", cfg, cfg.producers)?;
    let rx = s.rx(cfg.size)?;
    let specs: Vec<_> = (0..cfg.producers)
        .map(|index| ChildSpec {
            cfg: cfg.clone(),
            addr: base.clone(),
            index,
        })
        .collect();
    let children = Children::spawn_ready(&specs)?;
    rx.connect()?;
    Ok(Box::new(Stream::new(
        children,
        rx,
        cfg,
        Some(Box::new((s, node))),
    )))
}

/// Child side.
pub fn child(spec: &ChildSpec, ctrl: &mut dyn ChildControl) -> Result<()> {
    let cfg = &spec.cfg;
    let node = node()?;
    match cfg.scenario {
        Scenario::PingPong => {
            let a = Direction::open(&node, &spec.addr, "a", cfg.block)?;
            let b = Direction::open(&node, &spec.addr, "b", cfg.block)?;
            let rx = a.rx(cfg.size)?;
            rx.connect()?; // the parent's publisher exists already
            echo(ctrl, b.tx(cfg.size)?, rx, cfg.size, cfg.block)
        }
        Scenario::Stream => {
            let s = Direction::open(&node, &spec.addr, "s", cfg.block)?;
            produce(ctrl, s.tx(cfg.size)?, cfg.size)
        }
        Scenario::Memcpy | Scenario::Pool => Err(err(format!("no {} child", cfg.scenario))),
    }
}

/// Removes what dead iceoryx2 nodes (e.g. of a killed run) left behind.
pub fn cleanup_dead_nodes() {
    if let Ok(node) = node() {
        let _ = node.try_cleanup_dead_nodes();
    }
}
