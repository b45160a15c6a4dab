//! The only code that names GStreamer. `ladder` builds one pipeline per broadcast (FLV in,
//! decode once, scale and encode each rendition or copy the source, MPEG-TS segments out in
//! memory); this module adapts it to the async broadcast: events arrive on a tokio channel
//! (waiting there when the packager is behind), input waits while the pipeline is full.
//! A ladder with nothing to encode (passthrough only) skips GStreamer: `copy` re-wraps the
//! source into MPEG-TS in Rust (`tsmux`) as each tag is pushed, and hands its events straight
//! back to the caller.

mod copy;
mod ladder;
mod pool;
pub mod preset;
mod segmenter;
mod tsmux;
pub mod vod;
pub mod webrtc;
pub mod whep;

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::ingest::flv::{self, TagKind};
pub use pool::SegmentBuf;
use preset::Preset;

/// Name of the rendition that copies the source without re-encoding.
pub const SOURCE_RENDITION: &str = ladder::SOURCE_RENDITION;

/// Initialises GStreamer once per process.
pub fn init() -> anyhow::Result<()> {
    gstreamer::init()?;
    Ok(())
}

/// A rendition as produced for this source.
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionOut {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Target video bitrate of an encoded rendition; `None` for the copied source.
    pub bitrate_kbps: Option<u32>,
    pub frame_rate: Option<f64>,
    /// The source, copied without re-encoding.
    pub passthrough: bool,
}

/// The source as the pipeline sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSummary {
    pub width: u32,
    pub height: u32,
    pub video_codec: String,
    /// `None`: no audio track.
    pub audio_codec: Option<String>,
    /// Frames between keyframes of the encoded renditions.
    pub gop_frames: u32,
}

/// One finished MPEG-TS segment of one rendition, in clear.
#[derive(Debug, Clone)]
pub struct Segment {
    pub rendition: String,
    pub duration_s: f64,
    pub bytes: SegmentBuf,
}

#[derive(Debug)]
pub enum PipelineEvent {
    /// The source is known and these renditions will be produced.
    Renditions(Vec<RenditionOut>),
    /// What the pipeline found in the source (for logs).
    Source(SourceSummary),
    Segment(Segment),
    /// All input was processed after `finish`.
    Finished,
    Failed(String),
}

/// The preset's rungs as the ladder takes them (planned by the short side, never upscaled).
pub(crate) fn ladder_renditions(preset: &Preset) -> Vec<ladder::Rendition> {
    preset
        .renditions
        .iter()
        .map(|r| ladder::Rendition {
            name: r.name.clone(),
            width: r.height * 16 / 9 / 2 * 2,
            height: r.height,
            video_bitrate_kbps: r.video_bitrate_kbps,
            profile: r.profile.clone(),
            x264_preset: preset.x264_preset.clone(),
        })
        .collect()
}

/// How long `push` waits for room before reporting the pipeline as stuck.
const PUSH_PATIENCE: Duration = Duration::from_secs(10);

/// One broadcast's pipeline. Dropping it tears the pipeline down.
pub struct LivePipeline {
    inner: Mutex<Option<Engine>>,
}

enum Engine {
    /// Decode once, encode the ladder (GStreamer).
    Ladder(ladder::LivePipeline),
    /// Passthrough only: the source re-wrapped, nothing decoded, in the caller's task.
    Copy(Box<copy::Muxing>),
}

