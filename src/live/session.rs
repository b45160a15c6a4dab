//! One broadcast of one live stream, from the first publish to its recording (or clean-up).

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{IngestMessage, LiveDeps, LiveHub};
use crate::db::{AssetStatus, LiveStream};
use crate::media::RenditionOut;
use crate::media::codec::{aac_codec_from_config, avc_codec_from_config};
use crate::media::flv::{self, AudioTag, TagKind, VideoTag};
use crate::packager::output::{HlsOutput, OutputParams};
use crate::packager::uploader::Uploader;
use crate::pipeline::preset::Preset;
use crate::pipeline::{LivePipeline, PipelineEvent};
use crate::storage::Prefix;

type PublisherChannel = (mpsc::Receiver<IngestMessage>, watch::Sender<Option<String>>);

/// How one publish (one publisher connection) ended.
enum Outcome {
    /// The publisher stopped; the broadcast may continue if it comes back.
    Left,
    /// Something failed; the publisher is disconnected, the broadcast may continue.
    Failed(String),
    /// The stream was deleted or its key reset: the broadcast ends now.
    Cancelled,
}

/// Seconds to wait for the pipeline to flush its last segments after the publisher stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    deps: LiveDeps,
    stream: LiveStream,
    tap: std::sync::Arc<super::Tap>,
    prefix: String,
    first: PublisherChannel,
    mut reconnect: mpsc::Receiver<PublisherChannel>,
    mut cancel: watch::Receiver<Option<String>>,
    hub: LiveHub,
) {
    let preset = match deps.presets.get(&stream.ladder) {
        Some(p) => p.clone(),
        None => {
            tracing::warn!(ladder = %stream.ladder, "ladder preset no longer exists; using default");
            deps.presets
                .get("default")
                .expect("default preset is embedded")
                .clone()
        }
    };
    let uploader = Uploader::spawn(
        deps.store.clone(),
        deps.config.upload_queue_segments,
        stream.id.clone(),
    );
    let mut packager = HlsOutput::new(OutputParams {
        tenant_id: stream.tenant_id.clone(),
        prefix: prefix.clone(),
        public_url: deps.public_url.clone(),
        window: (!stream.record).then_some(deps.config.window_segments),
        rotation: deps.config.key_rotation_segments,
        target_duration: preset.segment_duration_s,
        content_keys: deps.content_keys.clone(),
        program_date_time: true,
        packaging: stream.packaging,
        cenc_scheme: stream.cenc_scheme,
        low_latency: Some(deps.low_latency.clone()),
        key_provider: deps.key_provider.clone(),
    });
    tracing::info!(%prefix, "broadcast started");

    let mut next = Some(first);
    while let Some((media, stop)) = next.take() {
        let outcome = publish_once(
            &deps,
            &preset,
            &mut packager,
            &uploader,
            media,
            &stop,
            &mut cancel,
            &stream.id,
            &tap,
        )
        .await;
        packager.end(&uploader).await;
        uploader.flush().await;
        let error = match &outcome {
            Outcome::Failed(reason) => {
                tracing::error!(%reason, "broadcast interrupted");
                Some(reason.as_str())
            }
            Outcome::Left | Outcome::Cancelled => None,
        };
        if let Err(e) = deps.db.set_live_idle(&stream.id, error).await {
            tracing::error!(error = %e, "recording the end of a publish");
        }
        hub.publisher_gone(&stream.id);
        if matches!(outcome, Outcome::Cancelled) {
            break;
        }
        let window = Duration::from_secs(stream.reconnect_window_s.max(0) as u64);
        tokio::select! {
            back = reconnect.recv() => {
                if let Some(channel) = back {
                    match deps.db.try_activate_live_stream(&stream.id, &prefix).await {
                        Ok(true) => {
                            packager.reopen();
                            next = Some(channel);
                        }
                        Ok(false) | Err(_) => {
                            let _ = channel.1.send(Some("could not resume the broadcast".into()));
                        }
                    }
                }
            }
            _ = tokio::time::sleep(window) => {}
            _ = cancel.changed() => {}
        }
    }
    deps.taps.lock().unwrap().remove(&stream.id);
    if let Err(e) = deps.db.end_broadcast(&stream.id).await {
        tracing::error!(error = %e, "recording the end of the broadcast");
    }
    // Its WHEP fan-out (if viewers came) stops with it: pipelines block while they stop.
    tokio::task::spawn_blocking(move || drop(tap));
    finalize(&deps, &stream, &prefix, &mut packager, &uploader).await;
    uploader.flush().await;
    tracing::info!("broadcast finished");
}

