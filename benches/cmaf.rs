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
//! 3. Glass to glass: a GStreamer publisher in this process draws the wall clock into each
//!    720p30 frame as a bar code (x264 zerolatency, 2 s GOP, AAC, over RTMP, as OBS sends);
//!    hls.js in headless Chromium plays the stream and reads the bar code back from every
//!    frame it shows (`glass-to-glass.cjs`): shown minus drawn, on one clock. For a stream
//!    packaged `cmaf` (LL-HLS, as the `/play` page configures hls.js), the same through the
//!    `passthrough` ladder, and one packaged `ts` (hls.js defaults), 30 s each after 10 s of
//!    playing, 3 alternated runs. The publisher
//!    encodes `ultrafast`: it stands for the broadcaster's own machine, and must not take the
//!    server's two cores here. MediaMTX and OvenMediaEngine,
//!    the peers, have no package in Debian, PyPI or npm (the only registries this
//!    machine reaches), so they are not run: their documented figures are quoted.
//!
//! Medians of 3 alternated runs. Every wait has a deadline. `CMAF_BENCH_GLASS_ONLY=1` runs only part 3 and prints its figures.

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
    if std::env::var_os("CMAF_BENCH_GLASS_ONLY").is_some() {
        let ll = glass_to_glass(work.path());
        eprintln!(
            "cmaf {:?}, cmaf passthrough {:?}, ts {:?}",
            ll.cmaf, ll.copied, ll.ts
        );
        return;
    }
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
    let ll = glass_to_glass(work.path());
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
            row(
                "Glass to glass, LL-HLS (`cmaf`), hls.js in Chromium on loopback, 5 screenshots a second for 30 s: median of 3 runs' medians (p95 of all)",
                format!("{:.2} s ({:.2} s)", ll.cmaf.0, ll.cmaf.1),
                "median ≤ 1.5 s",
            )
            .against(
                "the same publisher and player on a `ts` stream (hls.js defaults)",
                format!("{:.2} s ({:.2} s)", ll.ts.0, ll.ts.1),
                ratio(ll.cmaf.0, ll.ts.0),
            ),
            row(
                "Glass to glass, LL-HLS (`cmaf`) through the `passthrough` ladder (packaged as received, as MediaMTX and OvenMediaEngine serve it)",
                format!("{:.2} s ({:.2} s)", ll.copied.0, ll.copied.1),
                "median ≤ 1.5 s",
            ),
            row(
                "Glass to glass: MediaMTX (LL-HLS, 200 ms parts) / OvenMediaEngine (LL-HLS)",
                "—".into(),
                "",
            )
            .against(
                "not installable here; their docs",
                "about 1–2 s / 2–5 s".into(),
                String::new(),
            ),
        ],
    );
}

/// Glass-to-glass latency, median and p95 in seconds, of each packaging.
struct GlassToGlass {
    cmaf: (f64, f64),
    ts: (f64, f64),
    /// `cmaf` through the `passthrough` ladder: packaged as received, as MediaMTX and
    /// OvenMediaEngine serve LL-HLS (neither transcodes by default).
    copied: (f64, f64),
}

/// Bar code of the publisher's clock (see `glass-to-glass.cjs`, which reads it).
const BITS: usize = 44;
const BLOCK: usize = 24;
const ROWS: usize = 2;

/// Draws `ms` into the top rows of an I420 1280x720 frame: luma 235 for a 1, 16 for a 0,
/// neutral chroma.
fn stamp(frame: &mut [u8], ms: u64) {
    let (w, h) = (1280, 720);
    for row in 0..BLOCK * ROWS {
        for bit in 0..BITS {
            let on = (ms >> (BITS - 1 - bit)) & 1 == 1;
            let start = row * w + bit * BLOCK;
            frame[start..start + BLOCK].fill(if on { 235 } else { 16 });
        }
    }
    for plane in [w * h, w * h + (w / 2) * (h / 2)] {
        for row in 0..BLOCK * ROWS / 2 {
            let start = plane + row * (w / 2);
            frame[start..start + BITS * BLOCK / 2].fill(128);
        }
    }
}

/// A live publisher (GStreamer, RTMP) whose frames carry the wall clock; stops on drop.
struct ClockPublisher(gstreamer::Pipeline);

