//! Geometry: the sizes a (capacity, max payload) pair makes, and the
//! checks of a copied-out `LayoutInfo` against them.

use super::*;
use crate::error::{ConfigError, CorruptKind};

/// Sizes derived from a (capacity, max payload) pair.
///
/// Queue: `HEADER_SIZE + capacity × (64 + round_up(max_payload, 64))`, slot
/// headers in one array, payloads in another.
/// Pipe: `HEADER_SIZE + 2 × capacity × round_up(32 + max_payload, 64)`:
/// each direction's slots hold their 32-byte header right before the
/// payload, so a small message is one cache line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub kind: ChannelKind,
    pub capacity: u32,
    pub max_payload: u32,
    pub stride: u32,
    pub data_offset: u64,
    pub total_size: u64,
}

/// Why a (capacity, max payload) pair cannot make a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GeometryError {
    CapacityNotPowerOfTwo,
    CapacityTooSmall,
    CapacityTooLarge,
    PayloadTooLarge,
    SegmentTooLarge,
}

impl Geometry {
    /// Computes and checks a queue's layout for `capacity` slots of up to
    /// `max_payload` bytes.
    #[cfg(test)]
    pub(crate) fn new(capacity: u32, max_payload: u32) -> Result<Geometry, GeometryError> {
        Geometry::of(ChannelKind::Queue, capacity, max_payload)
    }

    /// Computes and checks the layout of a segment of `kind`.
    pub(crate) fn of(
        kind: ChannelKind,
        capacity: u32,
        max_payload: u32,
    ) -> Result<Geometry, GeometryError> {
        if capacity < MIN_CAPACITY {
            return Err(GeometryError::CapacityTooSmall);
        }
        if !capacity.is_power_of_two() {
            return Err(GeometryError::CapacityNotPowerOfTwo);
        }
        if capacity > MAX_CAPACITY {
            return Err(GeometryError::CapacityTooLarge);
        }
        if max_payload > MAX_PAYLOAD_LIMIT {
            return Err(GeometryError::PayloadTooLarge);
        }
        let cap = capacity as u64;
        let (stride, data_offset, total_size) = match kind {
            ChannelKind::Queue => {
                let stride = round_up(max_payload as u64, PAYLOAD_ALIGN as u64);
                let data_offset = QUEUE_HEADER_SIZE as u64 + cap * SLOT_HEADER_SIZE as u64;
                (stride, data_offset, data_offset + cap * stride)
            }
            ChannelKind::Pipe => {
                let stride = round_up(
                    PIPE_SLOT_HEADER_SIZE as u64 + max_payload as u64,
                    PAYLOAD_ALIGN as u64,
                );
                let data_offset = HEADER_SIZE as u64;
                (stride, data_offset, data_offset + 2 * cap * stride)
            }
        };
        if total_size > MAX_SEGMENT_SIZE {
            return Err(GeometryError::SegmentTooLarge);
        }
        Ok(Geometry {
            kind,
            capacity,
            max_payload,
            // stride <= MAX_PAYLOAD_LIMIT rounded up, fits in u32.
            stride: stride as u32,
            data_offset,
            total_size,
        })
    }

    /// [`Geometry::of`] for a configuration's pair, its errors as the
    /// [`ConfigError`] that names the offending value (the one conversion
    /// queues and pipes share).
    pub(crate) fn checked(
        kind: ChannelKind,
        capacity: u32,
        max_payload: u32,
    ) -> Result<Geometry, ConfigError> {
        Geometry::of(kind, capacity, max_payload).map_err(|e| match e {
            GeometryError::CapacityTooSmall => ConfigError::CapacityTooSmall(capacity),
            GeometryError::CapacityNotPowerOfTwo => ConfigError::CapacityNotPowerOfTwo(capacity),
            GeometryError::CapacityTooLarge => ConfigError::CapacityTooLarge(capacity),
            GeometryError::PayloadTooLarge => ConfigError::PayloadTooLarge(max_payload),
            GeometryError::SegmentTooLarge => ConfigError::SegmentTooLarge,
        })
    }

    /// The `LayoutInfo` a creator writes for this geometry.
    pub(crate) fn info(&self, creator_pid: u32, creator_uid: u32) -> LayoutInfo {
        LayoutInfo {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            header_size: self.kind.header_size() as u32,
            capacity: self.capacity,
            max_payload: self.max_payload,
            slot_header_size: self.kind.slot_header_size() as u32,
            stride: self.stride,
            data_offset: self.data_offset,
            total_size: self.total_size,
            creator_pid,
            creator_uid,
            kind: self.kind as u32,
            _reserved: 0,
        }
    }
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// What `validate` found wrong with a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayoutError {
    /// Not a mulproc segment at all.
    BadMagic,
    /// A mulproc segment of another layout version.
    Version(u32),
    /// Fields that contradict each other or the file.
    Corrupt(CorruptKind),
}

