//! Small helpers: argument parsers, user names, formatting.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use mulproc::Request;

/// Parses `1.5s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 500ms, 2s, 1m)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses `DO`, `FINISHED`, `DIE` (any case) or a number.
pub fn parse_request(s: &str) -> Result<Request, String> {
    match s.to_ascii_uppercase().as_str() {
        "DO" => Ok(Request::DO),
        "FINISHED" => Ok(Request::FINISHED),
        "DIE" => Ok(Request::DIE),
        _ => s
            .parse::<u32>()
            .map(Request::new)
            .map_err(|_| format!("{s:?} is not DO, FINISHED, DIE or a number")),
    }
}

/// A request code as people read it.
pub fn request_name(r: Request) -> String {
    match r {
        Request::DO => "DO".into(),
        Request::FINISHED => "FINISHED".into(),
        Request::DIE => "DIE".into(),
        r => r.code().to_string(),
    }
}

/// The name of user `uid` (from the system's user database), or the
/// number.
pub fn user_name(uid: u32) -> String {
    static CACHE: Mutex<Option<HashMap<u32, String>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .get_or_insert_with(HashMap::new)
        .entry(uid)
        .or_insert_with(|| lookup_user(uid).unwrap_or_else(|| uid.to_string()))
        .clone()
}

fn lookup_user(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: all-zero is a valid `passwd` (integers and null pointers).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `pwd` and `result` are
    // out-parameters, `buf` is writable for its whole length; the strings
    // `pwd` points to afterwards live in `buf`.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success `pw_name` points to a NUL-terminated string
    // inside `buf`, which is still alive.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The name of group `gid` (from the system's group database), or the
/// number.
pub fn group_name(gid: u32) -> String {
    lookup_group(gid).unwrap_or_else(|| gid.to_string())
}

fn lookup_group(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16384];
    // SAFETY: all-zero is a valid `group` (integers and null pointers).
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in `lookup_user`: out-parameters and a writable buffer
    // that outlives the strings `grp` points into.
    let rc = unsafe {
        libc::getgrgid_r(
            gid,
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || grp.gr_name.is_null() {
        return None;
    }
    // SAFETY: on success `gr_name` points to a NUL-terminated string
    // inside `buf`, which is still alive.
    let name = unsafe { CStr::from_ptr(grp.gr_name) };
    Some(name.to_string_lossy().into_owned())
}

/// How long ago `t` was, for people: `42s`, `5m`, `3h`, `2d`.
pub fn age(t: Option<SystemTime>) -> String {
    match t.and_then(|t| SystemTime::now().duration_since(t).ok()) {
        Some(d) => human_duration(d),
        None => "-".into(),
    }
}

/// `d` in its largest whole unit.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Seconds since `t`, for JSON.
pub fn age_seconds(t: Option<SystemTime>) -> Option<f64> {
    t.and_then(|t| SystemTime::now().duration_since(t).ok())
        .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// Bytes for people: `512 B`, `3.0 KiB`, `1.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Bytes as lowercase hex, no separators.
pub fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes as text: printable ASCII as is, everything else as `.`.
pub fn printable(data: &[u8]) -> String {
    data.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

/// A classic hex dump: 16 bytes a line, offset, hex, text.
pub fn hex_dump(data: &[u8], indent: &str) -> String {
    let mut out = String::new();
    for (i, chunk) in data.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!(
            "{indent}{:04x}  {:<47}  |{}|\n",
            i * 16,
            hex.join(" "),
            printable(chunk)
        ));
    }
    out
}

/// Left-aligned columns: each row's cells padded to the widest in its
/// column, two spaces apart; the last column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Up to `max` pids, comma-separated, `…` if there were more.
pub fn pid_list(pids: &[u32], max: usize) -> String {
    let mut s: Vec<String> = pids.iter().take(max).map(u32::to_string).collect();
    if pids.len() > max {
        s.push("…".into());
    }
    s.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn requests() {
        assert_eq!(parse_request("do"), Ok(Request::DO));
        assert_eq!(parse_request("DIE"), Ok(Request::DIE));
        assert_eq!(parse_request("100"), Ok(Request::new(100)));
        assert!(parse_request("jump").is_err());
        assert_eq!(request_name(Request::new(100)), "100");
    }

    #[test]
    fn formatting() {
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 5)), "3h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024), "3.0 KiB");
        assert_eq!(hex(b"\x00\xffA"), "00ff41");
        assert_eq!(printable(b"hi\n\x00"), "hi..");
        assert_eq!(pid_list(&[1, 2, 3], 2), "1,2,…");
        assert_eq!(
            table(&[
                vec!["A".into(), "BB".into(), "C".into()],
                vec!["aaa".into(), "b".into(), "c".into()],
            ]),
            "A    BB  C\naaa  b   c\n"
        );
        assert!(hex_dump(b"hello", "").starts_with("0000  68 65 6c 6c 6f"));
    }
}
