//! Fragmented MP4 as CMAF writes it (ISO/IEC 14496-12, ISO/IEC 23000-19): one track per
//! file, an init segment (`ftyp` + `moov` with an empty sample table and `mvex`), and media
//! fragments (`moof` + `mdat`) with `tfdt` and a `trun` holding every sample's duration,
//! size, flags and composition offset. Pure writers over bytes; `cmaf` feeds them.

/// What the init segment describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackKind {
    /// H.264: its AVCDecoderConfigurationRecord (`avcC`) and picture size.
    Avc {
        avcc: Vec<u8>,
        width: u16,
        height: u16,
    },
    /// AAC: its AudioSpecificConfig.
    Aac {
        asc: Vec<u8>,
        sample_rate: u32,
        channels: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub timescale: u32,
    pub kind: TrackKind,
}

/// Every CMAF file here holds one track, with this id.
pub const TRACK_ID: u32 = 1;

/// A sample as `trun` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub duration: u32,
    pub size: u32,
    /// A sync sample (a keyframe; every audio frame).
    pub sync: bool,
    /// Presentation time minus decode time, in the track's timescale.
    pub composition_offset: i32,
}

/// `sample_depends_on=1`, `sample_is_non_sync_sample=1`.
const FLAGS_NON_SYNC: u32 = 0x0101_0000;
/// `sample_depends_on=2` (an I-frame or audio).
const FLAGS_SYNC: u32 = 0x0200_0000;

