//! Fuzz target: random segments given to `Queue::open` and `Pipe::open`.
//!
//! The first input byte picks how the segment file is made (its top bits
//! are flags for the mode):
//!
//! - `% 4 == 0`, raw: the rest of the input is the file, byte for byte
//!   (bit 4: with a valid magic and version in front);
//! - `% 4 == 1`, forged: a layout header whose fields follow the layout
//!   formula for a capacity, max payload and kind read from the input, a
//!   file length near the one it declares, then patches;
//! - `% 4 == 2`, real queue: `Queue::create`, some messages sent (some
//!   received out of order), then patches (bit 4: patches may also truncate
//!   or extend the file);
//! - `% 4 == 3`, real pipe: the same with `Pipe::create`.
//!
//! Then `Queue::open` and `Pipe::open` are called on the name, and whatever
//! opens is used: receives of every flavour, sends, `len`, `is_empty`, more
//! patches, a bounded number of times, then receives until `Empty` or an
//! error. The handle that created the segment is used too, unless the file's
//! length was changed (its mapping may then reach past the end of the file).
//!
//! Must never panic, abort or hang. Unless `MULPROC_FUZZ_SLOW=1`, files are
//! kept out of the paths where `open` sleeps 200 ms (see `slow_paths`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mulproc::{Message, Pipe, PipeConfig, Queue, QueueConfig, Request};
use mulproc_fuzz::{
    exercise_pipe, exercise_queue, fast_fixups, fast_fixups_bytes, hint, payload, Input, Shape,
    Shm, Target,
};

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let shape = Shape::detect();
    let mut input = Input::new(data);
    let mode = input.u8();
    match mode % 4 {
        0 => raw(mode, &mut input, shape),
        1 => forged(mode, &mut input, shape),
        2 => real_queue(mode, &mut input, shape),
        _ => real_pipe(mode, &mut input, shape),
    }
}

fn raw(mode: u8, input: &mut Input<'_>, shape: Shape) {
    let shm = Shm::new("raw");
    let mut bytes = input.rest().to_vec();
    if mode & 0x10 != 0 && bytes.len() >= 12 {
        bytes[..8].copy_from_slice(&hint::MAGIC.to_le_bytes());
        bytes[8..12].copy_from_slice(&shape.version.to_le_bytes());
    }
    fast_fixups_bytes(&mut bytes, shape);
    if shm.create_with(&bytes).is_err() {
        return;
    }
    open_and_use(&shm, &mut Input::new(&[]), shape);
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to).saturating_mul(to)
}

fn forged(mode: u8, input: &mut Input<'_>, shape: Shape) {
    let shm = Shm::new("forged");
    let pipe = mode & 0x10 != 0;
    let c = input.u8();
    let capacity: u32 = if c < 0xF0 { 2 << (c % 24) } else { input.u32() };
    let max_payload: u32 = if mode & 0x20 == 0 {
        input.u16() as u32
    } else {
        input.u32()
    };
    let cap = capacity as u64;
    // Start from a real segment's first line (header size, slot header
    // size, creator, ...), then write the fields the formula derives.
    let mut info = if pipe {
        shape.pipe_info
    } else {
        shape.queue_info
    };
    let field = |info: &[u8; 64], at: usize| {
        u32::from_le_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]]) as u64
    };
    let slot_header = field(&info, 24);
    let (stride, data_offset, total) = if pipe {
        let stride = round_up(slot_header + max_payload as u64, 64);
        let total = shape
            .pipe_header
            .saturating_add(cap.saturating_mul(2).saturating_mul(stride));
        (stride, shape.pipe_header, total)
    } else {
        let stride = round_up(max_payload as u64, 64);
        let data_offset = shape.header + cap * slot_header;
        (
            stride,
            data_offset,
            data_offset.saturating_add(cap.saturating_mul(stride)),
        )
    };
    info[16..20].copy_from_slice(&capacity.to_le_bytes());
    info[20..24].copy_from_slice(&max_payload.to_le_bytes());
    info[28..32].copy_from_slice(&(stride as u32).to_le_bytes());
    info[32..40].copy_from_slice(&data_offset.to_le_bytes());
    info[40..48].copy_from_slice(&total.to_le_bytes());
    info[48..52].copy_from_slice(&std::process::id().to_le_bytes());
    let info = info.to_vec();
    let mut head = info;
    head.resize(shape.pipe_header.min(shape.header) as usize, 0);
    head[hint::INIT as usize..hint::INIT as usize + 4]
        .copy_from_slice(&hint::INIT_DONE.to_le_bytes());
    if shm.create_with(&head).is_err() {
        return;
    }
    let Ok(file) = shm.open() else { return };
    // A length near the declared one (at most 16 MiB: the rest of the
    // declared size is simply missing, which `open` must notice).
    let delta = (input.u16() as i16) as i64 * 8;
    let len = (total.min(16 << 20) as i64 + delta).clamp(0, 16 << 20) as u64;
    if file.set_len(len).is_err() {
        return;
    }
    // Queue slots start FREE for their index, as `create` leaves them.
    if !pipe && mode & 0x40 != 0 && cap <= 4096 {
        let seqs: Vec<u8> = (0..cap)
            .flat_map(|i| {
                let mut s = [0u8; 64];
                s[..8].copy_from_slice(&i.to_le_bytes());
                s
            })
            .collect();
        let _ = std::os::unix::fs::FileExt::write_all_at(&file, &seqs, shape.header);
    }
    let target = Target {
        file: &file,
        pipe,
        shape,
        capacity: cap.clamp(1, 1 << 20).next_power_of_two(),
        slot_stride: if pipe { stride.max(64) } else { slot_header },
        first_slot: if pipe {
            shape.pipe_header
        } else {
            shape.header
        },
        resize: true,
        min_len: 0,
        resized: Default::default(),
    };
    for _ in 0..input.u8() % 8 {
        target.patch(input);
    }
    fast_fixups(&file, shape);
    open_and_use(&shm, input, shape);
}

