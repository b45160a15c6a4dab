//! Codec configuration: the parameter sets a muxer needs (AVCDecoderConfigurationRecord,
//! SPS, AudioSpecificConfig) and the RFC 6381 codec strings a master playlist names.
//! Pure functions over bytes.

use super::Malformed;

/// What an AVCDecoderConfigurationRecord holds that a muxer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// Bytes in each NAL unit's length prefix (1, 2 or 4).
    pub length_size: usize,
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
}

pub fn parse_avc_config(record: &[u8]) -> Result<AvcConfig, Malformed> {
    let bad = || {
        Malformed(format!(
            "malformed AVC decoder configuration ({} bytes)",
            record.len()
        ))
    };
    if record.len() < 7 || record[0] != 1 {
        return Err(bad());
    }
    let length_size = usize::from(record[4] & 0x03) + 1;
    if length_size == 3 {
        return Err(bad());
    }
    let mut i = 5;
    let read_sets = |count: usize, i: &mut usize| -> Result<Vec<Vec<u8>>, Malformed> {
        let mut sets = Vec::with_capacity(count);
        for _ in 0..count {
            let len = record
                .get(*i..*i + 2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                .ok_or_else(bad)?;
            let set = record.get(*i + 2..*i + 2 + len).ok_or_else(bad)?;
            sets.push(set.to_vec());
            *i += 2 + len;
        }
        Ok(sets)
    };
    let sps_count = usize::from(record[i] & 0x1f);
    i += 1;
    let sps = read_sets(sps_count, &mut i)?;
    let pps_count = usize::from(*record.get(i).ok_or_else(bad)?);
    i += 1;
    let pps = read_sets(pps_count, &mut i)?;
    if sps.is_empty() || pps.is_empty() || sps[0].is_empty() {
        return Err("AVC decoder configuration without SPS or PPS".into());
    }
    Ok(AvcConfig {
        length_size,
        sps,
        pps,
    })
}

/// The picture size and frame rate an SPS declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    pub width: u32,
    pub height: u32,
    /// From the VUI timing info, when present: (numerator, denominator).
    pub fps: Option<(i32, i32)>,
}

/// Reads bits MSB first from an RBSP (emulation prevention bytes already removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }
    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }
    /// Exp-Golomb unsigned.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)) as u32)
    }
    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        Some(if k % 2 == 1 {
            k.div_ceil(2) as i32
        } else {
            -((k / 2) as i32)
        })
    }
}

fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Macroblocks a side of a picture may have at most (see [`parse_sps`]).
const MAX_SIDE_MBS: u32 = 1056;

