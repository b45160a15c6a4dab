//! ISO-BMFF (MP4, MOV, M4A) top-level boxes: enough to tell a complete file from one whose
//! index was never written or whose last box was cut.

use std::io::{Read, Seek, SeekFrom};

#[derive(Debug, PartialEq, Eq)]
pub enum Layout {
    /// Not ISO-BMFF (MP4/MOV/M4A); nothing to say.
    Other,
    Complete,
    /// A top-level box extends past the end of the file.
    BoxCut,
    /// No moov (and no moof, so not fragmented): the index was never written.
    MoovMissing,
}

/// Walks the top-level ISO-BMFF boxes (a few reads, no parsing beyond box headers).
pub fn scan<R: Read + Seek>(f: &mut R, len: u64) -> std::io::Result<Layout> {
    let mut hdr = [0u8; 16];
    let n = f.read(&mut hdr)?;
    const TOP: [&[u8; 4]; 7] = [
        b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot",
    ];
    if n < 8 || !TOP.iter().any(|t| &hdr[4..8] == *t) {
        return Ok(Layout::Other);
    }
    let (mut off, mut moov, mut moof) = (0u64, false, false);
    while off + 8 <= len {
        f.seek(SeekFrom::Start(off))?;
        let got = f.read(&mut hdr)?;
        if got < 8 {
            break;
        }
        let mut size = u32::from_be_bytes(hdr[0..4].try_into().unwrap()) as u64;
        let kind = &hdr[4..8];
        if size == 1 {
            if got < 16 {
                return Ok(Layout::BoxCut);
            }
            size = u64::from_be_bytes(hdr[8..16].try_into().unwrap());
        } else if size == 0 {
            size = len - off; // "extends to end of file"
        }
        if size < 8 {
            break; // not a box structure we understand; leave it to the demuxer
        }
        if off + size > len {
            // A cut moov is as bad as none: the index is incomplete.
            return Ok(if kind != b"moov" && (moov || moof) {
                Layout::BoxCut
            } else {
                Layout::MoovMissing
            });
        }
        moov |= kind == b"moov";
        moof |= kind == b"moof";
        off += size;
    }
    Ok(if moov || moof {
        Layout::Complete
    } else {
        Layout::MoovMissing
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn isobmff_boxes() {
        let bx = |kind: &[u8; 4], len: u32| {
            let mut v = len.to_be_bytes().to_vec();
            v.extend_from_slice(kind);
            v.resize(len as usize, 0);
            v
        };
        let scan = |data: &[u8]| scan(&mut Cursor::new(data), data.len() as u64).unwrap();
        let (ftyp, moov, mdat) = (bx(b"ftyp", 24), bx(b"moov", 100), bx(b"mdat", 1000));
        let fast = [ftyp.clone(), moov.clone(), mdat.clone()].concat();
        let slow = [ftyp.clone(), mdat.clone(), moov.clone()].concat();
        assert_eq!(scan(&fast), Layout::Complete);
        assert_eq!(scan(&slow), Layout::Complete);
        assert_eq!(scan(&fast[..500]), Layout::BoxCut);
        assert_eq!(scan(&slow[..500]), Layout::MoovMissing);
        assert_eq!(scan(&slow[..1024]), Layout::MoovMissing);
        assert_eq!(scan(&slow[..1040]), Layout::MoovMissing); // moov header present, body cut
        assert_eq!(scan(b"hello world, not a box"), Layout::Other);
    }
}