/// Checks a copied-out `LayoutInfo` against the layout formula and the size
/// of the file it came from, and returns the geometry to use.
pub(crate) fn validate(info: &LayoutInfo, file_size: u64) -> Result<Geometry, LayoutError> {
    if info.magic != MAGIC {
        return Err(LayoutError::BadMagic);
    }
    if info.version != LAYOUT_VERSION {
        return Err(LayoutError::Version(info.version));
    }
    let kind =
        ChannelKind::from_u32(info.kind).ok_or(LayoutError::Corrupt(CorruptKind::LayoutFields))?;
    if info.header_size as usize != kind.header_size()
        || info.slot_header_size as usize != kind.slot_header_size()
    {
        return Err(LayoutError::Corrupt(CorruptKind::LayoutFields));
    }
    let geo = Geometry::of(kind, info.capacity, info.max_payload)
        .map_err(|_| LayoutError::Corrupt(CorruptKind::LayoutFields))?;
    if geo.stride != info.stride
        || geo.data_offset != info.data_offset
        || geo.total_size != info.total_size
    {
        return Err(LayoutError::Corrupt(CorruptKind::LayoutFields));
    }
    if file_size < geo.total_size {
        return Err(LayoutError::Corrupt(CorruptKind::Truncated {
            expected: geo.total_size,
            found: file_size,
        }));
    }
    Ok(geo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_formula_matches_documentation() {
        let g = Geometry::new(8, 100).unwrap();
        assert_eq!(g.stride, 128);
        assert_eq!(
            g.total_size,
            (QUEUE_HEADER_SIZE + 8 * (SLOT_HEADER_SIZE + 128)) as u64
        );
        let g = Geometry::new(1024, 64).unwrap();
        assert_eq!(g.total_size, (QUEUE_HEADER_SIZE + 1024 * (64 + 64)) as u64);
        let g = Geometry::new(2, 0).unwrap();
        assert_eq!(g.stride, 0);
        assert_eq!(g.total_size, (QUEUE_HEADER_SIZE + 2 * 64) as u64);
    }

    #[test]
    fn pipe_size_formula() {
        let g = Geometry::of(ChannelKind::Pipe, 8, 64).unwrap();
        assert_eq!(g.stride, 128); // 32 + 64 rounded up to 64
        assert_eq!(g.total_size, (HEADER_SIZE + 2 * 8 * 128) as u64);
        let g = Geometry::of(ChannelKind::Pipe, 4, 32).unwrap();
        assert_eq!(g.stride, 64); // one cache line per message
        let info = g.info(1, 0);
        assert_eq!(validate(&info, g.total_size), Ok(g));
    }

    #[test]
    fn geometry_rejects_bad_capacity_and_payload() {
        assert_eq!(Geometry::new(0, 8), Err(GeometryError::CapacityTooSmall));
        assert_eq!(Geometry::new(1, 8), Err(GeometryError::CapacityTooSmall));
        assert_eq!(
            Geometry::new(3, 8),
            Err(GeometryError::CapacityNotPowerOfTwo)
        );
        assert_eq!(
            Geometry::new(1000, 8),
            Err(GeometryError::CapacityNotPowerOfTwo)
        );
        assert_eq!(
            Geometry::new(1 << 25, 8),
            Err(GeometryError::CapacityTooLarge)
        );
        assert_eq!(
            Geometry::new(2, MAX_PAYLOAD_LIMIT + 1),
            Err(GeometryError::PayloadTooLarge)
        );
        assert_eq!(
            Geometry::new(MAX_CAPACITY, MAX_PAYLOAD_LIMIT),
            Err(GeometryError::SegmentTooLarge)
        );
    }

    #[test]
    fn validate_accepts_what_create_writes() {
        let g = Geometry::new(16, 64).unwrap();
        let info = g.info(1, 0);
        assert_eq!(validate(&info, g.total_size), Ok(g));
        assert_eq!(validate(&info, g.total_size + 4096), Ok(g));
    }

    #[test]
    fn validate_rejects_each_kind_of_damage() {
        let g = Geometry::new(16, 64).unwrap();
        let good = g.info(1, 0);

        let mut i = good;
        i.magic ^= 1;
        assert_eq!(validate(&i, g.total_size), Err(LayoutError::BadMagic));

        let mut i = good;
        i.version = 99;
        assert_eq!(validate(&i, g.total_size), Err(LayoutError::Version(99)));

        for damage in [
            |i: &mut LayoutInfo| i.capacity = 12,
            |i: &mut LayoutInfo| i.capacity = 0,
            |i: &mut LayoutInfo| i.capacity = 32,
            |i: &mut LayoutInfo| i.stride = 8,
            |i: &mut LayoutInfo| i.max_payload = u32::MAX,
            |i: &mut LayoutInfo| i.data_offset += 64,
            |i: &mut LayoutInfo| i.total_size -= 1,
            |i: &mut LayoutInfo| i.header_size = 0,
            |i: &mut LayoutInfo| i.slot_header_size = 128,
            |i: &mut LayoutInfo| i.kind = 0,
            |i: &mut LayoutInfo| i.kind = 2, // a pipe's formula gives other sizes
        ] {
            let mut i = good;
            damage(&mut i);
            assert_eq!(
                validate(&i, g.total_size * 4),
                Err(LayoutError::Corrupt(CorruptKind::LayoutFields)),
                "{i:?}"
            );
        }

        assert_eq!(
            validate(&good, g.total_size - 1),
            Err(LayoutError::Corrupt(CorruptKind::Truncated {
                expected: g.total_size,
                found: g.total_size - 1
            }))
        );
    }
}
