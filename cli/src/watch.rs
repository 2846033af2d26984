//! `watch`: a live view of segments, refreshed every interval.
//!
//! On a terminal: a ratatui screen (raw mode, alternate screen) with one
//! panel per segment; q, Esc or Ctrl-C (a key in raw mode), or SIGINT,
//! SIGTERM or SIGHUP end it, and the terminal is restored (also on a panic,
//! by ratatui's hook). Without a terminal: one line per segment and
//! refresh on standard output, until a signal ends it.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mulproc::inspect::{self, Contents};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Sparkline};
use ratatui::Frame;

use crate::show::{fail, health};
use crate::util;
use crate::Status;

/// Depth samples kept for the sparkline.
const HISTORY: usize = 240;

/// Set by the signal handler; the loop ends when it sees it.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: a store to a lock-free atomic, nothing else.
    STOP.store(true, Ordering::Relaxed);
}

fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only stores
        // to an atomic, which is async-signal-safe; installing a handler
        // touches no memory of ours.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// One reading of a segment.
#[derive(Clone, Debug)]
struct Sample {
    kind: &'static str,
    sent: u64,
    received: u64,
    depth: u64,
    capacity: u64,
    recoveries: u64,
    live: usize,
    dead: usize,
    unfinished: Option<u64>,
    state: String,
    problem: bool,
}

fn sample(name: &str) -> Result<Sample, String> {
    let s = inspect::snapshot(name).map_err(|e| e.to_string())?;
    let (state, problem) = health(&s);
    let mut out = Sample {
        kind: "?",
        sent: 0,
        received: 0,
        depth: 0,
        capacity: 0,
        recoveries: 0,
        live: 0,
        dead: 0,
        unfinished: None,
        state,
        problem,
    };
    match &s.contents {
        Ok(Contents::Queue(q)) => {
            let r = &q.recovery;
            out.kind = "queue";
            out.sent = q.tail;
            out.received = q.head;
            out.depth = q.depth();
            out.capacity = u64::from(q.layout.capacity);
            // `fenced_live` is a part of `skipped_claims`, not added again.
            out.recoveries = r.skipped_claims
                + r.redelivered
                + r.abandoned_tasks
                + r.undone_moves
                + r.handovers
                + r.finished_releases;
            out.live = q.live_handles().count();
            out.dead = q.dead_handles().count();
            out.unfinished = Some(q.unfinished());
        }
        Ok(Contents::Pipe(p)) => {
            out.kind = "pipe";
            out.sent = p.directions.iter().map(|d| d.tail).sum();
            out.received = p.directions.iter().map(|d| d.head).sum();
            out.depth = p.directions.iter().map(|d| d.depth()).sum();
            out.capacity = 2 * u64::from(p.layout.capacity);
            out.live = p.ends.iter().filter(|e| e.alive).count();
            out.dead = p
                .ends
                .iter()
                .filter(|e| !e.alive && e.pid.is_some())
                .count();
        }
        _ => {}
    }
    Ok(out)
}

/// What is known of one watched segment.
#[derive(Debug)]
struct Watched {
    name: String,
    last: Option<(Instant, Sample)>,
    first_recoveries: Option<u64>,
    send_rate: f64,
    recv_rate: f64,
    depths: VecDeque<u64>,
    error: Option<String>,
}

impl Watched {
    fn new(name: &str) -> Watched {
        Watched {
            name: name.to_owned(),
            last: None,
            first_recoveries: None,
            send_rate: 0.0,
            recv_rate: 0.0,
            depths: VecDeque::with_capacity(HISTORY),
            error: None,
        }
    }

    fn refresh(&mut self) {
        let now = Instant::now();
        match sample(&self.name) {
            Ok(s) => {
                if let Some((then, prev)) = &self.last {
                    let dt = now.duration_since(*then).as_secs_f64().max(1e-6);
                    self.send_rate = s.sent.saturating_sub(prev.sent) as f64 / dt;
                    self.recv_rate = s.received.saturating_sub(prev.received) as f64 / dt;
                }
                self.first_recoveries.get_or_insert(s.recoveries);
                if self.depths.len() == HISTORY {
                    self.depths.pop_front();
                }
                self.depths.push_back(s.depth);
                self.last = Some((now, s));
                self.error = None;
            }
            Err(e) => {
                self.error = Some(e);
                self.send_rate = 0.0;
                self.recv_rate = 0.0;
            }
        }
    }

    /// The figures, as one line of text.
    fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return format!("{}  {e}", self.name);
        }
        let Some((_, s)) = &self.last else {
            return format!("{}  (no reading yet)", self.name);
        };
        format!(
            "{}  {}  send {}/s  recv {}/s  depth {}/{}  live {}  dead {}  unfinished {}  recoveries {}  {}",
            self.name,
            s.kind,
            rate(self.send_rate),
            rate(self.recv_rate),
            s.depth,
            s.capacity,
            s.live,
            s.dead,
            s.unfinished.map_or("-".into(), |u| u.to_string()),
            s.recoveries,
            s.state
        )
    }
}

/// A rate with thousands grouped and one decimal: `12,345.6`.
fn rate(r: f64) -> String {
    let text = format!("{:.1}", r.max(0.0));
    let (whole, frac) = text.split_once('.').unwrap_or((&text, "0"));
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{grouped}.{frac}")
}

/// An interval for the footer: `1s`, `500ms`.
fn interval_text(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        util::human_duration(d)
    }
}