impl ClockPublisher {
    fn start(url: &str) -> Self {
        use gstreamer::prelude::*;
        gstreamer::init().unwrap();
        let pipeline = gstreamer::parse::launch(&format!(
            "videotestsrc name=v is-live=true pattern=ball ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 bitrate=3000 ! h264parse \
             ! flvmux name=m streamable=true ! rtmp2sink location={url} \
             audiotestsrc is-live=true ! audio/x-raw,rate=48000 ! voaacenc ! aacparse ! m."
        ))
        .unwrap()
        .downcast::<gstreamer::Pipeline>()
        .unwrap();
        let pad = pipeline.by_name("v").unwrap().static_pad("src").unwrap();
        pad.add_probe(gstreamer::PadProbeType::BUFFER, |_, info| {
            if let Some(gstreamer::PadProbeData::Buffer(buffer)) = &mut info.data {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                let mut map = buffer.make_mut().map_writable().unwrap();
                stamp(&mut map, ms);
            }
            gstreamer::PadProbeReturn::Ok
        });
        pipeline.set_state(gstreamer::State::Playing).unwrap();
        Self(pipeline)
    }
}

impl Drop for ClockPublisher {
    fn drop(&mut self) {
        use gstreamer::prelude::*;
        let _ = self.0.set_state(gstreamer::State::Null);
    }
}

fn glass_to_glass(work: &std::path::Path) -> GlassToGlass {
    let (server, base) = spawn_server(work, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body = |packaging: &str, ladder: &str| serde_json::json!({"packaging": packaging, "ladder": ladder, "record": false, "reconnect_window_s": 0, "playback_policy": "public"});
    let (key, _) = rt.block_on(tenant_and_stream(&base, body("ts", "default")));
    // Each run is a new stream: a stream's next broadcast has new playlists, which a player
    // that loaded the last one's would not find at once.
    // `G2G_TRACE_DIR`: each run's hls.js trace (glass-to-glass.cjs), for finding a stall.
    let traces = std::env::var("G2G_TRACE_DIR").ok();
    let mut count = 0;
    let mut measure = |packaging: &str, ladder: &str| {
        count += 1;
        let trace = traces
            .as_ref()
            .map(|dir| format!("{dir}/{count}-{packaging}-{ladder}.jsonl"));
        let stream: serde_json::Value = rt.block_on(async {
            let r = http()
                .post(format!("{base}/v1/live-streams"))
                .bearer_auth(&key)
                .json(&body(packaging, ladder))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.json().await.unwrap()
        });
        let low_latency = packaging == "cmaf";
        let publisher = ClockPublisher::start(&publish_url(&stream));
        let master = format!(
            "{base}/hls/{}/master.m3u8",
            stream["playback_id"].as_str().unwrap()
        );
        let deadline = Instant::now() + Duration::from_secs(40);
        while http_blocking()
            .get(&master)
            .send()
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(Instant::now() < deadline, "no playlist at {master}");
            std::thread::sleep(Duration::from_millis(250));
        }
        let report = node_script(
            "benches/glass-to-glass.cjs",
            &[
                &master,
                "10",
                "30",
                if low_latency { "1" } else { "0" },
                trace.as_deref().unwrap_or(""),
            ],
            Duration::from_secs(180),
        );
        drop(publisher);
        std::thread::sleep(Duration::from_secs(3));
        eprintln!(
            "glass to glass ({}, {ladder} ladder): {} screenshots read ({} ms each), {} unread; hls.js at the end: {} s from its live edge (aiming at {} s), playing {}p; {} stalls, {} jumps to the live edge; errors {}",
            stream["packaging"],
            report["samples"].as_array().map_or(0, Vec::len),
            report["spreadMs"],
            report["unread"],
            report["latencyS"],
            report["targetLatencyS"],
            report["height"],
            report["stalls"],
            report["liveJumps"],
            report["errors"]
        );
        let mut ms: Vec<f64> = report["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .collect();
        assert!(ms.len() >= 50, "too few screenshots read back: {report}");
        ms.iter_mut().for_each(|m| *m /= 1000.0);
        ms
    };
    // Each run: its median; all runs: the median of those, and the p95 of every sample.
    type Runs = (Vec<f64>, Vec<f64>);
    let (mut ts, mut cmaf, mut copied): (Runs, Runs, Runs) = Default::default();
    for run in 1..=RUNS {
        eprintln!("glass-to-glass run {run}/{RUNS}");
        for (packaging, ladder, into) in [
            ("ts", "default", &mut ts),
            ("cmaf", "default", &mut cmaf),
            ("cmaf", "passthrough", &mut copied),
        ] {
            let mut samples = measure(packaging, ladder);
            into.0.push(median(&mut samples));
            into.1.extend(samples);
        }
    }
    kill_child(server, "ferrocast serve");
    let summary = |(mut medians, mut all): (Vec<f64>, Vec<f64>)| {
        all.sort_by(f64::total_cmp);
        eprintln!("run medians {medians:?}");
        (median(&mut medians), all[all.len() * 95 / 100])
    };
    GlassToGlass {
        cmaf: summary(cmaf),
        ts: summary(ts),
        copied: summary(copied),
    }
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