impl LivePipeline {
    /// Starts a pipeline for `preset`. A GStreamer ladder sends its events to `events`; a
    /// copying one returns them from `push` and `finish`.
    /// `stall_timeout`: no segment for this long while input flows fails the pipeline.
    pub fn start(
        preset: &Preset,
        stall_timeout: Duration,
        events: mpsc::Sender<PipelineEvent>,
    ) -> anyhow::Result<Self> {
        if preset.passthrough && preset.renditions.is_empty() {
            let muxing = copy::Muxing::new(preset.segment_duration_s);
            return Ok(Self {
                inner: Mutex::new(Some(Engine::Copy(Box::new(muxing)))),
            });
        }
        let renditions = ladder_renditions(preset);
        let mut spec =
            ladder::LadderSpec::new(preset.passthrough, renditions, preset.segment_duration_s);
        spec.stall_timeout = stall_timeout;
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel::<ladder::PipelineEvent>(16);
        // Forward on a plain thread: a full tokio channel then holds GStreamer back, which
        // is the backpressure we want, without blocking the async runtime.
        std::thread::Builder::new()
            .name("pipeline-events".into())
            .spawn(move || {
                for event in sync_rx {
                    let mapped = match event {
                        ladder::PipelineEvent::SourceInfo(info) => {
                            let summary = SourceSummary {
                                width: info.width,
                                height: info.height,
                                video_codec: info.video_codec.clone(),
                                audio_codec: info.audio_codec.clone(),
                                gop_frames: info.gop_frames,
                            };
                            if events
                                .blocking_send(PipelineEvent::Source(summary))
                                .is_err()
                            {
                                break;
                            }
                            let fps = info
                                .fps
                                .filter(|(_, d)| *d > 0)
                                .map(|(n, d)| f64::from(n) / f64::from(d));
                            PipelineEvent::Renditions(
                                info.renditions
                                    .iter()
                                    .map(|r| {
                                        let passthrough = r.name == SOURCE_RENDITION;
                                        RenditionOut {
                                            name: r.name.clone(),
                                            width: r.width,
                                            height: r.height,
                                            bitrate_kbps: (!passthrough)
                                                .then_some(r.video_bitrate_kbps),
                                            frame_rate: fps,
                                            passthrough,
                                        }
                                    })
                                    .collect(),
                            )
                        }
                        ladder::PipelineEvent::Segment(s) => PipelineEvent::Segment(Segment {
                            rendition: s.rendition,
                            duration_s: s.duration_s,
                            bytes: s.bytes,
                        }),
                        ladder::PipelineEvent::Eos => PipelineEvent::Finished,
                        ladder::PipelineEvent::Error(e) => PipelineEvent::Failed(e),
                    };
                    if events.blocking_send(mapped).is_err() {
                        break;
                    }
                }
            })?;
        let inner =
            ladder::LivePipeline::start(spec, sync_tx).map_err(|e| anyhow::anyhow!("{e}"))?;
        // flvdemux reads a byte stream: the header first, then one FLV tag per push.
        inner
            .push(flv::header())
            .map_err(|e| anyhow::anyhow!("pipeline refused input: {e}"))?;
        Ok(Self {
            inner: Mutex::new(Some(Engine::Ladder(inner))),
        })
    }

    /// Feeds one tag. A copying pipeline muxes it now and appends the events it completes to
    /// `events`; the GStreamer ladder queues it, waiting (up to a limit) while its input is
    /// full, and reports on its channel.
    pub async fn push(
        &self,
        kind: TagKind,
        timestamp_ms: u32,
        body: &Bytes,
        events: &mut Vec<PipelineEvent>,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + PUSH_PATIENCE;
        let mut tag = None;
        loop {
            let result = {
                let mut guard = self.inner.lock().expect("lock");
                match guard.as_mut() {
                    Some(Engine::Copy(m)) => return m.push(kind, timestamp_ms, body, events),
                    Some(Engine::Ladder(p)) => p
                        .push(
                            tag.get_or_insert_with(|| flv::tag(kind, timestamp_ms, body))
                                .clone(),
                        )
                        .map_err(|e| match e {
                            ladder::Error::Backpressure { .. } => None,
                            e => Some(e.to_string()),
                        }),
                    None => return Err("pipeline is finishing".into()),
                }
            };
            match result {
                Ok(()) => return Ok(()),
                // Full: wait for room, up to a limit.
                Err(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(None) => return Err("pipeline input stayed full".into()),
                Err(Some(e)) => return Err(e),
            }
        }
    }

    /// Signals end of input. A copying pipeline appends its last segment and `Finished` to
    /// `events`; the ladder sends `Finished` (or `Failed`) on its channel once it has flushed.
    pub fn finish(&self, events: &mut Vec<PipelineEvent>) {
        match self.inner.lock().expect("lock").take() {
            Some(Engine::Ladder(p)) => {
                // Waiting for EOS blocks; do it off the async runtime.
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = p.finish_with_timeout(Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "pipeline did not finish cleanly");
                    }
                });
            }
            Some(Engine::Copy(mut m)) => {
                m.finish(events);
                events.push(PipelineEvent::Finished);
            }
            None => {}
        }
    }
}

impl Drop for LivePipeline {
    fn drop(&mut self) {
        if let Some(Engine::Ladder(p)) = self.inner.lock().expect("lock").take() {
            // Tearing down joins GStreamer threads; keep that off the async runtime.
            tokio::task::spawn_blocking(move || drop(p));
        }
    }
}