pub fn run(names: &[String], interval: Duration) -> Status {
    let interval = interval.max(Duration::from_millis(50));
    let mut watched: Vec<Watched> = names.iter().map(|n| Watched::new(n)).collect();
    catch_signals();
    if !std::io::stdout().is_terminal() {
        return run_plain(&mut watched, interval);
    }
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            ratatui::restore();
            return fail(&format!("cannot set up the terminal: {e}"));
        }
    };
    let result = (|| -> std::io::Result<()> {
        let started = Instant::now();
        let mut next = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next {
                for w in &mut watched {
                    w.refresh();
                }
                next += interval;
                if next < now {
                    next = now + interval;
                }
            }
            terminal.draw(|f| draw(f, &watched, interval, started))?;
            // Wake at the next refresh, and now and then for a signal.
            let wait = next
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            if event::poll(wait)? {
                if let Event::Key(k) = event::read()? {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if k.kind == KeyEventKind::Press
                        && (ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc))
                    {
                        return Ok(());
                    }
                }
            }
            if STOP.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
    })();
    ratatui::restore();
    match result {
        Ok(()) => Status::Ok,
        Err(e) => fail(&format!("watch: {e}")),
    }
}

fn run_plain(watched: &mut [Watched], interval: Duration) -> Status {
    let mut out = std::io::stdout();
    let mut next = Instant::now();
    while !STOP.load(Ordering::Relaxed) {
        for w in watched.iter_mut() {
            w.refresh();
            if writeln!(out, "{}", w.summary()).is_err() {
                return Status::Ok; // the reader went away
            }
        }
        let _ = out.flush();
        next += interval;
        while !STOP.load(Ordering::Relaxed) && Instant::now() < next {
            std::thread::sleep(
                next.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
            );
        }
    }
    Status::Ok
}

fn draw(f: &mut Frame, watched: &[Watched], interval: Duration, started: Instant) {
    let area = f.area();
    let mut constraints: Vec<Constraint> = watched.iter().map(|_| Constraint::Max(9)).collect();
    constraints.push(Constraint::Min(0));
    constraints.push(Constraint::Length(1));
    let rows = Layout::vertical(constraints).split(area);
    for (w, row) in watched.iter().zip(rows.iter()) {
        draw_panel(f, w, *row);
    }
    let footer = format!(
        " every {}  ·  up {}  ·  q, Esc or Ctrl-C quits ",
        interval_text(interval),
        util::human_duration(started.elapsed())
    );
    f.render_widget(
        Paragraph::new(footer).style(Style::default().add_modifier(Modifier::DIM)),
        rows[rows.len() - 1],
    );
}

fn draw_panel(f: &mut Frame, w: &Watched, area: ratatui::layout::Rect) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let (title, lines, problem) = match (&w.error, &w.last) {
        (Some(e), _) => (
            format!(" {} ", w.name),
            vec![Line::from(Span::styled(
                e.clone(),
                Style::default().fg(Color::Red),
            ))],
            true,
        ),
        (None, None) => (format!(" {} ", w.name), vec![], false),
        (None, Some((_, s))) => {
            let recovered = s
                .recoveries
                .saturating_sub(w.first_recoveries.unwrap_or(s.recoveries));
            let lines = vec![
                Line::from(vec![
                    Span::raw("send "),
                    Span::styled(format!("{:>12}/s", rate(w.send_rate)), bold),
                    Span::raw("   recv "),
                    Span::styled(format!("{:>12}/s", rate(w.recv_rate)), bold),
                    Span::raw(format!("   depth {} / {}", s.depth, s.capacity)),
                ]),
                Line::from(format!(
                    "live {}   dead {}   unfinished {}   recoveries {} (+{} while watched)",
                    s.live,
                    s.dead,
                    s.unfinished.map_or("-".into(), |u| u.to_string()),
                    s.recoveries,
                    recovered
                )),
            ];
            (
                format!(" {} · {} · {} ", w.name, s.kind, s.state),
                lines,
                s.problem,
            )
        }
    };
    let border = if problem {
        Style::default().fg(Color::Red)
    } else {
        Style::default()
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(border)
        .title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [text, spark] = Layout::vertical([Constraint::Length(2), Constraint::Min(0)]).areas(inner);
    f.render_widget(Paragraph::new(lines), text);
    // The newest samples that fit, right-aligned in time.
    let width = spark.width as usize;
    let data: Vec<u64> = w
        .depths
        .iter()
        .skip(w.depths.len().saturating_sub(width))
        .copied()
        .collect();
    let peak = data.iter().copied().max().unwrap_or(0);
    // Bars are a share of the capacity: how full, not how much it moved.
    let capacity = w.last.as_ref().map_or(1, |(_, s)| s.capacity.max(1));
    f.render_widget(
        Sparkline::default()
            .block(Block::default().title(format!(
                "depth of {capacity}, last {} readings (peak {peak})",
                data.len()
            )))
            .data(&data)
            .max(capacity)
            .style(Style::default().fg(Color::Cyan)),
        spark,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_grouped() {
        assert_eq!(rate(0.0), "0.0");
        assert_eq!(rate(12345.64), "12,345.6");
        assert_eq!(rate(999.0), "999.0");
        assert_eq!(rate(1000.0), "1,000.0");
        assert_eq!(rate(1234567.0), "1,234,567.0");
    }
}
