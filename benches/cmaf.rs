//! `make bench`: what CMAF with common encryption costs next to MPEG-TS with AES-128.
//!
//! 1. In this process, one thread, 20 s of 720p30 (4 Mb/s x264 veryfast, 2 s GOP, AAC) cut
//!    into 2 s MPEG-TS segments by ffmpeg: packaging it as today's TS output does (AES-128
//!    over each whole segment) against packaging it as CMAF (re-wrapping every segment as a
//!    video and an audio fragment, then `cbcs`); and the `cbcs` transform alone. CPU ms per
//!    second of media.
//! 2. A release `ferrocast serve` takes the same 15 s of 720p30 over RTMP (ffmpeg `-re -c
//!    copy`, so the publisher costs the server nothing) into a stream packaged `ts` and into
//!    one packaged `cmaf` (with LL-HLS parts), one after the other: the server's CPU seconds
//!    for each broadcast (the default ladder: 720p copied, 480p and 360p encoded).
//!
//! Medians of 3 alternated runs. Every wait has a deadline.

mod common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

use ferrocast::media::cenc::{self, Protection, Scheme};
use ferrocast::media::cmaf::CmafRemuxer;
use ferrocast::packager::crypto::{encrypt_segment, iv_for_sequence};

const RUNS: usize = 3;
const SEGMENT_S: f64 = 2.0;

fn main() {
    let work = tempfile::tempdir().unwrap();
    let segments = ts_segments(work.path());
    let media_s = segments.len() as f64 * SEGMENT_S;
    let protection = Protection {
        scheme: Scheme::Cbcs,
        kid: [1; 16],
        key: [2; 16],
        constant_iv: [3; 16],
        pssh: vec![cenc::pssh_common(&[[1; 16]])],
    };
    let (mut ts_ms, mut cmaf_ms, mut cenc_ms) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=RUNS {
        eprintln!("packaging run {run}/{RUNS}");
        let started = Instant::now();
        for (n, s) in segments.iter().enumerate() {
            let mut bytes = s.clone();
            encrypt_segment(&[2; 16], &iv_for_sequence(n as u64), &mut bytes);
            std::hint::black_box(bytes);
        }
        ts_ms.push(started.elapsed().as_secs_f64() * 1000.0 / media_s);

        let mut clear = Vec::new();
        let started = Instant::now();
        let mut remuxer = CmafRemuxer::new(true);
        let mut infos = [None, None];
        let mut cenc_spent = Duration::ZERO;
        for (n, s) in segments.iter().enumerate() {
            let out = remuxer
                .remux(s, SEGMENT_S)
                .expect("ffmpeg's segments re-wrap");
            for (i, track) in [out.video, out.audio].into_iter().enumerate() {
                let Some(track) = track else { continue };
                let at = Instant::now();
                if let Some(init) = &track.init {
                    infos[i] = Some(cenc::protect_init(init, &protection).unwrap().1);
                }
                let info = infos[i]
                    .as_ref()
                    .expect("an init before the first fragment");
                let seed = ((i as u64) << 56) | ((n as u64) << 20);
                let bytes =
                    cenc::protect_segment(&track.fragment, info, &protection, seed).unwrap();
                cenc_spent += at.elapsed();
                std::hint::black_box(bytes);
                clear.push((i, track.fragment));
            }
        }
        cmaf_ms.push(started.elapsed().as_secs_f64() * 1000.0 / media_s);
        cenc_ms.push(cenc_spent.as_secs_f64() * 1000.0 / media_s);
    }
    let (ts, cmaf, cenc_only) = (
        median(&mut ts_ms),
        median(&mut cmaf_ms),
        median(&mut cenc_ms),
    );

    let (ts_cpu, cmaf_cpu) = broadcasts(work.path());
    record(
        "cmaf",
        &[
            row(
                "Packaging 720p30 + AAC (4.1 Mb/s), CPU ms per media second: CMAF + `cbcs` vs MPEG-TS + AES-128",
                format!("{cmaf:.2} ms"),
                "",
            )
            .against("TS + AES-128 (today's output), same process", format!("{ts:.2} ms"), ratio(cmaf, ts)),
            row(
                "The `cbcs` transform alone (moov/moof rewrite, subsample AES-CBC 1:9), CPU ms per media second",
                format!("{cenc_only:.2} ms"),
                "",
            ),
            row(
                "A 15 s RTMP broadcast of 720p30 through the default ladder, server CPU s: packaged `cmaf` (LL-HLS) vs `ts`",
                format!("{cmaf_cpu:.2} s"),
                "≤ 1.1×",
            )
            .against("the same broadcast packaged `ts`", format!("{ts_cpu:.2} s"), ratio(cmaf_cpu, ts_cpu)),
        ],
    );
}

/// 20 s of 720p30 as 2 s MPEG-TS segments (ffmpeg's segmenter, one keyframe each).
fn ts_segments(work: &std::path::Path) -> Vec<Vec<u8>> {
    let input = make_input(work, 720, 20);
    let dir = work.join("ts");
    std::fs::create_dir_all(&dir).unwrap();
    let out = output_within(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i"])
            .arg(&input)
            .args([
                "-c",
                "copy",
                "-f",
                "segment",
                "-segment_time",
                "2",
                "-segment_format",
                "mpegts",
            ])
            .arg(dir.join("s%03d.ts")),
        Duration::from_secs(120),
        "ffmpeg cutting the input into TS segments (Debian package ffmpeg)",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let segments: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(segments.len() >= 9, "{} segments", segments.len());
    segments
}

/// Server CPU seconds of one 15 s broadcast packaged `ts`, and of one packaged `cmaf`.
fn broadcasts(work: &std::path::Path) -> (f64, f64) {
    let input = make_input(work, 720, 15);
    let (server, base) = spawn_server(work, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body = |packaging: &str| serde_json::json!({"packaging": packaging, "record": false, "reconnect_window_s": 0, "playback_policy": "public"});
    let (key, ts_stream) = rt.block_on(tenant_and_stream(&base, body("ts")));
    let cmaf_stream: serde_json::Value = rt.block_on(async {
        let r = http()
            .post(format!("{base}/v1/live-streams"))
            .bearer_auth(&key)
            .json(&body("cmaf"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.json().await.unwrap()
    });
    let publish = |stream: &serde_json::Value| {
        let before = process_cpu(server.id());
        let out = output_within(
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
                .arg(&input)
                .args(["-c", "copy", "-f", "flv", &publish_url(stream)]),
            Duration::from_secs(60),
            "ffmpeg publishing 15 s (Debian package ffmpeg)",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The pipeline drains its last segments after the publisher leaves.
        std::thread::sleep(Duration::from_secs(3));
        process_cpu(server.id()) - before
    };
    let (mut ts, mut cmaf) = (Vec::new(), Vec::new());
    for run in 1..=RUNS {
        eprintln!("broadcast run {run}/{RUNS}");
        ts.push(publish(&ts_stream));
        cmaf.push(publish(&cmaf_stream));
    }
    kill_child(server, "ferrocast serve");
    (median(&mut ts), median(&mut cmaf))
}