/// Parses an SPS NAL unit (header byte included) for its display size and frame rate.
pub fn parse_sps(nal: &[u8]) -> Option<SpsInfo> {
    if nal.first()? & 0x1f != 7 {
        return None;
    }
    let data = rbsp(&nal[1..]);
    let r = &mut Bits {
        data: &data,
        pos: 0,
    };
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            // delta_scale is -128..=127 (H.264 7.4.2.1.1.1).
                            let delta = r.se().filter(|d| (-128..=127).contains(d))?;
                            next = (last + delta + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? + 1;
    let height_units = r.ue()? + 1;
    // No H.264 level allows a side beyond sqrt(8 × MaxFS) = 1,055 macroblocks (level 6.2),
    // so larger values are refused before they are multiplied (a publisher sends them).
    if width_mbs > MAX_SIDE_MBS || height_units > MAX_SIDE_MBS {
        return None;
    }
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if r.bit()? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (sub_w, sub_h) = match chroma_format {
            0 => (1, 1),
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        crop_x = left.checked_add(right)?.checked_mul(sub_w)?;
        crop_y = top
            .checked_add(bottom)?
            .checked_mul(sub_h * (2 - frame_mbs_only))?;
    }
    let width = (width_mbs * 16).checked_sub(crop_x)?;
    let height = ((2 - frame_mbs_only) * height_units * 16).checked_sub(crop_y)?;
    let fps = vui_frame_rate(r);
    Some(SpsInfo { width, height, fps })
}

fn vui_frame_rate(r: &mut Bits) -> Option<(i32, i32)> {
    if r.bit()? == 0 {
        return None;
    }
    if r.bit()? == 1 && r.bits(8)? == 255 {
        r.bits(32)?; // sar_width, sar_height
    }
    if r.bit()? == 1 {
        r.bit()?; // overscan_appropriate_flag
    }
    if r.bit()? == 1 {
        r.bits(4)?; // video_format, video_full_range_flag
        if r.bit()? == 1 {
            r.bits(24)?; // colour primaries, transfer, matrix
        }
    }
    if r.bit()? == 1 {
        r.ue()?;
        r.ue()?;
    }
    if r.bit()? == 0 {
        return None;
    }
    let units = u64::from(r.bits(32)?);
    let scale = u64::from(r.bits(32)?);
    let (mut n, mut d) = (scale, units * 2);
    if n == 0 || d == 0 {
        return None;
    }
    let g = gcd(n, d);
    (n, d) = (n / g, d / g);
    let rate = n as f64 / d as f64;
    ((1.0..=240.0).contains(&rate) && n <= i32::MAX as u64 && d <= i32::MAX as u64)
        .then_some((n as i32, d as i32))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// What an AAC AudioSpecificConfig holds that an ADTS header repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    pub object_type: u8,
    pub frequency_index: u8,
    pub channels: u8,
}

pub fn parse_aac_config(asc: &[u8]) -> Result<AacConfig, Malformed> {
    let [b0, b1, ..] = asc else {
        return Err(Malformed(format!(
            "AAC configuration of {} bytes",
            asc.len()
        )));
    };
    let object_type = b0 >> 3;
    let frequency_index = ((b0 & 0x07) << 1) | (b1 >> 7);
    let channels = (b1 >> 3) & 0x0f;
    if object_type == 0 || object_type == 31 || frequency_index > 12 {
        return Err(Malformed(format!(
            "AAC configuration ADTS cannot carry (object type {object_type}, rate index {frequency_index})"
        )));
    }
    Ok(AacConfig {
        object_type,
        frequency_index,
        channels,
    })
}

/// `avc1.PPCCLL` from an AVCDecoderConfigurationRecord (the FLV/MP4 `avcC` box).
pub fn avc_codec_from_config(record: &[u8]) -> Option<String> {
    (record.len() >= 4 && record[0] == 1)
        .then(|| format!("avc1.{:02x}{:02x}{:02x}", record[1], record[2], record[3]))
}

/// `avc1.PPCCLL` from the first SPS found in Annex B H.264 bytes (such as an MPEG-TS
/// segment, where the SPS sits near the start of the first PES payload).
pub fn avc_codec_from_annexb(bytes: &[u8]) -> Option<String> {
    bytes.windows(7).find_map(|w| {
        (w[0] == 0 && w[1] == 0 && w[2] == 1 && w[3] & 0x1f == 7)
            .then(|| format!("avc1.{:02x}{:02x}{:02x}", w[4], w[5], w[6]))
    })
}

/// `avc1.PPCCLL` from x264's profile name and level (e.g. `"high"`, `"3.1"`).
pub fn avc_codec_from_profile(profile: &str, level: &str) -> Option<String> {
    let (idc, constraints) = match profile {
        "constrained-baseline" | "baseline" => (0x42, 0xc0),
        "main" => (0x4d, 0x40),
        "high" => (0x64, 0x00),
        _ => return None,
    };
    let level: f64 = level.parse().ok()?;
    Some(format!(
        "avc1.{idc:02x}{constraints:02x}{:02x}",
        (level * 10.0).round() as u32
    ))
}

/// `mp4a.40.N` from an AAC AudioSpecificConfig (N = audio object type, 2 for AAC-LC).
pub fn aac_codec_from_config(asc: &[u8]) -> Option<String> {
    let object_type = asc.first()? >> 3;
    (object_type > 0).then(|| format!("mp4a.40.{object_type}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn avc_and_aac_configurations_are_read() {
        // avcC: version 1, High 4.0, 4-byte lengths, one SPS, one PPS.
        let record = [
            1, 0x64, 0, 0x28, 0xff, 0xe1, 0, 3, 0x67, 0x64, 0, 1, 0, 2, 0x68, 0xee,
        ];
        let c = parse_avc_config(&record).unwrap();
        assert_eq!(c.length_size, 4);
        assert_eq!(c.sps, vec![vec![0x67, 0x64, 0]]);
        assert_eq!(c.pps, vec![vec![0x68, 0xee]]);
        assert!(parse_avc_config(&record[..9]).is_err());
        assert!(parse_avc_config(&[2, 0, 0, 0, 0xff, 0xe1, 0]).is_err());

        // AAC-LC, 48 kHz, stereo: 0x11 0x90.
        let a = parse_aac_config(&[0x11, 0x90]).unwrap();
        assert_eq!((a.object_type, a.frequency_index, a.channels), (2, 3, 2));
        assert!(parse_aac_config(&[0x11]).is_err());
        assert!(parse_aac_config(&[0x17, 0x90]).is_err()); // explicit rate: not in ADTS
    }

    #[test]
    fn sps_sizes_and_rates_come_out_of_real_encoders_parameter_sets() {
        // ffmpeg libx264 (High), 1280x720, 30 fps.
        let sps_720 = hex("6764001facd9405005bb0110000003001000000303c0f1831960");
        let i = parse_sps(&sps_720).unwrap();
        assert_eq!((i.width, i.height, i.fps), (1280, 720, Some((30, 1))));
        // 1920x1080 is coded as 1088 lines with 8 cropped.
        let sps_1080 = hex("67640028acd940780227e5c044000003000400000300f03c60c658");
        let i = parse_sps(&sps_1080).unwrap();
        assert_eq!((i.width, i.height, i.fps), (1920, 1080, Some((30, 1))));
        // GStreamer x264enc without profile caps: High 4:4:4 Predictive (chroma fields), 640x360.
        let sps_444 = hex("67f4001e90d9640280bfe27016a0c0c0c8000003000800000301e478b17240");
        let i = parse_sps(&sps_444).unwrap();
        assert_eq!((i.width, i.height, i.fps), (640, 360, Some((30, 1))));
        assert!(parse_sps(&[0x68, 0]).is_none());
        assert!(parse_sps(&sps_720[..4]).is_none());
    }

    #[test]
    fn codec_strings() {
        assert_eq!(
            avc_codec_from_config(&[1, 0x64, 0x00, 0x1f, 0xff]).as_deref(),
            Some("avc1.64001f")
        );
        assert_eq!(avc_codec_from_config(&[0, 1, 2]), None);
        assert_eq!(
            avc_codec_from_profile("high", "3.1").as_deref(),
            Some("avc1.64001f")
        );
        assert_eq!(
            avc_codec_from_profile("main", "4").as_deref(),
            Some("avc1.4d4028")
        );
        assert_eq!(
            avc_codec_from_profile("baseline", "3").as_deref(),
            Some("avc1.42c01e")
        );
        assert_eq!(
            avc_codec_from_annexb(&[
                0x47, 0, 0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x4d, 0x40, 0x1e, 0xab
            ])
            .as_deref(),
            Some("avc1.4d401e")
        );
        assert_eq!(avc_codec_from_annexb(&[0, 0, 1, 0x65, 1, 2, 3]), None);
        assert_eq!(
            aac_codec_from_config(&[0x12, 0x10]).as_deref(),
            Some("mp4a.40.2")
        );
    }

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }
}
