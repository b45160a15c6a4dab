//! One HLS output, shared by live broadcasts and VOD transcodes: each segment is encrypted
//! with the current content key, written with its media playlist, and the master playlist
//! follows once every rendition's codecs are known.

use std::collections::{BTreeMap, HashSet, VecDeque};

use bytes::Bytes;

use super::crypto::{Key128, encrypt_segment, iv_for_sequence};
use super::playlist::{KeyRef, MediaPlaylist, PlaylistKind, SegmentEntry, Variant, render_master};
use super::uploader::Uploader;
use crate::drm::ContentKeys;
use crate::media::codec::avc_codec_from_annexb;
use crate::media::{RenditionOut, Segment};
use crate::storage::ObjectKey;

/// One rendition's output state.
struct Output {
    info: RenditionOut,
    playlist: MediaPlaylist,
    codecs: Option<String>,
    bitrate_bps: Option<u64>,
    /// Segments out of the live window, kept a while for players still fetching them.
    stale: VecDeque<SegmentEntry>,
    total_s: f64,
}

/// One HLS output (a broadcast or an asset): encryption keys, playlists, and what goes to
/// storage through an [`Uploader`].
pub struct HlsOutput {
    tenant_id: String,
    prefix: String,
    public_url: String,
    /// Live window in segments; `None` keeps every segment (recordings, VOD).
    window: Option<usize>,
    rotation: u64,
    target_duration: u32,
    content_keys: crate::drm::ContentKeys,
    outputs: BTreeMap<String, Output>,
    /// Content keys by rotation period.
    keys: BTreeMap<u64, (String, Key128)>,
    discontinuity: HashSet<String>,
    master_written: bool,
    /// RFC 6381 codecs of the source, for renditions whose segments do not tell.
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
}

/// Where and how an [`HlsOutput`] writes.
pub struct OutputParams {
    pub tenant_id: String,
    /// Storage prefix, ending in `/`.
    pub prefix: String,
    /// Base URL of key URIs (`BASE/keys/ID`).
    pub public_url: String,
    pub window: Option<usize>,
    /// New content key every this many segments; 0: one key.
    pub rotation: u64,
    pub target_duration: u32,
    pub content_keys: ContentKeys,
}