#[allow(clippy::too_many_arguments)]
async fn publish_once(
    deps: &LiveDeps,
    preset: &Preset,
    packager: &mut HlsOutput,
    uploader: &Uploader,
    mut media: mpsc::Receiver<IngestMessage>,
    stop: &watch::Sender<Option<String>>,
    cancel: &mut watch::Receiver<Option<String>>,
    stream_id: &str,
    tap: &super::Tap,
) -> Outcome {
    let (events_tx, mut events) = mpsc::channel::<PipelineEvent>(64);
    // Events a copying pipeline returns from `push`/`finish`, handled before the next tag.
    let mut inline = Vec::new();
    let mut pipeline: Option<LivePipeline> = None;
    let stall = Duration::from_secs(deps.config.stall_timeout_s.max(1));
    let mut state = PublishState {
        ingest: IngestInfo::default(),
        stall,
        deadline: Instant::now() + stall,
        draining: false,
    };

    // Both kept across the loop's turns: making them anew for every tag would register a
    // waiter with the watch and a timer with the runtime, and take them out again, per tag.
    let cancelled = async {
        let _ = cancel.changed().await;
        cancel.borrow().clone()
    };
    tokio::pin!(cancelled);
    let timeout = tokio::time::sleep_until(state.deadline);
    tokio::pin!(timeout);
    let outcome = loop {
        if timeout.deadline() != state.deadline {
            timeout.as_mut().reset(state.deadline);
        }
        tokio::select! {
            message = media.recv(), if !state.draining => {
                let Some(message) = message else {
                    // The publisher stopped: flush what the pipeline holds.
                    match &pipeline {
                        Some(p) => {
                            p.finish(&mut inline);
                            state.draining = true;
                            state.deadline = Instant::now() + DRAIN_TIMEOUT;
                            if let Some(outcome) = state.on_events(&mut inline, deps, packager, uploader, stream_id).await {
                                break outcome;
                            }
                            continue;
                        }
                        None => break Outcome::Left,
                    }
                };
                let (kind, timestamp_ms, body) = match message {
                    IngestMessage::Raw(frame) => {
                        tap.feed_raw(&frame);
                        continue;
                    }
                    IngestMessage::Metadata(fields) => {
                        state.ingest.metadata(&fields);
                        state.ingest.save(deps, stream_id).await;
                        continue;
                    }
                    IngestMessage::Video { timestamp_ms, body } => {
                        match flv::video_tag(&body) {
                            VideoTag::Unsupported(id) => break Outcome::Failed(format!(
                                "unsupported video codec {}: send H.264", flv::video_codec_name(id)
                            )),
                            VideoTag::AvcSequenceHeader(record) => {
                                packager.set_video_codec(avc_codec_from_config(record));
                                state.ingest.video_codec = Some("H.264".into());
                            }
                            VideoTag::AvcFrame { keyframe: true } => {
                                tracing::debug!(timestamp_ms, "keyframe received");
                            }
                            _ => {}
                        }
                        (TagKind::Video, timestamp_ms, body)
                    }
                    IngestMessage::Audio { timestamp_ms, body } => {
                        match flv::audio_tag(&body) {
                            AudioTag::Unsupported(id) => break Outcome::Failed(format!(
                                "unsupported audio codec {}: send AAC", flv::audio_codec_name(id)
                            )),
                            AudioTag::Mp3Frame => break Outcome::Failed(
                                "unsupported audio codec MP3: send AAC".into()
                            ),
                            AudioTag::AacSequenceHeader(asc) => {
                                packager.set_audio_codec(aac_codec_from_config(asc));
                                state.ingest.audio_codec = Some("AAC".into());
                            }
                            _ => {}
                        }
                        (TagKind::Audio, timestamp_ms, body)
                    }
                };
                tap.feed(kind, timestamp_ms, &body);
                if pipeline.is_none() {
                    match LivePipeline::start(preset, state.stall, packager.part_duration(), events_tx.clone()) {
                        Ok(p) => {
                            pipeline = Some(p);
                            state.deadline = Instant::now() + state.stall;
                        }
                        Err(e) => break Outcome::Failed(format!("could not start the pipeline: {e:#}")),
                    }
                }
                let p = pipeline.as_ref().expect("started above");
                if let Err(e) = p.push(kind, timestamp_ms, &body, &mut inline).await {
                    break Outcome::Failed(format!("pipeline refused input: {e}"));
                }
                if let Some(outcome) = state.on_events(&mut inline, deps, packager, uploader, stream_id).await {
                    break outcome;
                }
            }
            event = events.recv() => {
                if let Some(outcome) = state.on_event(event, deps, packager, uploader, stream_id).await {
                    break outcome;
                }
            }
            reason = &mut cancelled => {
                let reason = reason.unwrap_or_else(|| "broadcast cancelled".into());
                let _ = stop.send(Some(reason));
                break Outcome::Cancelled;
            }
            () = &mut timeout, if pipeline.is_some() => {
                break Outcome::Failed(if state.draining {
                    format!("pipeline did not finish within {}s after the publisher stopped", DRAIN_TIMEOUT.as_secs())
                } else {
                    format!("pipeline stalled: no segment for {}s", state.stall.as_secs())
                });
            }
        }
    };
    // The publisher learns why before its media channel closes (when `media` drops).
    if let Outcome::Failed(reason) = &outcome {
        let _ = stop.send(Some(reason.clone()));
    }
    if let Some(p) = pipeline.take() {
        // Segments the pipeline finished while stopping still count.
        drop(p);
        while let Ok(event) = events.try_recv() {
            match event {
                PipelineEvent::Part(part) => {
                    let _ = packager.add_part(part, uploader).await;
                }
                PipelineEvent::Segment(segment) => {
                    let _ = packager.add_segment(segment, uploader).await;
                }
                _ => {}
            }
        }
    }
    tracing::info!("publish ended");
    outcome
}

