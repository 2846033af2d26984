//! `mulproc`: see what is in /dev/shm, without writing code — which
//! mulproc queues and pipes exist, who holds them, how deep they are,
//! whether anyone died holding a message — and clean up what a crash left.
//!
//! Everything that reads a segment goes through `mulproc::inspect`, which
//! maps it read-only and registers nothing; `gc`, `rm`, `send`, `recv` and
//! `join` are the commands that act on a segment.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod ops;
mod show;
mod util;
mod watch;

/// The exit statuses, as `--help` documents them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 0: success, nothing wrong found.
    Ok,
    /// 1: a problem was found, or the operation failed.
    Problem,
}

impl From<Status> for ExitCode {
    fn from(s: Status) -> ExitCode {
        match s {
            Status::Ok => ExitCode::SUCCESS,
            Status::Problem => ExitCode::from(1),
        }
    }
}

const EXIT_STATUS: &str = "\
Exit status:
  0  success; for ls/inspect/peek: nothing wrong found
  1  a problem was found or the operation failed: a segment not found,
     unreadable, corrupt, stale or holding dead handles (ls, inspect); a
     timeout (join, recv, send); something gc could not repair or remove
  2  usage error (bad arguments)

Reading (ls, inspect, peek, watch) never changes a segment: it is mapped
read-only, no handle is registered and no lock taken; liveness is asked of
the kernel with F_OFD_GETLK. gc, rm, send, recv and join act on segments.";

#[derive(Debug, Parser)]
#[command(
    name = "mulproc",
    version,
    about = "List, inspect, peek at, watch and clean up mulproc queues and pipes in /dev/shm",
    after_help = EXIT_STATUS
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every mulproc segment on the machine: kind, size, depth, handles
    /// (live and dead pids), unfinished tasks, owner, mode, age, state.
    #[command(after_help = EXIT_STATUS)]
    Ls {
        /// Print JSON (an array, one object per segment) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One segment in detail: header and layout, every handle entry with
    /// its liveness, claims in flight and their holders, join counts,
    /// recovery counters.
    #[command(after_help = EXIT_STATUS)]
    Inspect {
        /// The segment's name (as given to Queue::create, without `mulproc.`).
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The next waiting messages, without taking them: request, sender,
    /// recipient, length, the first bytes as hex and text. (Postcard values
    /// sent with send_value are not decoded: postcard is not
    /// self-describing, so the bytes alone do not say what they encode.)
    #[command(after_help = EXIT_STATUS)]
    Peek {
        /// The segment's name.
        name: String,
        /// How many messages (per direction, for a pipe).
        #[arg(short = 'n', long = "count", default_value_t = 10)]
        count: usize,
        /// How many payload bytes of each to show.
        #[arg(short = 'b', long, default_value_t = 64)]
        bytes: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A live view, refreshed every second: send and receive rates, depth
    /// and a sparkline of it, handles, recoveries. q, Esc or Ctrl-C ends
    /// it. Without a terminal, prints one line per segment and refresh.
    #[command(after_help = EXIT_STATUS)]
    Watch {
        /// The segments to watch.
        #[arg(required = true)]
        names: Vec<String>,
        /// Time between refreshes (e.g. 1s, 500ms).
        #[arg(long, default_value = "1s", value_parser = util::parse_duration)]
        interval: Duration,
    },
    /// Repairs what dead processes left in queues still in use (the
    /// library's own recovery: held messages offered again, unfinished
    /// tasks counted abandoned, dead senders' claims given up) and removes
    /// stale segments (nobody alive has them open). Only the caller's own
    /// segments are touched.
    #[command(after_help = EXIT_STATUS)]
    Gc {
        /// Only say what would be done.
        #[arg(long)]
        dry_run: bool,
        /// Leave stale segments in place (an application restarting with
        /// Stale::Reuse keeps their messages).
        #[arg(long)]
        keep_stale: bool,
        /// Only these segments (default: all).
        names: Vec<String>,
    },
    /// Removes a segment's name. Processes that have it open keep using
    /// it; new opens fail. Refused while live handles hold it, unless
    /// --force.
    #[command(after_help = EXIT_STATUS)]
    Rm {
        /// The segment's name.
        name: String,
        /// Remove it even while live processes use it.
        #[arg(long)]
        force: bool,
    },
    /// Waits until every message sent to a queue was received and marked
    /// done (JoinableQueue.join). Opens the queue as a handle, so, like the
    /// library's join, it counts tasks of dead handles as abandoned.
    #[command(after_help = EXIT_STATUS)]
    Join {
        /// The queue's name.
        name: String,
        /// Give up after this long (exit status 1); default: wait forever.
        #[arg(long, value_parser = util::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Sends one message (the arguments joined by spaces, or standard
    /// input), or one per input line with --lines. On a pipe, sends from
    /// the child end (to the parent).
    #[command(after_help = EXIT_STATUS)]
    Send {
        /// The segment's name.
        name: String,
        /// The payload; read from standard input if absent.
        data: Vec<String>,
        /// Request code: DO, FINISHED, DIE or a number.
        #[arg(short, long, default_value = "DO", value_parser = util::parse_request)]
        request: mulproc::Request,
        /// Address the message to this pid.
        #[arg(long)]
        to: Option<u32>,
        /// Each line of standard input is a message.
        #[arg(long, conflicts_with = "data")]
        lines: bool,
        /// How long to wait for space in a full queue (default 1s).
        #[arg(long, default_value = "1s", value_parser = util::parse_duration)]
        timeout: Duration,
    },
    /// Receives one message and writes its payload to standard output,
    /// then marks it done. On a pipe, receives at the child end (what the
    /// parent sent).
    #[command(after_help = EXIT_STATUS)]
    Recv {
        /// The segment's name.
        name: String,
        /// Give up after this long (exit status 1); default: wait forever.
        #[arg(long, value_parser = util::parse_duration)]
        timeout: Option<Duration>,
        /// Also print the header (request, sender, recipient, length) on
        /// standard error.
        #[arg(long)]
        header: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Ls { json } => show::ls(json),
        Command::Inspect { name, json } => show::inspect(&name, json),
        Command::Peek {
            name,
            count,
            bytes,
            json,
        } => show::peek(&name, count, bytes, json),
        Command::Watch { names, interval } => watch::run(&names, interval),
        Command::Gc {
            dry_run,
            keep_stale,
            names,
        } => ops::gc(&names, dry_run, keep_stale),
        Command::Rm { name, force } => ops::rm(&name, force),
        Command::Join { name, timeout } => ops::join(&name, timeout),
        Command::Send {
            name,
            data,
            request,
            to,
            lines,
            timeout,
        } => ops::send(&name, &data, request, to, lines, timeout),
        Command::Recv {
            name,
            timeout,
            header,
        } => ops::recv(&name, timeout, header),
    };
    status.into()
}