/// Appends a box of `kind` whose body `body` writes, then fills in its size.
pub fn write_box(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend([0; 4]);
    out.extend(kind);
    body(out);
    let size = u32::try_from(out.len() - start).expect("boxes here are far below 4 GiB");
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box: a box whose body starts with a version and 24 bits of flags.
pub fn write_full_box(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    write_box(out, kind, |o| {
        o.push(version);
        o.extend(&flags.to_be_bytes()[1..]);
        body(o);
    });
}

fn u16s(out: &mut Vec<u8>, values: &[u16]) {
    for v in values {
        out.extend(v.to_be_bytes());
    }
}

fn u32s(out: &mut Vec<u8>, values: &[u32]) {
    for v in values {
        out.extend(v.to_be_bytes());
    }
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// The init segment of one track.
pub fn init_segment(track: &Track) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_box(&mut out, b"ftyp", |o| {
        o.extend(b"iso6");
        u32s(o, &[0]);
        o.extend(b"iso6cmfcdashmsdh");
    });
    write_box(&mut out, b"moov", |o| {
        write_full_box(o, b"mvhd", 0, 0, |o| {
            u32s(o, &[0, 0, 1000, 0, 0x0001_0000]);
            u16s(o, &[0x0100, 0]);
            u32s(o, &[0, 0]);
            u32s(o, &MATRIX);
            u32s(o, &[0; 6]);
            u32s(o, &[TRACK_ID + 1]);
        });
        write_box(o, b"trak", |o| trak(o, track));
        write_box(o, b"mvex", |o| {
            write_full_box(o, b"trex", 0, 0, |o| u32s(o, &[TRACK_ID, 1, 0, 0, 0]));
        });
    });
    out
}

fn trak(o: &mut Vec<u8>, track: &Track) {
    let (video, width, height) = match &track.kind {
        TrackKind::Avc { width, height, .. } => (true, *width, *height),
        TrackKind::Aac { .. } => (false, 0, 0),
    };
    // Enabled, in movie, in preview.
    write_full_box(o, b"tkhd", 0, 0x3, |o| {
        u32s(o, &[0, 0, TRACK_ID, 0, 0, 0, 0]);
        u16s(o, &[0, 0, if video { 0 } else { 0x0100 }, 0]);
        u32s(o, &MATRIX);
        u32s(o, &[u32::from(width) << 16, u32::from(height) << 16]);
    });
    write_box(o, b"mdia", |o| {
        write_full_box(o, b"mdhd", 0, 0, |o| {
            u32s(o, &[0, 0, track.timescale, 0]);
            u16s(o, &[0x55c4, 0]); // language "und"
        });
        write_full_box(o, b"hdlr", 0, 0, |o| {
            u32s(o, &[0]);
            o.extend(if video { b"vide" } else { b"soun" });
            u32s(o, &[0, 0, 0]);
            o.extend(if video {
                &b"Video\0"[..]
            } else {
                &b"Audio\0"[..]
            });
        });
        write_box(o, b"minf", |o| {
            if video {
                write_full_box(o, b"vmhd", 0, 1, |o| u16s(o, &[0; 4]));
            } else {
                write_full_box(o, b"smhd", 0, 0, |o| u16s(o, &[0, 0]));
            }
            write_box(o, b"dinf", |o| {
                write_full_box(o, b"dref", 0, 0, |o| {
                    u32s(o, &[1]);
                    write_full_box(o, b"url ", 0, 1, |_| {});
                });
            });
            write_box(o, b"stbl", |o| {
                write_full_box(o, b"stsd", 0, 0, |o| {
                    u32s(o, &[1]);
                    sample_entry(o, &track.kind);
                });
                write_full_box(o, b"stts", 0, 0, |o| u32s(o, &[0]));
                write_full_box(o, b"stsc", 0, 0, |o| u32s(o, &[0]));
                write_full_box(o, b"stsz", 0, 0, |o| u32s(o, &[0, 0]));
                write_full_box(o, b"stco", 0, 0, |o| u32s(o, &[0]));
            });
        });
    });
}

fn sample_entry(o: &mut Vec<u8>, kind: &TrackKind) {
    match kind {
        TrackKind::Avc {
            avcc,
            width,
            height,
        } => write_box(o, b"avc1", |o| {
            o.extend([0; 6]);
            u16s(o, &[1, 0, 0]);
            u32s(o, &[0, 0, 0]);
            u16s(o, &[*width, *height]);
            u32s(o, &[0x0048_0000, 0x0048_0000, 0]);
            u16s(o, &[1]);
            o.extend([0; 32]);
            u16s(o, &[0x0018, 0xffff]);
            write_box(o, b"avcC", |o| o.extend(avcc));
        }),
        TrackKind::Aac {
            asc,
            sample_rate,
            channels,
        } => write_box(o, b"mp4a", |o| {
            o.extend([0; 6]);
            u16s(o, &[1]);
            u32s(o, &[0, 0]);
            u16s(o, &[*channels, 16, 0, 0]);
            // 16.16 fixed point; rates above 65535 Hz keep the field's integer part at 0.
            u32s(
                o,
                &[if *sample_rate <= 0xffff {
                    sample_rate << 16
                } else {
                    0
                }],
            );
            write_full_box(o, b"esds", 0, 0, |o| esds(o, asc));
        }),
    }
}

/// An MPEG-4 descriptor: tag, a length in 7-bit groups, then the body.
fn descriptor(o: &mut Vec<u8>, tag: u8, body: &[u8]) {
    o.push(tag);
    let len = body.len();
    o.extend([
        0x80 | ((len >> 21) & 0x7f) as u8,
        0x80 | ((len >> 14) & 0x7f) as u8,
        0x80 | ((len >> 7) & 0x7f) as u8,
        (len & 0x7f) as u8,
    ]);
    o.extend(body);
}

fn esds(o: &mut Vec<u8>, asc: &[u8]) {
    let mut config = vec![0x40, 0x15, 0, 0, 0];
    config.extend([0; 8]); // max and average bitrate: unknown
    descriptor(&mut config, 0x05, asc);
    let mut es = vec![0, 0, 0]; // ES_ID 0, no flags
    descriptor(&mut es, 0x04, &config);
    descriptor(&mut es, 0x06, &[0x02]);
    descriptor(o, 0x03, &es);
}

/// One fragment: `moof` (sequence number, base decode time, every sample) and `mdat` with
/// `data`, the samples' bytes in order.
pub fn fragment(sequence: u32, base_decode_time: u64, samples: &[Sample], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64 + samples.len() * 16);
    let mut data_offset_at = 0;
    write_box(&mut out, b"moof", |o| {
        write_full_box(o, b"mfhd", 0, 0, |o| u32s(o, &[sequence]));
        write_box(o, b"traf", |o| {
            // default-base-is-moof: data offsets count from the moof's first byte.
            write_full_box(o, b"tfhd", 0, 0x02_0000, |o| u32s(o, &[TRACK_ID]));
            write_full_box(o, b"tfdt", 1, 0, |o| {
                o.extend(base_decode_time.to_be_bytes())
            });
            // data offset, duration, size, flags, composition offset (signed: version 1).
            write_full_box(o, b"trun", 1, 0x000f01, |o| {
                u32s(o, &[u32::try_from(samples.len()).unwrap_or(u32::MAX)]);
                data_offset_at = o.len();
                u32s(o, &[0]);
                for s in samples {
                    let flags = if s.sync { FLAGS_SYNC } else { FLAGS_NON_SYNC };
                    u32s(o, &[s.duration, s.size, flags]);
                    o.extend(s.composition_offset.to_be_bytes());
                }
            });
        });
    });
    let data_offset = u32::try_from(out.len() + 8).expect("a moof is far below 4 GiB");
    out[data_offset_at..data_offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
    let mdat = u32::try_from(data.len() + 8).unwrap_or(0);
    out.extend(mdat.to_be_bytes());
    out.extend(b"mdat");
    out.extend(data);
    out
}

/// A segment index (`sidx`, version 1) of the fragments that follow it: each one's size,
/// duration and whether it starts with a sync sample. Players reading a segment of several
/// fragments (ffmpeg's, with common encryption) need it.
pub fn sidx(
    timescale: u32,
    earliest_presentation_time: u64,
    fragments: &[(u32, u32, bool)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + 12 * fragments.len());
    write_full_box(&mut out, b"sidx", 1, 0, |o| {
        u32s(o, &[TRACK_ID, timescale]);
        o.extend(earliest_presentation_time.to_be_bytes());
        o.extend(0u64.to_be_bytes()); // first_offset: the fragments follow at once
        u16s(o, &[0, u16::try_from(fragments.len()).unwrap_or(u16::MAX)]);
        for &(size, duration, sap) in fragments.iter().take(usize::from(u16::MAX)) {
            // reference_type 0 (media), size; duration; starts_with_SAP, SAP type 1.
            u32s(
                o,
                &[
                    size & 0x7fff_ffff,
                    duration,
                    if sap { 0x9000_0000 } else { 0 },
                ],
            );
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The boxes at one level: (type, body).
    pub(crate) fn boxes(mut b: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        while b.len() >= 8 {
            let size = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
            assert!(
                size >= 8 && size <= b.len(),
                "box size {size} of {}",
                b.len()
            );
            out.push((b[4..8].try_into().unwrap(), &b[8..size]));
            b = &b[size..];
        }
        assert!(b.is_empty());
        out
    }

    #[test]
    fn a_fragment_points_its_samples_at_the_mdat() {
        let samples = [
            Sample {
                duration: 3000,
                size: 3,
                sync: true,
                composition_offset: 3000,
            },
            Sample {
                duration: 3000,
                size: 2,
                sync: false,
                composition_offset: 0,
            },
        ];
        let f = fragment(7, 1 << 33, &samples, &[1, 2, 3, 4, 5]);
        let top = boxes(&f);
        assert_eq!(
            top.iter().map(|b| &b.0).collect::<Vec<_>>(),
            [b"moof", b"mdat"]
        );
        assert_eq!(top[1].1, [1, 2, 3, 4, 5]);
        let traf = boxes(top[0].1)[1].1;
        let inner = boxes(traf);
        assert_eq!(&inner[1].1[4..], (1u64 << 33).to_be_bytes());
        let trun = inner[2].1;
        let offset = u32::from_be_bytes(trun[8..12].try_into().unwrap()) as usize;
        assert_eq!(&f[offset..offset + 5], [1, 2, 3, 4, 5]);
        assert_eq!(u32::from_be_bytes(trun[4..8].try_into().unwrap()), 2);
    }

    #[test]
    fn an_init_segment_nests_its_boxes_with_their_sizes() {
        let init = init_segment(&Track {
            timescale: 48000,
            kind: TrackKind::Aac {
                asc: vec![0x11, 0x90],
                sample_rate: 48000,
                channels: 2,
            },
        });
        let top = boxes(&init);
        assert_eq!(
            top.iter().map(|b| &b.0).collect::<Vec<_>>(),
            [b"ftyp", b"moov"]
        );
        let moov = boxes(top[1].1);
        assert_eq!(
            moov.iter().map(|b| &b.0).collect::<Vec<_>>(),
            [b"mvhd", b"trak", b"mvex"]
        );
        // mvhd is 108 bytes, as ISO 14496-12 defines version 0.
        assert_eq!(moov[0].1.len() + 8, 108);
        let trak = boxes(moov[1].1);
        assert_eq!(trak[0].1.len() + 8, 92, "tkhd version 0");
    }
}