/// What one publish tracks between events.
struct PublishState {
    ingest: IngestInfo,
    /// No segment for this long while input flows fails the pipeline.
    stall: Duration,
    /// When the stall (or, while draining, the drain) timeout fires.
    deadline: Instant,
    /// The publisher stopped; the pipeline is flushing its last segments.
    draining: bool,
}

impl PublishState {
    /// Acts on the events a copying pipeline returned, in order, until one ends the publish.
    async fn on_events(
        &mut self,
        events: &mut Vec<PipelineEvent>,
        deps: &LiveDeps,
        packager: &mut HlsOutput,
        uploader: &Uploader,
        stream_id: &str,
    ) -> Option<Outcome> {
        for event in events.drain(..) {
            if let Some(outcome) = self
                .on_event(Some(event), deps, packager, uploader, stream_id)
                .await
            {
                return Some(outcome);
            }
        }
        None
    }

    /// Acts on one pipeline event (`None`: the pipeline's channel closed); `Some` ends the
    /// publish with that outcome.
    async fn on_event(
        &mut self,
        event: Option<PipelineEvent>,
        deps: &LiveDeps,
        packager: &mut HlsOutput,
        uploader: &Uploader,
        stream_id: &str,
    ) -> Option<Outcome> {
        match event {
            Some(PipelineEvent::Source(source)) => {
                tracing::info!(width = source.width, height = source.height, video = %source.video_codec,
                    audio = ?source.audio_codec, gop_frames = source.gop_frames, "pipeline found the source");
            }
            Some(PipelineEvent::Renditions(list)) => {
                self.ingest.renditions(&list);
                self.ingest.save(deps, stream_id).await;
                packager.set_renditions(list);
            }
            Some(PipelineEvent::Segment(segment)) => {
                if let Err(e) = packager.add_segment(segment, uploader).await {
                    return Some(Outcome::Failed(e.to_string()));
                }
                if !self.draining {
                    self.deadline = Instant::now() + self.stall;
                }
            }
            Some(PipelineEvent::Part(part)) => {
                if let Err(e) = packager.add_part(part, uploader).await {
                    return Some(Outcome::Failed(e.to_string()));
                }
            }
            Some(PipelineEvent::Finished) => return Some(Outcome::Left),
            Some(PipelineEvent::Failed(reason)) => {
                return Some(Outcome::Failed(format!("pipeline error: {reason}")));
            }
            None => return Some(Outcome::Failed("pipeline stopped unexpectedly".into())),
        }
        None
    }
}