impl HlsOutput {
    pub fn new(p: OutputParams) -> Self {
        Self {
            tenant_id: p.tenant_id,
            prefix: p.prefix,
            public_url: p.public_url,
            window: p.window,
            rotation: p.rotation,
            target_duration: p.target_duration,
            content_keys: p.content_keys,
            outputs: BTreeMap::new(),
            keys: BTreeMap::new(),
            discontinuity: HashSet::new(),
            master_written: false,
            video_codec: None,
            audio_codec: None,
        }
    }

    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey::parse(&format!("{}{name}", self.prefix)).expect("prefix and names are validated")
    }

    /// The renditions of a (new) publish; existing playlists continue after a discontinuity.
    pub fn set_renditions(&mut self, list: Vec<RenditionOut>) {
        for info in list {
            match self.outputs.get_mut(&info.name) {
                Some(out) => out.info = info,
                None => {
                    let window = self.window;
                    self.outputs.insert(
                        info.name.clone(),
                        Output {
                            playlist: MediaPlaylist::new(self.target_duration, window),
                            info,
                            codecs: None,
                            bitrate_bps: None,
                            stale: VecDeque::new(),
                            total_s: 0.0,
                        },
                    );
                }
            }
        }
        self.master_written = false;
    }

    /// After a reconnect every rendition's next segment starts a discontinuity.
    pub fn reopen(&mut self) {
        self.discontinuity = self.outputs.keys().cloned().collect();
    }

    async fn content_key(&mut self, sequence: u64) -> Result<(String, Key128), String> {
        let period = sequence.checked_div(self.rotation).unwrap_or(0);
        if let Some(k) = self.keys.get(&period) {
            return Ok(k.clone());
        }
        let created = self
            .content_keys
            .create(&self.tenant_id, &self.prefix)
            .await
            .map_err(|e| format!("could not create a content key: {e}"))?;
        self.keys.insert(period, created.clone());
        // Renditions move in step; keys two periods back are no longer asked for.
        while self.keys.len() > 3 {
            let first = *self.keys.keys().next().expect("non-empty");
            self.keys.remove(&first);
        }
        Ok(created)
    }

    pub async fn add_segment(
        &mut self,
        segment: Segment,
        uploader: &Uploader,
    ) -> Result<(), String> {
        let Some(sequence) = self
            .outputs
            .get(&segment.rendition)
            .map(|o| o.playlist.next_sequence())
        else {
            tracing::warn!(rendition = %segment.rendition, "segment for an unknown rendition");
            return Ok(());
        };
        let (key_id, key) = self.content_key(sequence).await?;
        let iv = iv_for_sequence(sequence);
        // What the playlists say of the rendition is read from the first segment in clear.
        let plain_len = segment.bytes.len();
        let sniffed_video = self
            .outputs
            .get(&segment.rendition)
            .filter(|o| o.codecs.is_none())
            .and_then(|_| avc_codec_from_annexb(&segment.bytes));
        // The segment's own buffer is encrypted in place, and shared with the upload as it is.
        let mut bytes = segment.bytes;
        encrypt_segment(&key, &iv, bytes.vec_mut());
        let encrypted = bytes.into_bytes();
        let name = segment.rendition.clone();
        uploader
            .put(
                self.key(&format!("{name}/{sequence}.ts")),
                encrypted,
                "video/mp2t",
            )
            .await;

        let discontinuity = self.discontinuity.remove(&name);
        let entry = SegmentEntry {
            sequence,
            uri: format!("{sequence}.ts"),
            duration: segment.duration_s,
            key: Some(KeyRef {
                uri: format!("{}/keys/{key_id}", self.public_url),
                iv,
            }),
            discontinuity,
        };
        let (video_codec, audio_codec) = (self.video_codec.clone(), self.audio_codec.clone());
        let out = self.outputs.get_mut(&name).expect("checked above");
        if out.codecs.is_none() {
            let video = sniffed_video.or(video_codec);
            out.codecs = Some(
                [video, audio_codec]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        if out.bitrate_bps.is_none() && segment.duration_s > 0.5 {
            out.bitrate_bps = Some((plain_len as f64 * 8.0 / segment.duration_s) as u64);
        }
        out.total_s += segment.duration_s;
        let evicted = out.playlist.push(entry);
        let playlist = out.playlist.render(PlaylistKind::Live);
        out.stale.extend(evicted);
        let mut expired = Vec::new();
        while out.stale.len() > self.window.unwrap_or(usize::MAX) {
            expired.push(out.stale.pop_front().expect("non-empty"));
        }
        uploader
            .put(
                self.key(&format!("{name}/index.m3u8")),
                Bytes::from(playlist),
                "application/vnd.apple.mpegurl",
            )
            .await;
        for old in expired {
            uploader
                .delete(self.key(&format!("{name}/{}", old.uri)))
                .await;
        }
        if !self.master_written && self.outputs.values().all(|o| o.codecs.is_some()) {
            self.write_master(uploader).await;
        }
        Ok(())
    }

    async fn write_master(&mut self, uploader: &Uploader) {
        let variants: Vec<Variant> = self
            .outputs
            .values()
            .map(|o| {
                let measured = o
                    .bitrate_bps
                    .unwrap_or(u64::from(o.info.bitrate_kbps.unwrap_or(1000)) * 1000);
                Variant {
                    uri: format!("{}/index.m3u8", o.info.name),
                    bandwidth: measured * 5 / 4,
                    average_bandwidth: Some(measured),
                    width: o.info.width,
                    height: o.info.height,
                    frame_rate: o.info.frame_rate,
                    codecs: o.codecs.clone().unwrap_or_default(),
                }
            })
            .collect();
        uploader
            .put(
                self.key("master.m3u8"),
                Bytes::from(render_master(&variants)),
                "application/vnd.apple.mpegurl",
            )
            .await;
        self.master_written = true;
    }

    /// The publisher stopped: every playlist gets EXT-X-ENDLIST.
    pub async fn end(&mut self, uploader: &Uploader) {
        if !self.master_written && self.outputs.values().any(|o| o.codecs.is_some()) {
            self.outputs.retain(|_, o| o.codecs.is_some());
            self.write_master(uploader).await;
        }
        for (name, out) in &mut self.outputs {
            out.playlist.end();
            let text = out.playlist.render(PlaylistKind::Live);
            let key =
                ObjectKey::parse(&format!("{}{name}/index.m3u8", self.prefix)).expect("valid");
            uploader
                .put(key, Bytes::from(text), "application/vnd.apple.mpegurl")
                .await;
        }
    }

    /// Whether any segment was written.
    pub fn has_media(&self) -> bool {
        self.outputs
            .values()
            .any(|o| o.playlist.segments().next().is_some())
    }

    /// Media duration: the longest rendition's.
    pub fn duration_ms(&self) -> Option<i64> {
        self.outputs
            .values()
            .map(|o| (o.total_s * 1000.0) as i64)
            .max()
    }

    /// Rewrites every media playlist as a finished VOD playlist.
    pub async fn write_vod_playlists(&mut self, uploader: &Uploader) {
        if !self.master_written && self.has_media() {
            self.outputs.retain(|_, o| o.codecs.is_some());
            self.write_master(uploader).await;
        }
        for (name, out) in &self.outputs {
            let text = out.playlist.render(PlaylistKind::Vod);
            let key =
                ObjectKey::parse(&format!("{}{name}/index.m3u8", self.prefix)).expect("valid");
            uploader
                .put(key, Bytes::from(text), "application/vnd.apple.mpegurl")
                .await;
        }
    }
}
