//! A small worker pool to look at with `mulproc`, for trying the command
//! (and for the screens in cli/README.md).
//!
//! Creates a queue `demo-jobs` (1024 slots of up to 256 bytes) that three
//! worker processes drain, sending it 1,000 to 13,000 jobs a second in
//! swells of half a minute (the workers take about 7,000), and a pipe
//! `demo-control` to a controller process. A second queue, `demo-orphans`,
//! gets three jobs and one consumer, which receives a job, holds it in
//! place and is SIGKILLed: nobody else receives there, so the dead handle
//! stays for `mulproc ls` to show and `mulproc gc` to repair (on a queue
//! with live receivers, their own recovery redelivers such a job within
//! milliseconds). Runs for `--secs N` seconds (default 120) or until
//! Ctrl-C; the segments are removed when it ends normally (after a Ctrl-C,
//! `mulproc gc` finds them stale).
//!
//! ```text
//! cargo run -p mulproc-cli --example demo &
//! mulproc ls
//! mulproc watch demo-jobs demo-control
//! ```

use std::time::{Duration, Instant};

use mulproc::process::{self, Child};
use mulproc::{Message, Pipe, PipeConfig, Queue, QueueConfig, Request};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn worker() -> Result<()> {
    let jobs = process::open_queue("jobs")?;
    loop {
        let job = jobs.recv()?;
        if job.request == Request::DIE {
            return Ok(());
        }
        // A little work per job.
        std::thread::sleep(Duration::from_micros(400));
        jobs.task_done()?;
    }
}

fn stuck() -> Result<()> {
    let orphans = process::open_queue("orphans")?;
    let _held = orphans.recv_ref()?; // held in place until the process is killed
    println!("holding");
    std::thread::sleep(Duration::from_secs(3600));
    Ok(())
}

fn controller() -> Result<()> {
    let ctl = process::open_pipe("control")?;
    loop {
        let m = ctl.recv()?;
        if m.request == Request::DIE {
            return Ok(());
        }
        ctl.send(Message::new(Request::FINISHED, m.data))?;
    }
}

fn main() -> Result<()> {
    match process::role().as_deref() {
        Some("worker") => return worker(),
        Some("stuck") => return stuck(),
        Some("controller") => return controller(),
        _ => {}
    }
    let secs: u64 = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .map_or(Ok(120), |s| s.parse())?;
    let jobs = Queue::create("demo-jobs", QueueConfig::new(1024, 256))?;
    let ctl = Pipe::create("demo-control", PipeConfig::new(16, 64))?;
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(Child::role("worker").queue("jobs", &jobs).spawn()?);
    }
    children.push(Child::role("controller").pipe("control", &ctl).spawn()?);
    let orphans = Queue::create("demo-orphans", QueueConfig::new(64, 256))?;
    for job in ["thumbnail a.png", "thumbnail b.png", "thumbnail c.png"] {
        orphans.send(Message::new(Request::DO, job.as_bytes()))?;
    }
    let mut victim = Child::role("stuck")
        .queue("orphans", &orphans)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Wait until it holds its job, then kill it.
    let mut line = String::new();
    let out = victim.as_std_mut().stdout.take().ok_or("no stdout")?;
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
    victim.kill()?;
    victim.wait()?;
    println!(
        "demo: queues demo-jobs and demo-orphans, pipe demo-control; consumer {} of demo-orphans killed holding a job",
        victim.pid()
    );

    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut n = 0u64;
    while Instant::now() < end {
        // Bursts that swell and ebb over half a minute: at their peak
        // faster than the workers drain, so the queue fills and empties.
        let phase = start.elapsed().as_secs_f64() * std::f64::consts::TAU / 30.0;
        let burst = (10.0 + 60.0 * (1.0 - phase.cos())) as u64;
        for _ in 0..burst {
            let job = format!("resize image-{n}.png 640x480");
            // A full queue waits (send retries); workers catch up.
            jobs.send(Message::new(Request::DO, job.into_bytes()))?;
            n += 1;
        }
        if n / 1000 != (n - burst) / 1000 {
            ctl.send(Message::new(Request::DO, n.to_le_bytes().to_vec()))?;
            let _ = ctl.recv_timeout(Duration::from_secs(1));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    process::stop_any_workers(&jobs, 3)?;
    ctl.send(Message::signal(Request::DIE))?;
    for c in &mut children {
        c.wait()?;
    }
    Ok(())
}