/// What the publisher sends, for `GET /v1/live-streams/{id}`.
#[derive(Debug, Default)]
struct IngestInfo {
    video_codec: Option<String>,
    audio_codec: Option<String>,
    fields: serde_json::Map<String, serde_json::Value>,
    renditions: Vec<serde_json::Value>,
    /// What was last written, so repeated identical metadata costs no write.
    saved: String,
}

impl IngestInfo {
    fn metadata(&mut self, m: &serde_json::Map<String, serde_json::Value>) {
        for (from, to) in [
            ("width", "width"),
            ("height", "height"),
            ("framerate", "fps"),
            ("videodatarate", "video_bitrate_kbps"),
            ("audiodatarate", "audio_bitrate_kbps"),
            ("encoder", "encoder"),
        ] {
            if let Some(v) = m.get(from) {
                self.fields.insert(to.into(), v.clone());
            }
        }
    }

    fn renditions(&mut self, list: &[RenditionOut]) {
        self.renditions = list
            .iter()
            .map(|r| serde_json::json!({"name": r.name, "width": r.width, "height": r.height}))
            .collect();
        if let Some(source) = list.iter().find(|r| r.passthrough).or(list.first()) {
            self.fields.entry("width").or_insert(source.width.into());
            self.fields.entry("height").or_insert(source.height.into());
            if let Some(fps) = source.frame_rate {
                self.fields.entry("fps").or_insert(fps.into());
            }
        }
    }

    async fn save(&mut self, deps: &LiveDeps, stream_id: &str) {
        let mut json = self.fields.clone();
        json.insert("video_codec".into(), self.video_codec.clone().into());
        json.insert("audio_codec".into(), self.audio_codec.clone().into());
        json.insert("renditions".into(), self.renditions.clone().into());
        let text = serde_json::Value::Object(json).to_string();
        if text == self.saved {
            return;
        }
        self.saved = text.clone();
        if let Err(e) = deps.db.set_live_ingest(stream_id, &text).await {
            tracing::warn!(error = %e, "could not record ingest info");
        }
    }
}

/// The broadcast is over: keep it as a VOD asset, or schedule the deletion of everything it
/// stored once viewers have had `live.ended_retention_s` to play to its end.
async fn finalize(
    deps: &LiveDeps,
    stream: &LiveStream,
    prefix: &str,
    output: &mut HlsOutput,
    uploader: &Uploader,
) {
    if stream.record && output.has_media() {
        output.write_vod_playlists(uploader).await;
        uploader.flush().await;
        let playback_id = crate::ids::new_playback_id();
        let created = deps
            .db
            .create_asset(
                &stream.tenant_id,
                Some(&stream.id),
                &playback_id,
                stream.playback_policy,
                AssetStatus::Preparing,
                Some(prefix),
            )
            .await;
        match created {
            Ok(asset) => {
                if let Err(e) = deps.db.copy_rules_to_recording(&stream.id, &asset.id).await {
                    tracing::error!(error = %e, "giving the recording its broadcast's rules");
                }
                let duration_ms = output.duration_ms();
                if let Err(e) = deps
                    .db
                    .finish_asset(&asset.id, AssetStatus::Ready, duration_ms, None)
                    .await
                {
                    tracing::error!(error = %e, "marking the recording ready");
                }
                tracing::info!(asset = %asset.id, duration_ms, "recording kept as an asset");
            }
            Err(e) => tracing::error!(error = %e, "creating the recording asset"),
        }
    } else {
        // Viewers behind the live edge still play to the ENDLIST: the objects and keys are
        // deleted after the retention period, by `cleanup::run`.
        let delete_after = crate::clock::now_ms()
            + i64::try_from(deps.config.ended_retention_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        match deps
            .db
            .schedule_live_cleanup(prefix, &stream.tenant_id, &stream.id, delete_after)
            .await
        {
            Ok(()) => deps.cleanup_wakeup.notify_one(),
            Err(e) => {
                // Better gone now than kept forever with nobody to delete it.
                tracing::error!(error = %e, "scheduling the broadcast's clean-up; deleting it now");
                uploader
                    .delete_prefix(Prefix::parse(prefix).expect("valid prefix"))
                    .await;
                uploader.flush().await;
                if let Err(e) = deps.db.delete_content_keys(prefix).await {
                    tracing::error!(error = %e, "deleting the broadcast's content keys");
                }
            }
        }
    }
}
