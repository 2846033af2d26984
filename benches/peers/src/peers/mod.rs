//! The peer systems, and dispatch from a [`Config`] to them.

pub mod arrayqueue;
pub mod cloudtoid;
pub mod floor;
pub mod iceoryx2;
pub mod ipmpsc;
pub mod memcpy;
pub mod procspawn;
pub mod uds;

use crate::common::ChildControl;
use crate::config::ChildSpec;
use crate::scenario::{PingPongSession, StreamSession};
use crate::{err, Config, Result, Scenario, System};

/// A running scenario, ready for batches.
pub enum Session {
    /// Ping-pong with its child.
    PingPong(Box<dyn PingPongSession>),
    /// Stream with its producers.
    Stream(Box<dyn StreamSession>),
    /// Copy loop.
    Memcpy(memcpy::Memcpy),
    /// Process pool with its workers.
    Pool(Box<dyn procspawn::PoolSession>),
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Session::PingPong(_) => "Session::PingPong",
            Session::Stream(_) => "Session::Stream",
            Session::Memcpy(_) => "Session::Memcpy",
            Session::Pool(_) => "Session::Pool",
        })
    }
}

/// Sets up `cfg`: creates the channel, starts the peers and waits until
/// they are ready.
pub fn open(cfg: &Config) -> Result<Session> {
    cfg.validate()?;
    if cfg.system == System::Iceoryx2 {
        iceoryx2::cleanup_dead_nodes();
    }
    Ok(match (cfg.system, cfg.scenario) {
        (System::Memcpy, _) => Session::Memcpy(memcpy::Memcpy::new(cfg.size, cfg.dst_offset)),
        (System::Raw, Scenario::PingPong) => Session::PingPong(floor::raw_pingpong(cfg)?),
        (System::Futex, Scenario::PingPong) => Session::PingPong(floor::futex_pingpong(cfg)?),
        (System::Ipmpsc, Scenario::PingPong) => Session::PingPong(ipmpsc::pingpong(cfg)?),
        (System::Ipmpsc, Scenario::Stream) => Session::Stream(ipmpsc::stream(cfg)?),
        (System::Cloudtoid, Scenario::PingPong) => Session::PingPong(cloudtoid::pingpong(cfg)?),
        (System::Cloudtoid, Scenario::Stream) => Session::Stream(cloudtoid::stream(cfg)?),
        (System::Procspawn, Scenario::Pool) => Session::Pool(procspawn::pool(cfg)?),
        (System::Iceoryx2, Scenario::PingPong) => Session::PingPong(iceoryx2::pingpong(cfg)?),
        (System::Iceoryx2, Scenario::Stream) => Session::Stream(iceoryx2::stream(cfg)?),
        (System::Uds, Scenario::PingPong) => Session::PingPong(uds::pingpong(cfg)?),
        (System::Uds, Scenario::Stream) => Session::Stream(uds::stream(cfg)?),
        (System::ArrayQueue, Scenario::PingPong) => Session::PingPong(arrayqueue::pingpong(cfg)?),
        (System::ArrayQueue, Scenario::Stream) => Session::Stream(arrayqueue::stream(cfg)?),
        (sys, sc) => return Err(err(format!("{sys} does not support {sc}"))),
    })
}

/// Runs the child role described by `spec`.
pub fn run_child(spec: &ChildSpec, ctrl: &mut dyn ChildControl) -> Result<()> {
    match spec.cfg.system {
        System::Raw => floor::raw_child(spec, ctrl),
        System::Futex => floor::futex_child(spec, ctrl),
        System::Ipmpsc => ipmpsc::child(spec, ctrl),
        System::Iceoryx2 => iceoryx2::child(spec, ctrl),
        System::Cloudtoid => cloudtoid::child(spec, ctrl),
        System::Uds => uds::child(spec, ctrl),
        System::ArrayQueue | System::Memcpy | System::Procspawn => {
            Err(err(format!("{} has no child process", spec.cfg.system)))
        }
    }
}
