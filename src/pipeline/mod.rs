//! The only code that names GStreamer. `ladder` builds one pipeline per broadcast (FLV in,
//! decode once, scale and encode each rendition or copy the source, MPEG-TS segments out in
//! memory); this module adapts it to the async broadcast: events arrive on a tokio channel
//! (waiting there when the packager is behind), input waits while the pipeline is full.
//! A ladder with nothing to encode (passthrough only) skips GStreamer: `copy` re-wraps the
//! source into MPEG-TS in Rust (`media::tsmux`) as each tag is pushed, and hands its events straight
//! back to the caller.

pub(crate) mod copy;
pub mod gst;
mod ladder;
pub mod preset;
pub mod vod;
pub mod webrtc;
pub mod whep;

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::media::flv::{self, TagKind};
use crate::media::{Malformed, Part, RenditionOut, Segment, SourceSummary};
use preset::Preset;

/// Initialises GStreamer once per process.
pub fn init() -> anyhow::Result<()> {
    gstreamer::init()?;
    Ok(())
}

#[derive(Debug)]
pub enum PipelineEvent {
    /// The source is known and these renditions will be produced.
    Renditions(Vec<RenditionOut>),
    /// What the pipeline found in the source (for logs).
    Source(SourceSummary),
    Segment(Segment),
    /// A piece of a rendition's open segment (only when parts were asked for); its segment
    /// follows its last part.
    Part(Part),
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

/// Why a pipeline took no more input.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source cannot be copied as it is (the copy engine).
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The GStreamer ladder refused it.
    #[error(transparent)]
    Ladder(#[from] ladder::Error),
    #[error("pipeline input stayed full")]
    InputFull,
    #[error("pipeline is finishing")]
    Finishing,
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
    /// `part`: also hand out parts of about this length (LL-HLS).
    pub fn start(
        preset: &Preset,
        stall_timeout: Duration,
        part: Option<Duration>,
        events: mpsc::Sender<PipelineEvent>,
    ) -> anyhow::Result<Self> {
        let part_ns = part.map(|p| p.as_nanos() as u64);
        if preset.passthrough && preset.renditions.is_empty() {
            let muxing = copy::Muxing::new(preset.segment_duration_s, part_ns);
            return Ok(Self {
                inner: Mutex::new(Some(Engine::Copy(Box::new(muxing)))),
            });
        }
        let renditions = ladder_renditions(preset);
        let mut spec =
            ladder::LadderSpec::new(preset.passthrough, renditions, preset.segment_duration_s);
        spec.stall_timeout = stall_timeout;
        spec.part_ns = part_ns;
        let inner =
            ladder::LivePipeline::start(spec, events).map_err(|e| anyhow::anyhow!("{e}"))?;
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
    ) -> Result<(), PipelineError> {
        let deadline = tokio::time::Instant::now() + PUSH_PATIENCE;
        let mut tag = None;
        loop {
            let result = {
                let mut guard = self.inner.lock().expect("lock");
                match guard.as_mut() {
                    Some(Engine::Copy(m)) => {
                        return Ok(m.push(kind, timestamp_ms, body, events)?);
                    }
                    Some(Engine::Ladder(p)) => p
                        .push(
                            tag.get_or_insert_with(|| flv::tag(kind, timestamp_ms, body))
                                .clone(),
                        )
                        .map_err(|e| match e {
                            ladder::Error::Backpressure { .. } => None,
                            e => Some(e),
                        }),
                    None => return Err(PipelineError::Finishing),
                }
            };
            match result {
                Ok(()) => return Ok(()),
                // Full: wait for room, up to a limit.
                Err(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(None) => return Err(PipelineError::InputFull),
                Err(Some(e)) => return Err(e.into()),
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