fn real_queue(mode: u8, input: &mut Input<'_>, shape: Shape) {
    let shm = Shm::new("queue");
    let cap = 2u32 << (input.u8() % 5);
    let max = input.u8() as u32;
    let Ok(mut q) = Queue::create(shm.name(), QueueConfig::new(cap, max)) else {
        return;
    };
    q.set_remove_on_drop(false); // `shm` removes the name
    let n = input.u8() as u32 % (cap + 1);
    for i in 0..n {
        let m = Message::new(Request::new(i), payload(i, (i % (max + 1)) as usize));
        let m = if i % 3 == 1 { m.to(q.pid()) } else { m };
        let _ = q.try_send(m);
    }
    // Out of order: leaves read slots behind an unread one.
    for _ in 0..input.u8() % 4 {
        let _ = q.try_recv_where(|h, _| h.request.code() % 2 == 1);
    }
    let Ok(file) = shm.open() else { return };
    let target = Target {
        file: &file,
        pipe: false,
        shape,
        capacity: cap as u64,
        slot_stride: shape.slot_header,
        first_slot: shape.header,
        resize: mode & 0x10 != 0,
        min_len: shape.header,
        resized: Default::default(),
    };
    for _ in 0..input.u8() % 12 {
        target.patch(input);
    }
    fast_fixups(&file, shape);
    open_and_use(&shm, input, shape);
    if !target.resized.get() {
        // The creator's handle, over the same scribbled memory.
        let mut rest = Input::new(&[]);
        exercise_queue(&q, &mut rest, 8, |_| {});
    }
}

fn real_pipe(mode: u8, input: &mut Input<'_>, shape: Shape) {
    let shm = Shm::new("pipe");
    let cap = 2u32 << (input.u8() % 5);
    let max = input.u8() as u32;
    let Ok(mut parent) = Pipe::create(shm.name(), PipeConfig::new(cap, max)) else {
        return;
    };
    parent.set_remove_on_drop(false);
    let n = input.u8() as u32 % (cap + 1);
    for i in 0..n {
        let _ = parent.try_send(Message::new(
            Request::DO,
            payload(i, (i % (max + 1)) as usize),
        ));
    }
    let Ok(file) = shm.open() else { return };
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let stride = file_len.saturating_sub(shape.pipe_header) / (2 * cap as u64);
    let target = Target {
        file: &file,
        pipe: true,
        shape,
        capacity: cap as u64,
        slot_stride: stride,
        first_slot: shape.pipe_header,
        resize: mode & 0x10 != 0,
        min_len: shape.pipe_header,
        resized: Default::default(),
    };
    for _ in 0..input.u8() % 12 {
        target.patch(input);
    }
    fast_fixups(&file, shape);
    open_and_use(&shm, input, shape);
    if !target.resized.get() {
        let mut rest = Input::new(&[]);
        exercise_pipe(&mut parent, &mut rest, 8);
    }
}

/// Opens the segment both ways and uses whatever opens.
fn open_and_use(shm: &Shm, input: &mut Input<'_>, shape: Shape) {
    match Queue::open(shm.name()) {
        Ok(q) => {
            let file = shm.open().ok();
            exercise_queue(&q, input, 24, |inp| {
                // More scribbling while in use (never resizing: the handle
                // is mapped).
                if let Some(file) = &file {
                    let target = Target {
                        file,
                        pipe: false,
                        shape,
                        capacity: q.capacity() as u64,
                        slot_stride: shape.slot_header,
                        first_slot: shape.header,
                        resize: false,
                        min_len: 0,
                        resized: Default::default(),
                    };
                    target.patch(inp);
                }
            });
        }
        Err(e) => {
            let _ = (e.to_string(), format!("{e:?}"));
        }
    }
    match Pipe::open(shm.name()) {
        Ok(mut p) => exercise_pipe(&mut p, input, 24),
        Err(e) => {
            let _ = (e.to_string(), format!("{e:?}"));
        }
    }
}
