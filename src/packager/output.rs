//! One HLS output, shared by live broadcasts and VOD transcodes: the async shell around the
//! pure [`HlsState`]. It creates each content key the state asks for (stored wrapped by
//! `drm`), and hands the state's storage operations to the bounded [`Uploader`] in order.

use super::hls::{HlsState, Op};
use super::uploader::Uploader;
use crate::drm::ContentKeys;
use crate::media::{RenditionOut, Segment};
use crate::storage::ObjectKey;

/// Why a segment could not be packaged.
#[derive(Debug, thiserror::Error)]
pub enum PackagerError {
    #[error("could not create a content key: {0}")]
    ContentKey(#[source] crate::db::DbError),
}

/// One HLS output (a broadcast or an asset).
pub struct HlsOutput {
    tenant_id: String,
    prefix: String,
    content_keys: ContentKeys,
    state: HlsState,
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
    /// Live: every segment carries `EXT-X-PROGRAM-DATE-TIME` from the wall clock.
    pub program_date_time: bool,
}

impl HlsOutput {
    pub fn new(p: OutputParams) -> Self {
        let mut state = HlsState::new(p.public_url, p.window, p.rotation, p.target_duration);
        if p.program_date_time {
            state.stamp_program_date_time(crate::clock::now_ms);
        }
        Self {
            tenant_id: p.tenant_id,
            prefix: p.prefix,
            content_keys: p.content_keys,
            state,
        }
    }

    /// RFC 6381 codecs of the source's video, for renditions whose segments do not tell.
    pub fn set_video_codec(&mut self, codec: Option<String>) {
        self.state.video_codec = codec;
    }

    /// RFC 6381 codecs of the source's audio.
    pub fn set_audio_codec(&mut self, codec: Option<String>) {
        self.state.audio_codec = codec;
    }

    /// The renditions of a (new) publish; existing playlists continue after a discontinuity.
    pub fn set_renditions(&mut self, list: Vec<RenditionOut>) {
        self.state.set_renditions(list);
    }

    /// After a reconnect every rendition's next segment starts a discontinuity.
    pub fn reopen(&mut self) {
        self.state.reopen();
    }

    pub async fn add_segment(
        &mut self,
        segment: Segment,
        uploader: &Uploader,
    ) -> Result<(), PackagerError> {
        if let Some(period) = self.state.key_needed(&segment.rendition) {
            let (id, key) = self
                .content_keys
                .create(&self.tenant_id, &self.prefix)
                .await
                .map_err(PackagerError::ContentKey)?;
            self.state.add_key(period, id, key);
        }
        let rendition = segment.rendition.clone();
        match self.state.add_segment(segment) {
            Some(ops) => self.apply(ops, uploader).await,
            None => tracing::warn!(%rendition, "segment for an unknown rendition"),
        }
        Ok(())
    }

    /// The publisher stopped: every playlist gets EXT-X-ENDLIST.
    pub async fn end(&mut self, uploader: &Uploader) {
        let ops = self.state.end();
        self.apply(ops, uploader).await;
    }

    /// Rewrites every media playlist as a finished VOD playlist.
    pub async fn write_vod_playlists(&mut self, uploader: &Uploader) {
        let ops = self.state.vod_playlists();
        self.apply(ops, uploader).await;
    }

    /// Whether any segment was written.
    pub fn has_media(&self) -> bool {
        self.state.has_media()
    }

    /// Media duration: the longest rendition's.
    pub fn duration_ms(&self) -> Option<i64> {
        self.state.duration_ms()
    }

    async fn apply(&self, ops: Vec<Op>, uploader: &Uploader) {
        let key = |name: &str| {
            ObjectKey::parse(&format!("{}{name}", self.prefix))
                .expect("prefix and names are validated")
        };
        for op in ops {
            match op {
                Op::Put {
                    name,
                    body,
                    content_type,
                } => uploader.put(key(&name), body, content_type).await,
                Op::Delete { name } => uploader.delete(key(&name)).await,
            }
        }
    }
}
