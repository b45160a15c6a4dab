//! `make bench`: WHEP fan-out cost. A release `ferrocast serve` gets one 720p30 RTMP broadcast
//! (ffmpeg, no B-frames; HLS passthrough only, so the ladder does not drown the figures); then
//! 0, 4 and 16 WebRTC viewers (GStreamer `webrtcbin` receivers in this process, media to
//! fakesink, no decoding) watch it over WHEP. The server's CPU with each count gives the CPU
//! one viewer costs, hence viewers per core. Medians of 3 runs of 10 s each. Then
//! glass-to-glass latency: headless Chromium publishes a canvas of its clock over WHIP (H.264)
//! and a second Chromium reads it back from WHEP; three broadcasts, each reported with its
//! median and its number of readings (n), however few, and a broadcast with none says so.
//! Every wait has a deadline and fails saying what it waited for. Its lines go into
//! `benches/results.md`.

mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;

const COUNTS: [usize; 3] = [0, 4, 16];
const SECONDS: u64 = 10;

fn main() {
    gst::init().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (server, base) = spawn_server(work.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (rtmp_url, playback_id) = rt.block_on(setup(&base));
    let total = COUNTS.len() as u64 * 3 * (SECONDS + 8) + 20;
    let ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            &total.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
        ])
        .args([
            "-bf", "0", "-g", "60", "-b:v", "3000k", "-c:a", "aac", "-f", "flv",
        ])
        .arg(&rtmp_url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("ffmpeg (Debian package ffmpeg)");
    std::thread::sleep(Duration::from_secs(6));
    let whep = format!("{base}/whep/{playback_id}");

    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); COUNTS.len()];
    for run in 1..=3 {
        for (i, &n) in COUNTS.iter().enumerate() {
            eprintln!("run {run}/3: {n} viewers");
            let viewers: Vec<Viewer> = (0..n).map(|_| Viewer::connect(&whep)).collect();
            std::thread::sleep(Duration::from_secs(3));
            let before = process_cpu(server.id());
            let t = Instant::now();
            std::thread::sleep(Duration::from_secs(SECONDS));
            let used = (process_cpu(server.id()) - before) / t.elapsed().as_secs_f64();
            let receiving = viewers.iter().filter(|v| v.bytes() > 100_000).count();
            assert_eq!(receiving, n, "every viewer receives media");
            cpu[i].push(used);
            drop(viewers);
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    kill_child(ffmpeg, "the RTMP publisher (ffmpeg)");

    // Glass-to-glass: Chromium publishes a canvas showing its clock over WHIP; a second
    // Chromium watches over WHEP and reads the clock back. Three broadcasts, all reported.
    let mut broadcasts: Vec<Vec<f64>> = Vec::new();
    for run in 1..=3 {
        eprintln!("run {run}/3: glass-to-glass");
        let (whip, whep) = rt.block_on(whip_stream(&base));
        let publisher = std::thread::spawn(move || {
            node_script(
                "tests/browser/whip.cjs",
                &[&whip, "14", "H264", "clock"],
                Duration::from_secs(120),
            )
        });
        std::thread::sleep(Duration::from_secs(4));
        let viewer = node_script(
            "tests/browser/whep.cjs",
            &[&whep, "6"],
            Duration::from_secs(120),
        );
        // node_script's deadline bounds the thread too; a failed publisher fails the run.
        if let Err(panic) = publisher.join() {
            std::panic::resume_unwind(panic);
        }
        let samples: Vec<f64> = viewer["glassToGlassMs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_f64)
            .collect();
        if samples.len() < 10 {
            eprintln!(
                "broadcast {run}: only {} clock readings (busy machine?): {viewer}",
                samples.len()
            );
        }
        broadcasts.push(samples);
    }
    kill_child(server, "ferrocast serve");
    // Each broadcast: its median and n; the line's figure is the median of those medians.
    let mut medians: Vec<f64> = Vec::new();
    let each: Vec<String> = broadcasts
        .iter_mut()
        .map(|s| match s.len() {
            0 => "no reading (n=0)".to_string(),
            n => {
                let m = median(s);
                medians.push(m);
                format!("{m:.0} ms (n={n})")
            }
        })
        .collect();
    let overall = if medians.is_empty() {
        "no reading".to_string()
    } else {
        format!("{:.0} ms", median(&mut medians))
    };
    let med: Vec<f64> = cpu.iter_mut().map(|v| median(v)).collect();
    let per_viewer = (med[2] - med[0]) / COUNTS[2] as f64;
    record(
        "webrtc",
        &[
            row(
                &format!(
                    "WHEP fan-out: server CPU (cores), one 720p30 broadcast, 0 / {} / {} viewers",
                    COUNTS[1], COUNTS[2]
                ),
                format!("{:.3} / {:.3} / {:.3}", med[0], med[1], med[2]),
                "",
            ),
            row(
                &format!(
                    "WHEP glass-to-glass, Chromium WHIP publisher → Chromium WHEP viewer, \
                     loopback: median of the medians of the {} of {} broadcasts with readings \
                     (each broadcast: its median, n = clock readings)",
                    medians.len(),
                    broadcasts.len()
                ),
                format!("{overall} ({})", each.join("; ")),
                "< 500 ms",
            ),
            row(
                "WHEP fan-out: CPU per viewer (cores), viewers per core",
                format!("{per_viewer:.4}, {:.0}", 1.0 / per_viewer.max(1e-6)),
                "",
            ),
        ],
    );
}

/// Another public live stream (same tenant key as the admin makes anew); its WHIP and WHEP URLs.
async fn whip_stream(base: &str) -> (String, String) {
    let (_, stream) = tenant_and_stream(
        base,
        serde_json::json!({"playback_policy": "public", "record": false, "reconnect_window_s": 0}),
    )
    .await;
    (
        format!("{base}/whip/{}", stream["stream_key"].as_str().unwrap()),
        format!("{base}/whep/{}", stream["playback_id"].as_str().unwrap()),
    )
}

/// A tenant, a public live stream; returns its RTMP publish URL and playback id.
async fn setup(base: &str) -> (String, String) {
    let (_, stream) = tenant_and_stream(
        base,
        serde_json::json!({"ladder": "passthrough", "playback_policy": "public", "record": false, "reconnect_window_s": 0}),
    )
    .await;
    (
        publish_url(&stream),
        stream["playback_id"].as_str().unwrap().to_string(),
    )
}

/// A WHEP receiver: webrtcbin, receive-only H.264 + Opus, RTP counted into fakesinks.
struct Viewer {
    pipeline: gst::Pipeline,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Viewer {
    fn connect(url: &str) -> Self {
        let pipeline = gst::Pipeline::new();
        let webrtc = gst::ElementFactory::make("webrtcbin").build().unwrap();
        webrtc.set_property_from_str("bundle-policy", "max-bundle");
        pipeline.add(&webrtc).unwrap();
        let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (pw, counter) = (pipeline.downgrade(), received.clone());
        webrtc.connect_pad_added(move |_, pad| {
            let Some(p) = pw.upgrade() else { return };
            let sink = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .build()
                .unwrap();
            p.add(&sink).unwrap();
            sink.sync_state_with_parent().unwrap();
            let counter = counter.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                    counter.fetch_add(b.size() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            });
            pad.link(&sink.static_pad("sink").unwrap()).unwrap();
        });
        for caps in [
            "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=102,packetization-mode=(string)1,profile-level-id=(string)42e01f",
            "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111",
        ] {
            let caps: gst::Caps = caps.parse().unwrap();
            webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                "add-transceiver",
                &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
            );
        }
        pipeline.set_state(gst::State::Playing).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let promise = gst::Promise::with_change_func(move |reply| {
            let offer = reply
                .ok()
                .flatten()
                .and_then(|r| r.get::<gst_webrtc::WebRTCSessionDescription>("offer").ok());
            let _ = tx.send(offer);
        });
        webrtc.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
        let offer = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("waited 10 s for webrtcbin to create an offer")
            .expect("webrtcbin answered create-offer without an offer");
        webrtc.emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
            != gst_webrtc::WebRTCICEGatheringState::Complete
        {
            assert!(
                Instant::now() < deadline,
                "waited 5 s for webrtcbin's ICE gathering to complete"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let local = webrtc
            .property::<gst_webrtc::WebRTCSessionDescription>("local-description")
            .sdp()
            .as_text()
            .unwrap();
        let resp = http_blocking()
            .post(url)
            .header("Content-Type", "application/sdp")
            .body(local)
            .send()
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert_eq!(resp.status().as_u16(), 201, "WHEP answer");
        let answer = resp.text().unwrap();
        let sdp = gst_sdp::SDPMessage::parse_buffer(answer.as_bytes()).unwrap();
        let answer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, sdp);
        webrtc.emit_by_name::<()>("set-remote-description", &[&answer, &None::<gst::Promise>]);
        Viewer { pipeline, received }
    }

    fn bytes(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
